"""Failed messages come back after a backoff by receive count, set on that message alone; a
record that fails is reported in batchItemFailures, never raised as a Lambda error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

import handlers.ingest
import handlers.notify
from core import bootstrap
from core.aws.settings import (
    DEFAULT_RETRY_SCHEDULE_S,
    ENV_RETRY_SCHEDULE,
    Settings,
    SettingsError,
)
from core.aws.stack import AWS_TIMINGS, LOCAL_TIMINGS, MAX_RECEIVE_COUNT
from core.local.worker import LambdaContext
from core.pipeline.events import FileRef, event_body
from core.pipeline.ingest import IngestService
from core.pipeline.ledger import Status, lease_seconds
from core.pipeline.notify import BatchReport
from core.pipeline.orders_store import OrdersWriter
from core.pipeline.retry import backoff_s, retry_after
from core.validation.engine import validate
from tests.unit.ingest_fakes import (
    FakeClock,
    FakeDynamo,
    FakeNotices,
    FakeObjects,
    FakeSqs,
    InMemoryLedger,
)

INGEST_URL = "http://queue/ingest"
NOTIFY_URL = "http://queue/notify"
CLEAN = b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\nO1,C1,19/04/23,Pending,19\n"


# ---- the schedule ---------------------------------------------------------------------------


def test_production_schedule_by_receive_count() -> None:
    waits = [backoff_s(n, DEFAULT_RETRY_SCHEDULE_S) for n in range(1, MAX_RECEIVE_COUNT + 1)]
    assert waits == [30, 120, 480, 1800, 0]  # the 5th failure goes to the DLQ at once
    assert sum(waits) == 2430  # about 41 min from first failure to the DLQ, plus run time


def test_schedule_holds_past_its_end_and_for_odd_counts() -> None:
    assert backoff_s(0, (5, 10)) == 5  # a record without a receive count is a first receive
    assert backoff_s(3, (5, 10), max_receives=9) == 10  # past the schedule: its last wait
    assert backoff_s(9, (5, 10), max_receives=9) == 0
    assert backoff_s(1, ()) == 0


@pytest.mark.parametrize("timings", [AWS_TIMINGS, LOCAL_TIMINGS], ids=["aws", "local"])
def test_waits_outlast_a_busy_holder_and_stay_under_the_queue_visibility(timings: Any) -> None:
    waits = [backoff_s(n, timings.retry_schedule_s) for n in range(1, MAX_RECEIVE_COUNT)]
    # A file held by a live attempt is busy until its lease ends: four waits outlast it, so a
    # message is only dead-lettered when the holder is truly stuck.
    assert sum(waits) >= lease_seconds(timings.ingest_timeout_s)
    # A transient fault costs far less than the queue's visibility timeout would.
    assert waits[0] * 10 <= timings.ingest_visibility_s
    assert max(waits) <= timings.ingest_visibility_s or timings is AWS_TIMINGS


def test_schedule_setting_round_trips_and_rejects_nonsense() -> None:
    local = Settings(retry_schedule_s=(1, 2, 4, 8))
    assert local.to_env()[ENV_RETRY_SCHEDULE] == "1,2,4,8"
    assert Settings.from_env(local.to_env()).retry_schedule_s == (1, 2, 4, 8)
    assert ENV_RETRY_SCHEDULE not in Settings().to_env()  # AWS runs the default
    assert Settings.from_env({}).retry_schedule_s == DEFAULT_RETRY_SCHEDULE_S
    for bad in ("soon", "30,,60", "-1", "50000"):
        with pytest.raises(SettingsError, match=ENV_RETRY_SCHEDULE):
            Settings.from_env({ENV_RETRY_SCHEDULE: bad})


def test_a_refused_visibility_change_is_not_an_error() -> None:
    # The message then waits the queue's visibility timeout: later, never lost.
    assert retry_after(FakeSqs(refuse=True), INGEST_URL, "r", 30) is False


# ---- the ingest handler ---------------------------------------------------------------------


class Wired:
    """The real ingest handler over the in-memory ports."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sqs = FakeSqs()
        self.ledger = InMemoryLedger(FakeClock())
        self.objects = FakeObjects()
        settings = Settings(
            bucket="b",
            orders_table="orders",
            files_table="files",
            ingest_queue_url=INGEST_URL,
            notify_queue_url=NOTIFY_URL,
            function_timeout_s=60,
        )
        self.service = IngestService(
            settings=settings,
            ledger=self.ledger,
            objects=self.objects,
            writer=OrdersWriter(FakeDynamo(), "orders", threads=1),
            rejects=self.objects,
            notices=FakeNotices(),
            validate=validate,
            tmp_dir=str(tmp_path),
        )
        clients = type("Clients", (), {"sqs": self.sqs})()
        monkeypatch.setattr(bootstrap, "warm_clients", lambda: clients)
        monkeypatch.setattr(bootstrap, "ingest", lambda *a, **kw: self.service)

    def upload(self, key: str) -> FileRef:
        ref = FileRef("b", key, "v1", "etag", len(CLEAN), "2026-05-01T11:00:00.000Z")
        self.objects.bodies[ref.file_id] = CLEAN
        return ref

    def invoke(self, *bodies: str, receive_count: int = 1) -> Any:
        records = [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"receipt-{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": str(receive_count)},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:ingest",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
        context = LambdaContext("orderpipe-test-ingest", "us-east-1", 60)
        return handlers.ingest.handler({"Records": records}, context)


