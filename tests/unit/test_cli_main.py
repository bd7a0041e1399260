"""Configuration errors read from the environment end in one line, exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_malformed_setting_is_one_line_not_a_traceback() -> None:
    env = {
        **os.environ,
        "ORDERPIPE_BUCKET": "b",
        "ORDERPIPE_FILES_TABLE": "f",
        "ORDERPIPE_WRITE_THREADS": "many",
        "ORDERPIPE_STATE_DIR": "/nonexistent-orderpipe-state",
        # Nothing listens on port 9: the setting must fail before any call is made.
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    done = subprocess.run(
        [sys.executable, "-m", "core.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: ORDERPIPE_WRITE_THREADS must be a whole number, got 'many'"
    ]
