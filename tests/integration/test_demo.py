"""``orderpipe demo`` end to end: the newcomer's first command works and leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.local.emulator import answers

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "incoming/test_data1.csv": ("PARTIAL", "12", "5"),
    "incoming/test_data2.csv": ("PARTIAL", "12", "8"),
    "incoming/orders_clean.csv": ("SUCCEEDED", "6", "0"),
    "incoming/orders_bad_rows.csv": ("PARTIAL", "7", "5"),
    "incoming/empty.csv": ("REJECTED", "0", "0"),
    "incoming/scanned_order.png": ("REJECTED", "0", "0"),
}


def test_demo_shows_every_outcome_the_orders_and_the_email(tmp_path: Path) -> None:
    env = dict(os.environ, ORDERPIPE_STATE_DIR=str(tmp_path), COLUMNS="200")
    env.pop("AWS_ENDPOINT_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "core.cli", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # In a pipe the outcomes table is one tab-separated line per file: key, outcome, rows, bad.
    rows = {
        cells[0]: tuple(cells[1:4])
        for line in done.stdout.splitlines()
        if (cells := line.split("\t"))[0].startswith("incoming/")
    }
    for key, expected in EXPECTED.items():
        assert rows[key] == expected, key
    assert "orders stored: 19 " in done.stdout  # 7 + 4 + 6 + 2 valid rows, all distinct ids

    emails = sorted((tmp_path / "demo-outbox").glob("*.eml"))
    assert len(emails) >= 1
    assert f"emails: {len(emails)} in {tmp_path / 'demo-outbox'}" in done.stdout
    assert "Traceback" not in done.stderr

    # Nothing left running: the emulator it started no longer answers.
    endpoint = re.search(r"at (http://127\.0\.0\.1:\d+)", done.stderr)
    assert endpoint is not None, done.stderr
    assert not answers(endpoint.group(1))
    assert "nothing left running" in done.stderr
    assert "`orderpipe console`" in done.stderr  # the demo points at the web console