def emitted_metrics(out: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in out.splitlines():
        if line.startswith("{") and "_aws" in line:
            doc = json.loads(line)
            for metric in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                value = doc[metric["Name"]]
                found[metric["Name"]] = sum(value) if isinstance(value, list) else value
    return found


@pytest.fixture
def wired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Wired:
    return Wired(tmp_path, monkeypatch)


def test_a_busy_file_alone_in_its_batch_is_a_reported_failure_not_a_lambda_error(
    wired: Wired, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = wired.upload("incoming/busy.csv")
    wired.ledger.claim(ref, 600)  # another attempt holds it

    answer = wired.invoke(event_body([ref]), receive_count=2)  # raises nothing

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert wired.sqs.calls == [
        {"QueueUrl": INGEST_URL, "ReceiptHandle": "receipt-0", "VisibilityTimeout": 120}
    ]
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics.get("FilesDeferred") == 1
    assert "FilesFailed" not in metrics  # the alarm on real failures stays quiet


def test_duplicates_and_test_events_succeed_quietly(
    wired: Wired, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = wired.upload("incoming/done.csv")
    assert wired.service.ingest(ref).status == Status.SUCCEEDED
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})

    answer = wired.invoke(event_body([ref]), test_event)

    assert answer == {"batchItemFailures": []}
    assert wired.sqs.calls == []
    metrics = emitted_metrics(capsys.readouterr().out)
    assert "FilesFailed" not in metrics
    assert "FilesDeferred" not in metrics


def test_an_infrastructure_failure_counts_and_comes_back_after_its_backoff(
    wired: Wired, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = wired.upload("incoming/broken.csv")
    wired.objects.fail_with = ClientError(
        {"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}},
        "GetObject",
    )

    answer = wired.invoke(event_body([ref]), receive_count=3)

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert wired.sqs.calls == [
        {"QueueUrl": INGEST_URL, "ReceiptHandle": "receipt-0", "VisibilityTimeout": 480}
    ]
    assert emitted_metrics(capsys.readouterr().out).get("FilesFailed") == 1
    entry = wired.ledger.get(ref.file_id)
    assert entry is not None
    assert entry.status == Status.FAILED
    assert entry.last_error == "GetObject: SlowDown: Please reduce your request rate."


def test_the_last_receive_is_dead_lettered_at_once(wired: Wired) -> None:
    ref = wired.upload("incoming/broken.csv")
    wired.objects.fail_with = OSError("connection reset by peer")
    wired.invoke(event_body([ref]), receive_count=MAX_RECEIVE_COUNT)
    assert [c["VisibilityTimeout"] for c in wired.sqs.calls] == [0]


# ---- the notify handler ---------------------------------------------------------------------


def test_notify_backs_off_only_the_failed_messages(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = FakeSqs()

    class Notifier:
        def handle(self, messages: Any) -> BatchReport:
            return BatchReport(failed={"n1": "SES throttled"}, files_notified=1, emails_sent=1)

    clients = type("Clients", (), {"sqs": sqs})()
    monkeypatch.setattr(bootstrap, "warm_clients", lambda: clients)
    monkeypatch.setattr(bootstrap, "notifier", lambda *a: Notifier())
    monkeypatch.setenv("ORDERPIPE_FILES_TABLE", "files")
    monkeypatch.setenv("ORDERPIPE_SENDER", "s@example.com")
    monkeypatch.setenv("ORDERPIPE_RECIPIENTS", "r@example.com")
    monkeypatch.setenv("ORDERPIPE_NOTIFY_QUEUE_URL", NOTIFY_URL)
    records = [
        {
            "messageId": f"n{i}",
            "receiptHandle": f"receipt-{i}",
            "body": "{}",
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:notify",
            "awsRegion": "us-east-1",
        }
        for i in range(2)
    ]
    context = LambdaContext("orderpipe-test-notify", "us-east-1", 60)

    answer = handlers.notify.handler({"Records": records}, context)

    assert answer["batchItemFailures"] == [{"itemIdentifier": "n1"}]
    assert sqs.calls == [
        {"QueueUrl": NOTIFY_URL, "ReceiptHandle": "receipt-1", "VisibilityTimeout": 30}
    ]
