"""Every operations command and subcommand answers --help, and bad options fail as usage errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from core.cli import cli

COMMANDS = [
    ["dlq"],
    ["dlq", "list"],
    ["dlq", "show"],
    ["dlq", "redrive"],
    ["dlq", "purge"],
    ["replay"],
    ["reconcile"],
    ["alerts"],
    ["rejects"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_help(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dlq", "list", "--queue", "orders"], "'orders' is not one of 'ingest', 'notify'"),
        (["dlq", "redrive", "--max", "0"], "0 is not in the range x>=1"),
        (["replay", "--since", "yesterday"], "not a duration"),
        (["replay", "--status", "LOST"], "unknown status 'LOST'"),
        (["reconcile", "--grace", "-5m"], "not a duration"),
        (["rejects", "a.csv", "--link", "0"], "0 is not in the range 1<=x<=168"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.output
