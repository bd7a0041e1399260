"""The Lambda functions load only what they run: no local stack, release, ops or test code.

Checked on the real import graph (``python -X importtime``, after wiring both services through
the composition root, which imports each service's modules when it builds it) and against the
list of files ``orderpipe package`` ships.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

from core.release.package import lambda_modules

ROOT = Path(__file__).resolve().parents[2]
# Never in a function: the emulator and worker, release tooling, the CLI, operator tools (the
# Glue job and the CLI run those), and the fault harness of the tests.
FORBIDDEN = ("core.local", "core.release", "core.cli", "core.ops", "tests", "moto", "click")

PROBE = """
import handlers.ingest, handlers.notify
from core import bootstrap
from core.aws.clients import Clients
from core.aws.settings import Settings

settings = Settings(
    bucket="b", orders_table="o", files_table="f", notify_queue_url="q",
    sender="s@x.test", recipients=("r@x.test",),
)
clients = Clients(endpoint_url="http://127.0.0.1:9")
bootstrap.ingest(settings, clients)
bootstrap.notifier(settings, clients)
"""


@functools.cache
def _imported() -> list[str]:
    """Every module the two handlers import, as ``-X importtime`` reports them."""
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # "import time: self [us] | cumulative | imported package", the name indented by depth.
    rows = [line.split("|")[-1].strip() for line in done.stderr.splitlines()]
    return [name for name in rows if name and name != "imported package"]


def test_the_handlers_import_no_local_release_ops_or_fault_code() -> None:
    imported = _imported()
    assert "core.pipeline.ingest" in imported  # the probe did load the real graph
    assert "core.validation.engine" in imported
    wrong = [m for m in imported if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN)]
    assert wrong == []


def test_the_function_zip_ships_every_module_the_handlers_import() -> None:
    shipped = set(lambda_modules(ROOT))
    project = [m for m in _imported() if m.split(".")[0] in ("core", "handlers")]
    files = {
        m.replace(".", "/") + ("/__init__.py" if (ROOT / m.replace(".", "/")).is_dir() else ".py")
        for m in project
    }
    assert files - shipped == set()
    assert "core/validation/schemas/orders.json" in shipped


def test_the_function_zip_ships_no_local_release_ops_or_fault_code() -> None:
    shipped = lambda_modules(ROOT)
    banned = ("core/local/", "core/release/", "core/cli/", "core/ops/", "tests/")
    assert [m for m in shipped if m.startswith(banned)] == []
    assert "handlers/reconcile_job.py" not in shipped  # the Glue job ships on its own
