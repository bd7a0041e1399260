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


def test_a_usage_error_is_one_line_naming_where_help_is() -> None:
    from click.testing import CliRunner

    from core.cli import cli

    cases = {
        ("validate", "--bogus", "x"): "Error: No such option '--bogus'. Did you mean '--out'? "
        "(see `orderpipe validate -h`)\n",
        ("nope",): "Error: No such command 'nope'. (see `orderpipe -h`)\n",
        ("dlq", "purge"): "Error: purge deletes the messages for good: pass --yes (or "
        "--dry-run) (see `orderpipe dlq purge -h`)\n",
    }
    for args, line in cases.items():
        result = CliRunner().invoke(cli, list(args), prog_name="orderpipe")
        assert result.exit_code == 2, args
        assert result.stdout == ""
        assert result.stderr == line
    assert CliRunner().invoke(cli, ["validate", "-h"]).exit_code == 0
    assert CliRunner().invoke(cli, ["--version"]).exit_code == 0
