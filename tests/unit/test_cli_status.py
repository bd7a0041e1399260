"""status: queued time after a replay, progress of a file being processed, versions."""

from __future__ import annotations

from datetime import UTC, datetime

from core.cli.status import entry_json, queued_seconds, rows_per_second
from core.pipeline.ledger import LedgerEntry, ReplayRecord, Status


def entry(**changes: object) -> LedgerEntry:
    base: dict[str, object] = {
        "file_id": "b/incoming/a.csv#etag:e1",
        "bucket": "b",
        "object_key": "incoming/a.csv",
        "version": "etag:e1",
        "etag": "e1",
        "status": Status.SUCCEEDED,
        "event_time": "2026-12-04T10:00:00.000Z",
        "started_at": "2026-12-04T10:00:02.000Z",
    }
    base.update(changes)
    return LedgerEntry(**base)  # type: ignore[arg-type]


def test_queued_counts_from_the_upload_then_from_the_last_replay() -> None:
    assert queued_seconds(entry()) == 2.0
    replayed = entry(
        started_at="2026-12-04T12:00:00.500Z",
        replay_log=(
            ReplayRecord("2026-12-04T11:00:00.000Z", "first"),
            ReplayRecord("2026-12-04T12:00:00.000Z", "second"),
        ),
    )
    assert queued_seconds(replayed) == 0.5


def test_a_file_being_processed_reports_rows_and_rate() -> None:
    running = entry(status=Status.PROCESSING, rows_judged=30_000, rows_written=12_000)
    now = datetime(2026, 12, 4, 10, 0, 12, tzinfo=UTC)
    assert rows_per_second(running, now) == 3_000
    data = entry_json(running)
    assert (data["rows_judged"], data["rows_written"], data["outcome"]) == (
        30_000,
        12_000,
        "processing",
    )


def test_the_version_is_the_s3_version_id_or_none_never_an_etag() -> None:
    assert (entry_json(entry())["version"], entry_json(entry())["etag"]) == (None, "e1")
    versioned = entry(version="3HL4kqtJlcpXroDTDmJ", file_id="b/incoming/a.csv#3HL4kqtJlcpXroDTDmJ")
    assert entry_json(versioned)["version"] == "3HL4kqtJlcpXroDTDmJ"
