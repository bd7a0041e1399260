"""``orderpipe rejects``: the command every rejection email names, against a moto server."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from click.testing import CliRunner

from core import bootstrap
from core.cli import cli
from core.local.local_state import ENV_STATE_DIR
from core.pipeline.events import FileRef
from core.pipeline.ingest import rejects_key_for
from core.pipeline.ledger import FileOutcome, Status

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
    # The ledger has never seen it: say so rather than blame the retention period.
    assert result.output.startswith(
        "Error: no rejects for incoming/clean.csv: no upload with that key in the ledger"
    )
    assert "Traceback" not in result.output
    assert not out.exists()
    assert list(tmp_path.glob("*.part")) == []


@pytest.mark.parametrize(
    ("outcome", "says"),
    [
        (
            FileOutcome(Status.SUCCEEDED, rows=3, valid=3, written=3),
            "it was accepted, every row valid",
        ),
        (
            FileOutcome(Status.REJECTED, error="the file is empty"),
            "it was rejected whole, so no row was judged (the file is empty)",
        ),
    ],
)
def test_a_file_with_nothing_to_fetch_says_what_became_of_it(
    env_stack: Any, outcome: FileOutcome, says: str
) -> None:
    key = f"incoming/{outcome.status.value.lower()}.csv"
    ledger = bootstrap.ledger(env_stack.settings, env_stack.clients)
    ref = FileRef(env_stack.names.bucket, key, "", "e1", 10, "2026-12-04T10:00:00.000Z")
    ledger.finish(ledger.claim(ref, lease_s=60), outcome)
    result = CliRunner().invoke(cli, ["rejects", key, "--out", "-"])
    assert result.exit_code == 1
    assert result.stderr == f"Error: no rejects for {key}: {says}\n"
