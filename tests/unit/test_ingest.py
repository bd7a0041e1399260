"""The ingest service end to end on fakes: outcomes, effects, their order, and failures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from core.aws.settings import Settings
from core.pipeline.events import FileRef, event_body
from core.pipeline.ingest import FileBusy, IngestService, handle_record, rejects_key_for
from core.pipeline.ledger import Decision, LeaseLost, Status
from core.pipeline.orders_store import OrdersWriter
from core.validation.engine import validate
from tests.unit.ingest_fakes import (
    SETTINGS,
    FakeClock,
    FakeDynamo,
    FakeNotices,
    FakeObjects,
    FakeSqs,
    InMemoryLedger,
)

CLEAN = b"Ord1,C1,19/04/23,Pending,1999\nOrd2,C2,11/05/23,Completed,10.50\n"
MIXED = b"Ord1,C1,19/04/23,Pending,1999\nOrd2,,11/05/23,Completed,10\n,C3,01/01/23,End,5\n"


class Pipeline:
    def __init__(self, tmp_path: Path, settings: Settings = SETTINGS) -> None:
        self.clock = FakeClock()
        self.ledger = InMemoryLedger(self.clock)
        self.objects = FakeObjects()
        self.ddb = FakeDynamo()
        self.notices = FakeNotices()
        self.order_of_effects: list[str] = []
        self.service = IngestService(
            settings=settings,
            ledger=self.ledger,
            objects=self.objects,
            writer=OrdersWriter(self.ddb, "orders", threads=2),
            rejects=self.objects,
            notices=self.notices,
            validate=validate,
            clock=self.clock,
            tmp_dir=str(tmp_path),
        )

    def upload(self, key: str, body: bytes, version: str = "v1") -> FileRef:
        ref = FileRef("b", key, version, "etag", len(body), "2026-05-01T11:00:00.000Z")
        self.objects.bodies[ref.file_id] = body
        return ref


@pytest.fixture
def pipe(tmp_path: Path) -> Pipeline:
    return Pipeline(tmp_path)


def test_clean_file_succeeds_with_its_orders_and_no_notice(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/clean.csv", CLEAN)
    result = pipe.service.ingest(ref)
    assert result.status == Status.SUCCEEDED
    assert (result.rows, result.valid, result.invalid, result.written) == (2, 2, 0, 2)
    assert pipe.ddb.items["Ord2"]["Order_Total"] == {"N": "10.50"}
    assert pipe.ddb.items["Ord1"]["Order_Date"] == {"S": "2023-04-19"}
    assert pipe.notices.sent == []
    assert pipe.objects.rejects == {}
    entry = pipe.ledger.get(ref.file_id)
    assert entry is not None
    assert (entry.status, entry.valid, entry.lease_until) == (Status.SUCCEEDED, 2, None)


def test_partial_file_stores_rejects_csv_and_one_notice(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/sub/mixed.csv", MIXED)
    result = pipe.service.ingest(ref)
    assert result.status == Status.PARTIAL
    assert set(pipe.ddb.items) == {"Ord1"}
    csv = pipe.objects.rejects["rejects/sub/mixed.csv"].decode().splitlines()
    assert csv[0] == "line,Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total,reasons"
    assert csv[1].startswith("2,Ord2,")
    assert len(csv) == 3
    (notice,) = pipe.notices.sent
    assert (notice.status, notice.rows, notice.valid, notice.invalid) == ("PARTIAL", 3, 1, 2)
    assert notice.rejects_key == "rejects/sub/mixed.csv"
    assert notice.rejects_bytes == len(pipe.objects.rejects["rejects/sub/mixed.csv"])
    assert [s.line for s in notice.sample] == [2, 3]
    assert notice.sample[0].reasons == ["Customer_Id.required"]
    assert notice.sample[0].values["Order_Id"] == "Ord2"
    assert notice.reasons == pipe.ledger.get(ref.file_id).reasons  # type: ignore[union-attr]


def test_a_file_whose_every_row_fails_is_rejected_with_its_rows_reported(
    pipe: Pipeline,
) -> None:
    head = b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
    ref = pipe.upload("incoming/none.csv", head + b"Ord1,,19/04/23,Pending,1\nO2,C2,1/5/23,End,2\n")
    result = pipe.service.ingest(ref)
    assert result.status == Status.REJECTED  # nothing stored: not "partly accepted"
    assert (result.rows, result.valid, result.invalid) == (2, 0, 2)
    assert pipe.ddb.items == {}
    entry = pipe.ledger.get(ref.file_id)
    assert entry is not None
    assert (entry.status, entry.error) == (Status.REJECTED, None)  # no file-level reason
    (notice,) = pipe.notices.sent
    assert (notice.status, notice.rows, notice.valid, notice.invalid) == ("REJECTED", 2, 0, 2)
    assert notice.error is None
    assert [(s.line, s.reasons) for s in notice.sample] == [
        (2, ["Customer_Id.required"]),
        (3, ["Order_Status.allowed"]),
    ]
    assert notice.rejects_key == "rejects/none.csv"
    assert len(pipe.objects.rejects["rejects/none.csv"].decode().splitlines()) == 3


def test_rejected_file_stores_no_orders_and_explains_why(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/empty.csv", b"")
    result = pipe.service.ingest(ref)
    assert result.status == Status.REJECTED
    assert pipe.ddb.items == {}
    (notice,) = pipe.notices.sent
    assert notice.status == "REJECTED"
    assert notice.error
    assert notice.rejects_key is None
    assert pipe.ledger.get(ref.file_id).error == notice.error  # type: ignore[union-attr]


def test_file_rejected_after_valid_rows_stores_no_orders(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path, SETTINGS.with_(max_rows=1))
    result = pipe.service.ingest(pipe.upload("incoming/long.csv", CLEAN))
    assert result.status == Status.REJECTED
    assert pipe.ddb.items == {}


def test_oversized_file_is_rejected_without_reading_it(pipe: Pipeline) -> None:
    ref = FileRef(
        "b", "incoming/huge.csv", "v1", "e", SETTINGS.max_file_bytes + 1, "2026-05-01T11:00:00.000Z"
    )
    pipe.objects.fail_with = AssertionError("must not be read")
    result = pipe.service.ingest(ref)
    assert result.status == Status.REJECTED
    assert "larger than" in (pipe.notices.sent[0].error or "")


def test_duplicate_event_is_acknowledged_and_skipped(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/clean.csv", CLEAN)
    pipe.service.ingest(ref)
    calls = len(pipe.ddb.calls)
    again = pipe.service.ingest(ref)
    assert again.skipped
    assert again.decision == Decision.DUPLICATE
    assert len(pipe.ddb.calls) == calls


def test_file_held_by_a_live_attempt_is_busy(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/clean.csv", CLEAN)
    pipe.ledger.claim(ref, 600)
    with pytest.raises(FileBusy):
        pipe.service.ingest(ref)


def test_infrastructure_error_marks_failed_and_propagates(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/clean.csv", CLEAN)
    pipe.objects.fail_with = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetObject"
    )
    with pytest.raises(ClientError):
        pipe.service.ingest(ref)
    entry = pipe.ledger.get(ref.file_id)
    assert entry is not None
    assert entry.status == Status.FAILED
    assert entry.last_error == "GetObject: AccessDenied: Access Denied"


def test_notice_is_sent_before_the_outcome_and_a_crash_between_resends_it(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/mixed.csv", MIXED)
    pipe.notices.fail_with = ClientError(
        {"Error": {"Code": "ServiceUnavailable", "Message": "try later"}}, "SendMessage"
    )
    with pytest.raises(ClientError):
        pipe.service.ingest(ref)
    assert pipe.ledger.get(ref.file_id).status == Status.FAILED  # type: ignore[union-attr]
    written = {k: dict(v) for k, v in pipe.ddb.items.items()}
    pipe.notices.fail_with = None
    pipe.clock.advance(30)
    result = pipe.service.ingest(ref)  # SQS redelivers
    assert result.decision == Decision.RETRY
    assert result.status == Status.PARTIAL
    assert len(pipe.notices.sent) == 1
    assert pipe.ddb.items == written  # the re-write is byte-identical
    assert pipe.ledger.get(ref.file_id).attempts == 2  # type: ignore[union-attr]


SIX = b"".join(f"Ord{i},C{i},19/04/23,Pending,{i}0\n".encode() for i in range(1, 7))


def _later(ref: FileRef, minutes: int) -> FileRef:
    return replace(ref, event_time=f"2026-05-01T11:{minutes:02d}:00.000Z")


def test_a_newer_upload_records_the_orders_it_took_on_the_older_entry(pipe: Pipeline) -> None:
    v1 = pipe.upload("incoming/orders_v1.csv", SIX)
    assert pipe.service.ingest(v1).written == 6
    v2 = _later(pipe.upload("incoming/orders_v2.csv", SIX[: SIX.index(b"Ord6")]), 30)
    result = pipe.service.ingest(v2)
    assert (result.written, result.superseded) == (5, 0)
    older = pipe.ledger.get(v1.file_id)
    assert (older.written, older.taken) == (6, {v2.file_id: 5})  # type: ignore[union-attr]
    assert pipe.ledger.get(v2.file_id).taken == {}  # type: ignore[union-attr]
    # The older upload's orders left under its name: 6 written, 5 taken, 1 stored.
    assert sum(i["source_file_id"]["S"] == v1.file_id for i in pipe.ddb.items.values()) == 1


def test_a_retried_newer_upload_records_its_takes_once(pipe: Pipeline) -> None:
    v1 = pipe.upload("incoming/orders_v1.csv", SIX)
    pipe.service.ingest(v1)
    v2 = _later(pipe.upload("incoming/orders_v2.csv", SIX + b",C9,01/01/23,End,5\n"), 30)
    pipe.notices.fail_with = ClientError(
        {"Error": {"Code": "ServiceUnavailable", "Message": "try later"}}, "SendMessage"
    )
    with pytest.raises(ClientError):
        pipe.service.ingest(v2)  # its orders are written; the notice (PARTIAL) fails
    assert pipe.ledger.get(v1.file_id).taken == {v2.file_id: 6}  # type: ignore[union-attr]
    pipe.notices.fail_with = None
    pipe.clock.advance(30)
    assert pipe.service.ingest(v2).decision == Decision.RETRY  # rewrites its own orders
    assert pipe.ledger.get(v1.file_id).taken == {v2.file_id: 6}  # type: ignore[union-attr]


def test_an_attempt_taken_over_records_nothing(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/clean.csv", CLEAN)

    def slow_validate(source: Any, name: str, **kw: Any) -> Any:
        pipe.clock.advance(3600)  # this attempt stalls past its lease...
        pipe.ledger.claim(ref, 60)  # ...and a redelivery takes the file over
        return validate(source, name, **kw)

    pipe.service.validate = slow_validate
    with pytest.raises(LeaseLost):
        pipe.service.ingest(ref)
    entry = pipe.ledger.get(ref.file_id)
    assert entry is not None
    assert (entry.status, entry.attempts) == (Status.PROCESSING, 2)
    assert pipe.ddb.items == {}


def test_handle_record_defers_a_busy_message(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/clean.csv", CLEAN)
    pipe.ledger.claim(ref, 600)

    sqs = FakeSqs()
    with pytest.raises(FileBusy):
        handle_record(pipe.service, event_body([ref]), "receipt-1", sqs, receive_count=3)
    assert sqs.calls == [
        {"QueueUrl": "http://queue/ingest", "ReceiptHandle": "receipt-1", "VisibilityTimeout": 480}
    ]


def test_a_message_with_several_files_processes_each(pipe: Pipeline) -> None:
    refs = [pipe.upload("incoming/a.csv", CLEAN), pipe.upload("incoming/b.csv", MIXED)]
    results = pipe.service.handle_body(event_body(refs))
    assert [r.status for r in results] == [Status.SUCCEEDED, Status.PARTIAL]


def test_rejects_key_mirrors_the_incoming_key() -> None:
    assert rejects_key_for("incoming/2026/orders.csv") == "rejects/2026/orders.csv"
    assert rejects_key_for("other/x.xlsx") == "rejects/other/x.xlsx.csv"
