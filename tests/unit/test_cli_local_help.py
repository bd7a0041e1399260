"""Every command of the local toolset answers --help, and its options are spelled as documented."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from core.cli import cli

EXPECTED_OPTIONS = {
    "local": ["--port", "--outbox", "--verbose"],
    "worker": ["--queue", "--notify-window", "--until-idle", "--stack", "--endpoint-url"],
    "upload": ["--wait", "--json", "--timeout", "--prefix", "--stack", "--endpoint-url"],
    "status": ["--json", "--limit", "--status", "--stack", "--endpoint-url"],
    "demo": ["--files", "--outbox"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_OPTIONS))
def test_command_has_help_with_its_options(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    for option in EXPECTED_OPTIONS[name]:
        assert option in result.output, option


def test_the_supervision_flag_stays_out_of_the_help() -> None:
    result = CliRunner().invoke(cli, ["worker", "--help"])
    assert "--parent-pid" not in result.output
