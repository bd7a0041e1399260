"""The second-emulator section of docs/reliability.md survives both of its writers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from tests.compat.report import section, splice

ROOT = Path(__file__).resolve().parents[2]
PAGE = "# Reliability\n\n## Scenarios\n\ntable\n\n## What these runs do not prove\n\n- limits\n"
ROWS: list[dict[str, object]] = [
    {"test": "t1", "scenario": "pipeline", "outcome": "passed", "seconds": 1.2, "figures": {}},
    {"test": "t2", "scenario": "DLQ", "outcome": "failed", "seconds": 3.4, "figures": {"a": 1}},
]


def _reliability_report() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "reliability_report", ROOT / "bench" / "reliability_report.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_section_goes_before_the_limits_and_is_replaced_not_repeated() -> None:
    first = splice(PAGE, section(ROWS, 10, "4.14.0"))
    assert first.index("## Second emulator") < first.index("## What these runs do not prove")
    assert "1 of 2 scenarios passed" in first
    assert "| DLQ | **FAILED** | 3.4 | a 1 |" in first
    assert "| pipeline | passed | 1.2 | - |" in first
    again = splice(first, section(ROWS[:1], 5, "4.14.0"))
    assert again.count("## Second emulator") == 1
    assert "1 of 1 scenarios passed" in again
    assert "| DLQ |" not in again
    assert again.endswith("## What these runs do not prove\n\n- limits\n")


def test_reliability_report_carries_the_section_over(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    written = section(ROWS, 10, "4.14.0")
    doc.write_text(splice(PAGE, written), encoding="utf-8")
    (kept,) = _reliability_report().kept_sections(doc)
    assert kept == written.rstrip("\n") + "\n"
    assert _reliability_report().kept_sections(tmp_path / "missing.md") == []
