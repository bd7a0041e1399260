"""``orderpipe rejects``: the command every rejection email names, against a moto server."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from click.testing import CliRunner

from core.cli import cli
from core.local.local_state import ENV_STATE_DIR
from core.pipeline.ingest import rejects_key_for

pytestmark = pytest.mark.integration

KEY = "incoming/Zürich orders (final).csv"
REJECTS = rejects_key_for(KEY)  # where ingest writes them
BODY = b"line,Order_Id,reasons\n5,A-5,Order_Total.format\n"


@pytest.fixture
def env_stack(stack: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path / "state"))
    for name, value in stack.settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.endpoint)
    stack.clients.s3.put_object(Bucket=stack.names.bucket, Key=REJECTS, Body=BODY)
    return stack


def test_rejects_are_fetched_by_the_uploaded_key_into_a_file(env_stack: Any, tmp_path: Path):
    out = tmp_path / "r.csv"
    result = CliRunner().invoke(cli, ["rejects", KEY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == BODY
    assert f"{len(BODY):,} bytes written" in result.output
    # Without incoming/ the key means the same file; '-' writes to stdout.
    again = CliRunner().invoke(cli, ["rejects", "Zürich orders (final).csv", "--out", "-"])
    assert again.exit_code == 0
    assert again.stdout_bytes == BODY


def test_a_fresh_link_is_signed_and_downloads(env_stack: Any) -> None:
    result = CliRunner().invoke(cli, ["rejects", KEY, "--link", "2"])
    assert result.exit_code == 0, result.output
    url = result.stdout.strip()
    assert "X-Amz-Expires=7200" in url
    assert "valid until" in result.stderr
    with urlopen(url) as response:  # the emulator on loopback serves the presigned GET
        assert response.read() == BODY


def test_a_file_without_rejects_is_one_line(env_stack: Any, tmp_path: Path) -> None:
    out = tmp_path / "none.csv"
    result = CliRunner().invoke(cli, ["rejects", "clean.csv", "--out", str(out)])
    assert result.exit_code == 1
    assert "no rejects for incoming/clean.csv" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    assert list(tmp_path.glob("*.part")) == []
