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
    assert rows_per_second(running, now) == 1_200  # written rows per second
    judging = entry(status=Status.PROCESSING, rows_judged=30_000)
    assert rows_per_second(judging, now) == 3_000  # before the first write: judged
    data = entry_json(running)
    assert (data["rows_judged"], data["rows_written"], data["outcome"]) == (30_000, 12_000, None)
    assert entry_json(entry(status=Status.PARTIAL))["outcome"] == "PARTIAL"


def test_the_version_is_the_s3_version_id_or_none_never_an_etag() -> None:
    assert (entry_json(entry())["version"], entry_json(entry())["etag"]) == (None, "e1")
    versioned = entry(version="3HL4kqtJlcpXroDTDmJ", file_id="b/incoming/a.csv#3HL4kqtJlcpXroDTDmJ")
    assert entry_json(versioned)["version"] == "3HL4kqtJlcpXroDTDmJ"


def test_upload_wait_in_a_pipe_prints_plain_progress_lines_only_for_slow_files(capsys) -> None:
    import io
    from pathlib import Path

    from rich.console import Console

    from core.cli.upload import WaitProgress
    from core.ops.upload import Uploaded

    upload = Uploaded(Path("a.csv"), "b", "incoming/a.csv", "", "e1", 10, 0.0)
    err = Console(file=io.StringIO(), force_terminal=False)
    running = entry(status=Status.PROCESSING, rows_judged=50_000, rows_written=20_000)
    with WaitProgress(err, [upload]) as progress:
        progress.update(0, running)  # seconds after the upload: nothing to say yet
        assert capsys.readouterr().err == ""
        progress.started -= WaitProgress.PLAIN_EVERY_S  # as if the file had run that long
        progress.update(0, running)
        progress.update(0, running)  # the same moment again: no second line
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("incoming/a.csv: processing: 50,000 rows judged, 20,000 written, ")
    assert lines[0].endswith(" rows/s")
    assert err.file.getvalue() == ""  # no bar, no escape codes in a pipe


def test_a_file_rejected_for_its_rows_shows_its_counts_and_one_refused_whole_does_not() -> None:
    from core.cli.status import ledger_rows

    none_valid = entry(status=Status.REJECTED, rows=3, valid=0, invalid=3,
                       reasons={"Order_Id.required": 3})  # fmt: skip
    refused = entry(object_key="incoming/c.csv", status=Status.REJECTED, error="not orders")
    rows = ledger_rows([none_valid, refused], terminal=True)
    assert [(r[1], r[3], r[4], r[5]) for r in rows] == [
        ("a.csv", "3", "3", "Order_Id.required ×3"),
        ("c.csv", "", "", "not orders"),
    ]


def test_upload_wait_live_bars_name_keys_as_status_does_and_count_only_judged_rows() -> None:
    import io
    from pathlib import Path

    from rich.console import Console

    from core.cli.upload import WaitProgress
    from core.ops.upload import Uploaded

    uploads = [
        Uploaded(Path(n), "b", f"incoming/{n}", "", "e1", 10, 0.0) for n in ("a.csv", "c.csv")
    ]
    err = Console(file=io.StringIO(), force_terminal=True, width=80, color_system=None)
    progress = WaitProgress(err, uploads)
    none_valid = entry(status=Status.REJECTED, rows=3, valid=0, invalid=3,
                       finished_at="2026-12-04T10:00:03.000Z")  # fmt: skip
    refused = entry(object_key="incoming/c.csv", status=Status.REJECTED, error="not orders",
                    finished_at="2026-12-04T10:00:03.000Z")  # fmt: skip
    progress.update(0, none_valid)
    progress.update(1, refused)
    tasks = progress.bar.tasks
    assert [t.description for t in tasks] == ["a.csv", "c.csv"]
    assert [t.fields["state"] for t in tasks] == ["rejected, 3 rows", "rejected"]
