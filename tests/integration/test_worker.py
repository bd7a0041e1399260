"""The worker drives handlers off real (emulated) SQS queues the way Lambda's event source does."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from core import bootstrap
from core.local.worker import INGEST, NOTIFY, QueueConsumer, QueueSpec, Worker, drain

pytestmark = pytest.mark.integration


class Recorder:
    """A handler that records its batches and fails the messages whose body says so."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.sleep_s = sleep_s

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event["Records"]
        self.batches.append(records)
        assert context.get_remaining_time_in_millis() > 0
        if self.sleep_s:
            time.sleep(self.sleep_s)
        failed = [r["messageId"] for r in records if json.loads(r["body"]).get("fail")]
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for batch in self.batches for r in batch]


def _send(sqs: Any, url: str, *bodies: dict[str, Any]) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))


def _count(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


@pytest.fixture(autouse=True)
def _no_test_event(stack) -> None:
    """Subscribing the bucket put an s3:TestEvent on the ingest queue; these tests start empty."""
    stack.clients.sqs.purge_queue(QueueUrl=stack.settings.ingest_queue_url)


def _dlq_url(stack: Any, name: str) -> str:
    return stack.clients.sqs.get_queue_url(QueueName=name)["QueueUrl"]


def test_drain_calls_handlers_with_lambda_shaped_events_and_deletes_successes(stack) -> None:
    sqs = stack.clients.sqs
    ingest, notify = Recorder(), Recorder()
    _send(sqs, stack.settings.ingest_queue_url, {"n": 1}, {"n": 2})
    _send(sqs, stack.settings.notify_queue_url, {"n": 3})

    report = drain(stack.clients, stack.settings, 20, handlers={INGEST: ingest, NOTIFY: notify})

    assert report.idle
    assert report.messages == 3
    assert report.failed == 0
    assert sorted(b["n"] for b in ingest.bodies) == [1, 2]
    assert [b["n"] for b in notify.bodies] == [3]
    record = ingest.batches[0][0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(":" + stack.names.ingest_queue)
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert int(record["attributes"]["SentTimestamp"]) > 0
    assert record["awsRegion"] == "us-east-1"
    assert _count(sqs, stack.settings.ingest_queue_url) == 0
    assert _count(sqs, stack.settings.notify_queue_url) == 0


def test_only_the_failed_message_is_retried(stack) -> None:
    sqs = stack.clients.sqs
    ingest = Recorder()
    _send(sqs, stack.settings.ingest_queue_url, {"n": 1}, {"n": 2, "fail": True}, {"n": 3})
    worker = Worker(
        stack.clients,
        stack.settings,
        handlers={INGEST: ingest},
        queues=[INGEST],
        failed_visibility_s=0,
    )
    consumer = worker.consumers[0]

    first = consumer.process(consumer.poll(wait_s=1))
    assert (first.received, first.failed) == (3, 1)
    again = consumer.poll(wait_s=1)

    assert [json.loads(m["Body"])["n"] for m in again] == [2]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_a_failed_message_waits_for_the_visibility_timeout_by_default(stack) -> None:
    sqs = stack.clients.sqs
    _send(sqs, stack.settings.ingest_queue_url, {"fail": True})
    worker = Worker(stack.clients, stack.settings, handlers={INGEST: Recorder()}, queues=[INGEST])
    consumer = worker.consumers[0]

    consumer.process(consumer.poll(wait_s=1))

    assert consumer.poll(wait_s=0) == []  # invisible: 12 s locally, as the queue says
    assert _count(sqs, stack.settings.ingest_queue_url) == 1


def test_a_poison_message_lands_in_the_dlq_after_five_receives(stack) -> None:
    sqs = stack.clients.sqs
    ingest = Recorder()
    _send(sqs, stack.settings.ingest_queue_url, {"n": 1, "fail": True}, {"n": 2})

    report = drain(
        stack.clients,
        stack.settings,
        30,
        handlers={INGEST: ingest, NOTIFY: Recorder()},
        retry_after_s=0,
    )

    assert report.idle
    assert [b["n"] for b in ingest.bodies].count(1) == 5
    assert [b["n"] for b in ingest.bodies].count(2) == 1
    dlq = sqs.receive_message(
        QueueUrl=_dlq_url(stack, stack.names.ingest_dlq), MaxNumberOfMessages=10
    )["Messages"]
    assert [json.loads(m["Body"])["n"] for m in dlq] == [1]


def test_a_handler_that_raises_fails_the_whole_batch(stack) -> None:
    sqs = stack.clients.sqs
    _send(sqs, stack.settings.ingest_queue_url, {"n": 1}, {"n": 2})
    calls: list[int] = []

    def broken(event: dict[str, Any], context: Any) -> None:
        calls.append(len(event["Records"]))
        raise RuntimeError("table gone")

    worker = Worker(
        stack.clients,
        stack.settings,
        handlers={INGEST: broken},
        queues=[INGEST],
        failed_visibility_s=0,
    )
    consumer = worker.consumers[0]
    result = consumer.process(consumer.poll(wait_s=1))

    assert (result.received, result.failed) == (2, 2)
    assert result.error == "RuntimeError: table gone"
    assert len(consumer.poll(wait_s=1)) == 2


def test_a_malformed_answer_fails_the_whole_batch(stack) -> None:
    sqs = stack.clients.sqs
    _send(sqs, stack.settings.ingest_queue_url, {"n": 1})

    def wrong(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"batchItemFailures": [{"itemIdentifier": "not-a-message"}]}

    worker = Worker(
        stack.clients,
        stack.settings,
        handlers={INGEST: wrong},
        queues=[INGEST],
        failed_visibility_s=0,
    )
    consumer = worker.consumers[0]
    result = consumer.process(consumer.poll(wait_s=1))

    assert result.failed == 1
    assert "unknown message" in (result.error or "")


def test_visibility_is_extended_while_a_slow_handler_runs(stack) -> None:
    sqs = stack.clients.sqs
    url = sqs.create_queue(
        QueueName=stack.names.ingest_queue + "-short", Attributes={"VisibilityTimeout": "1"}
    )["QueueUrl"]
    _send(sqs, url, {"n": 1})
    seen_meanwhile: list[int] = []

    def slow(event: dict[str, Any], context: Any) -> None:
        time.sleep(2.5)  # 2.5x the queue's visibility timeout
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", [])
        seen_meanwhile.append(len(got))

    consumer = QueueConsumer(sqs, QueueSpec("short", url, slow), region="us-east-1")
    result = consumer.process(consumer.poll(wait_s=1))

    assert result.failed == 0
    assert seen_meanwhile == [0]  # never redelivered while the handler worked
    assert _count(sqs, url) == 0


def test_the_notify_batching_window_gathers_messages_sent_apart(stack) -> None:
    sqs = stack.clients.sqs
    url = stack.settings.notify_queue_url
    consumer = QueueConsumer(
        sqs, QueueSpec(NOTIFY, url, Recorder(), batch_size=50, window_s=1.5), region="us-east-1"
    )

    def trickle() -> None:
        for n in range(3):
            _send(sqs, url, {"n": n})
            time.sleep(0.4)

    sender = threading.Thread(target=trickle)
    sender.start()
    batch = consumer.poll(wait_s=2)
    sender.join()

    assert sorted(json.loads(m["Body"])["n"] for m in batch) == [0, 1, 2]


def test_run_processes_until_stopped_and_returns_promptly(stack) -> None:
    sqs = stack.clients.sqs
    ingest, notify = Recorder(), Recorder()
    worker = Worker(
        stack.clients, stack.settings, handlers={INGEST: ingest, NOTIFY: notify}, wait_time_s=1
    )
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,))
    runner.start()
    _send(sqs, stack.settings.ingest_queue_url, {"n": 1})
    deadline = time.monotonic() + 10
    while not ingest.batches and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    runner.join(5)

    assert not runner.is_alive()
    assert [b["n"] for b in ingest.bodies] == [1]


