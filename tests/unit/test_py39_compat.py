"""The Glue reconcile job runs Python 3.9 with no polars: prove both on every test run."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from handlers.reconcile_job import SHIPPED_MODULES, job_arguments

ROOT = Path(__file__).resolve().parents[2]
VERMIN = [sys.executable, "-c", "import sys; from vermin import main; sys.exit(main())"]

# Import the job with polars (and the other heavy data libraries) unimportable, then list every
# project module that got loaded: that is what the Glue job needs and must run on 3.9.
PROBE = """
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("polars", "pyarrow", "pandas", "python_calamine", "numpy"):
            raise ImportError("blocked for the Glue test: " + name)
        return None

sys.meta_path.insert(0, Block())
import handlers.reconcile_job
import core.ops.reconcile
loaded = sorted(
    m.__file__ for m in list(sys.modules.values())
    if getattr(m, "__file__", None)
    and (m.__name__ == "core" or m.__name__.startswith(("core.", "handlers.")))
)
print(json.dumps(loaded))
"""


@functools.cache  # one probe process serves every test here
def _closure() -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [str(Path(p).resolve().relative_to(ROOT)) for p in json.loads(done.stdout)]


def test_reconcile_job_imports_without_polars() -> None:
    loaded = _closure()
    assert "core/ops/reconcile.py" in loaded
    assert not any("polars" in p for p in loaded)


def test_shipped_module_list_is_exactly_what_the_job_imports() -> None:
    loaded = set(_closure()) - {"handlers/__init__.py", "handlers/reconcile_job.py"}
    assert loaded == set(SHIPPED_MODULES)


def test_every_module_the_job_imports_is_python_39_syntax() -> None:
    files = sorted(set(_closure()))
    done = subprocess.run(
        [*VERMIN, "-t=3.9-", "--no-tips", "--violations", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_vermin_catches_a_310_construct(tmp_path: Path) -> None:
    # The check above must be able to fail: a match statement needs 3.10.
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x):\n    match x:\n        case 1:\n            return 1\n")
    done = subprocess.run(
        [*VERMIN, "-t=3.9-", "--no-tips", "--violations", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0


def test_job_arguments_from_plain_argv() -> None:
    args = job_arguments(
        [
            "script.py",
            "--bucket",
            "b",
            "--files_table=f",
            "--orders_table",
            "o",
            "--ingest_queue_url",
            "q",
            "--JOB_ID",
            "j_1",
            "--window_minutes",
            "30",
            "--dry_run",
            "true",
        ]
    )
    assert args["bucket"] == "b"
    assert args["files_table"] == "f"
    assert args["window_minutes"] == "30"
    assert args["grace_minutes"] == "5"
    assert args["dry_run"] == "true"


def test_job_arguments_missing_required_is_one_clear_line() -> None:
    with pytest.raises(SystemExit, match="missing argument\\(s\\) --files_table, --orders_table"):
        job_arguments(["script.py", "--bucket", "b", "--ingest_queue_url", "q"])