def test_drain_times_out_with_a_clear_error(stack) -> None:
    sqs = stack.clients.sqs
    _send(sqs, stack.settings.ingest_queue_url, {"fail": True})
    with pytest.raises(TimeoutError, match="not idle after 1 s"):
        drain(stack.clients, stack.settings, 1, handlers={INGEST: Recorder(), NOTIFY: Recorder()})


def test_a_missing_handler_module_is_one_clear_error(stack) -> None:
    from core.local.worker import WorkerError, load_handler

    with pytest.raises(WorkerError, match=r"cannot load handler handlers\.nope:handler"):
        load_handler("handlers.nope:handler")


def test_drain_runs_the_real_handlers_end_to_end(stack, fixtures_dir) -> None:

    for name in ("test_data1.csv", "test_data2.csv"):
        stack.clients.s3.put_object(
            Bucket=stack.names.bucket,
            Key=f"incoming/{name}",
            Body=(fixtures_dir / name).read_bytes(),
        )

    report = drain(stack.clients, stack.settings, 60)

    assert report.idle
    assert report.failed == 0
    ledger = bootstrap.ledger(stack.settings, stack.clients)
    outcomes = {
        e.object_key: (str(e.status), e.valid, e.invalid, e.attempts, bool(e.notified_at))
        for e in ledger.recent(10)
    }
    assert outcomes == {
        "incoming/test_data1.csv": ("PARTIAL", 7, 5, 1, True),
        "incoming/test_data2.csv": ("PARTIAL", 4, 8, 1, True),
    }
    count = stack.clients.dynamodb.scan(TableName=stack.names.orders_table, Select="COUNT")
    assert count["Count"] == 11
    assert len(list(Path(stack.settings.outbox_dir).glob("*.eml"))) == 1  # one batched email


def _orders_file(rows: int) -> bytes:
    lines = ["Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total"]
    lines += [
        f"K{n:06d},Cust{n % 97},2024-05-{1 + n % 28:02d},Pending,{n % 500}.25" for n in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.slow
def test_killing_the_worker_mid_file_loses_nothing(stack, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, **stack.settings.to_env(), ORDERPIPE_STATE_DIR=str(tmp_path))
    argv = [sys.executable, "-m", "core.cli", "worker", "--endpoint-url", stack.endpoint]

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    rows = 8000
    ledger = bootstrap.ledger(stack.settings, stack.clients)
    first = start_worker()
    try:
        stack.clients.s3.put_object(
            Bucket=stack.names.bucket, Key="incoming/big.csv", Body=_orders_file(rows)
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            entries = ledger.for_key(stack.names.bucket, "incoming/big.csv")
            if entries and str(entries[0].status) == "PROCESSING":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the file never started processing")
        first.send_signal(signal.SIGKILL)  # mid-file, no chance to clean up
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()

    second = start_worker()
    try:
        deadline = time.monotonic() + 150
        entry = None
        while time.monotonic() < deadline:
            entry = ledger.for_key(stack.names.bucket, "incoming/big.csv")[0]
            if entry.finished:
                break
            time.sleep(0.2)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)

    assert entry is not None
    assert (str(entry.status), entry.valid, entry.attempts) == ("SUCCEEDED", rows, 2)
    from core.cli.demo import count_items

    # none lost, none twice (the key is Order_Id); the count scan pages past 1 MB
    assert count_items(stack.clients.dynamodb, stack.names.orders_table) == rows
