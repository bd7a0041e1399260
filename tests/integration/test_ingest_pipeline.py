"""The real ingest handler against a moto server over HTTP: S3 → SQS → ingest → DynamoDB/S3/SQS."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from core import bootstrap
from core.pipeline.events import FileRef, Replay, event_body, parse_body
from core.pipeline.ledger import Status
from core.pipeline.notice import FileNotice
from core.pipeline.orders_store import OrdersWriter

pytestmark = pytest.mark.integration

SEED1_VALID = {
    "Ord2301": ("Cust2301", "2023-04-19", "Pending", Decimal(1999), 1),
    "Ord2302": ("Cust2304", "2023-05-11", "Inprogress", Decimal(999), 2),
    "Ord2303": ("Cust2301", "2023-06-09", "Completed", Decimal(599), 3),
    "Ord2304": ("Cust2302", "2023-01-26", "Pending", Decimal(2299), 4),
    "Ord2305": ("Cust2303", "2023-04-11", "Inprogress", Decimal(199), 5),
    "Ord2307": ("Cust2303", "2023-01-06", "Pending", Decimal(2499), 7),
    "Ord2308": ("Cust2306", "2022-08-26", "Completed", Decimal(1111), 8),
}


def _messages(stack: Any) -> list[dict[str, Any]]:
    sqs, url = stack.clients.sqs, stack.settings.ingest_queue_url
    got: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return got
        got.extend(batch)


def _sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:queue",
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


@pytest.fixture
def run_handler(stack: Any, monkeypatch: pytest.MonkeyPatch):
    """Call handlers.ingest.handler as Lambda would, with the stack's environment."""
    for name, value in stack.settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.endpoint)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "orderpipe")
    import handlers.ingest as ingest_handler

    bootstrap.forget_warm_clients()

    def run(messages: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(ingest_handler.handler(_sqs_event(messages), LambdaContext()))

    yield run
    bootstrap.forget_warm_clients()


class LambdaContext:
    function_name = "orderpipe-test-ingest"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:function:orderpipe-test-ingest"
    memory_limit_in_mb = 1769
    aws_request_id = "test-request"
    log_group_name = "/aws/lambda/orderpipe-test-ingest"
    log_stream_name = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def _orders(stack: Any) -> dict[str, dict[str, Any]]:
    table = stack.clients.session.resource("dynamodb", endpoint_url=stack.endpoint).Table(
        stack.names.orders_table
    )
    return {item["Order_Id"]: item for item in table.scan()["Items"]}


def _notices(stack: Any) -> list[FileNotice]:
    sqs, url = stack.clients.sqs, stack.settings.notify_queue_url
    out: list[FileNotice] = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return out
        out.extend(FileNotice.from_json(m["Body"]) for m in batch)


def _upload(stack: Any, key: str, body: bytes) -> list[dict[str, Any]]:
    stack.clients.s3.put_object(Bucket=stack.names.bucket, Key=key, Body=body)
    return [m for m in _messages(stack) if parse_body(m["Body"])]


def test_seed_files_store_exact_orders_and_outcomes(stack, run_handler, fixtures_dir) -> None:
    msgs = _upload(
        stack, "incoming/seed/test_data1.csv", (fixtures_dir / "test_data1.csv").read_bytes()
    )
    msgs += _upload(
        stack, "incoming/seed/test_data2.csv", (fixtures_dir / "test_data2.csv").read_bytes()
    )
    assert len(msgs) == 2

    assert run_handler(msgs) == {"batchItemFailures": []}

    orders = _orders(stack)
    assert len(orders) == 7 + 4
    for order_id, (cust, date, status, total, line) in SEED1_VALID.items():
        item = orders[order_id]
        assert (item["Customer_Id"], item["Order_Date"], item["Order_Status"]) == (
            cust,
            date,
            status,
        )
        assert item["Order_Total"] == total
        assert item["source_line"] == line
        assert item["source_key"] == "incoming/seed/test_data1.csv"
    assert orders["Ord2313"]["Order_Total"] == Decimal(249)  # no BOM leaked into the key

    ledger = bootstrap.ledger(stack.settings, stack.clients)
    by_key = {e.object_key: e for e in ledger.recent(10)}
    first = by_key["incoming/seed/test_data1.csv"]
    second = by_key["incoming/seed/test_data2.csv"]
    assert (first.status, first.rows, first.valid, first.invalid) == (Status.PARTIAL, 12, 7, 5)
    assert first.reasons["Customer_Id.required"] == 4
    assert (second.status, second.valid, second.invalid) == (Status.PARTIAL, 4, 8)
    assert first.attempts == 1
    assert first.finished_at
    assert first.lease_until is None

    notices = {n.key: n for n in _notices(stack)}
    assert set(notices) == {"incoming/seed/test_data1.csv", "incoming/seed/test_data2.csv"}
    n1 = notices["incoming/seed/test_data1.csv"]
    assert n1.rejects_key == "rejects/seed/test_data1.csv"
    assert n1.invalid == 5
    assert [s.line for s in n1.sample] == [6, 9, 10, 11, 12]
    csv = stack.clients.s3.get_object(Bucket=stack.names.bucket, Key=n1.rejects_key)["Body"].read()
    lines = csv.decode().splitlines()
    assert lines[0].startswith("line,Order_Id")
    assert len(lines) == 1 + 5
    assert lines[1].startswith("6,Ord2306,")


def test_text_outside_ascii_and_json_quoting_is_stored_exactly(stack, run_handler) -> None:
    """The writer sends rows encoded by polars: escapes and UTF-8 must reach the table intact."""
    assert OrdersWriter(stack.clients.dynamodb_bulk, stack.names.orders_table).encodes
    body = (
        "Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
        '"Ord-""1""",Cüstomer ☃,01/02/24,pending,12.50\n'
        'Ord\\2,"tab\there, ""quoted""",2024-02-29,COMPLETED,0\n'
    )
    key = "incoming/ünï code/orders ☃.csv"
    assert run_handler(_upload(stack, key, body.encode())) == {"batchItemFailures": []}

    orders = _orders(stack)
    assert set(orders) == {'Ord-"1"', "Ord\\2"}
    first, second = orders['Ord-"1"'], orders["Ord\\2"]
    assert (first["Customer_Id"], first["Order_Date"], first["Order_Status"]) == (
        "Cüstomer ☃",
        "2024-02-01",
        "Pending",
    )
    assert first["Order_Total"] == Decimal("12.50")
    assert second["Customer_Id"] == 'tab\there, "quoted"'
    assert (second["Order_Status"], second["Order_Total"]) == ("Completed", Decimal(0))
    assert first["source_key"] == second["source_key"] == key
    assert (first["source_line"], second["source_line"]) == (2, 3)


def test_duplicate_event_writes_once_and_notifies_once(stack, run_handler, fixtures_dir) -> None:
    msgs = _upload(stack, "incoming/dup.csv", (fixtures_dir / "test_data1.csv").read_bytes())
    assert run_handler(msgs) == {"batchItemFailures": []}
    before = _orders(stack)
    # The same S3 event delivered again (at-least-once), in a later batch.
    stack.clients.sqs.send_message(
        QueueUrl=stack.settings.ingest_queue_url, MessageBody=msgs[0]["Body"]
    )
    assert run_handler(_messages(stack)) == {"batchItemFailures": []}
    assert _orders(stack) == before
    assert len(_notices(stack)) == 1
    entry = bootstrap.ledger(stack.settings, stack.clients).for_key(
        stack.names.bucket, "incoming/dup.csv"
    )[0]
    assert entry.attempts == 1
    assert entry.status == Status.PARTIAL


def test_older_upload_delivered_late_never_overwrites_newer(stack, run_handler) -> None:
    s3, bucket = stack.clients.s3, stack.names.bucket
    old = _upload(
        stack, "incoming/o.csv", b"Ord1,C1,01/01/24,Pending,10\nOrd2,C1,01/01/24,Pending,20\n"
    )
    new = _upload(stack, "incoming/o.csv", b"Ord1,C1,01/01/24,Completed,11\n")
    # Newer first, then the older event arrives late.
    assert run_handler(new) == {"batchItemFailures": []}
    assert run_handler(old) == {"batchItemFailures": []}
    orders = _orders(stack)
    assert orders["Ord1"]["Order_Status"] == "Completed"
    assert orders["Ord1"]["Order_Total"] == 11
    assert orders["Ord2"]["Order_Total"] == 20  # rows only in the older upload still land
    ledger = bootstrap.ledger(stack.settings, stack.clients)
    late = ledger.get(parse_body(old[0]["Body"])[0].file_id)
    assert late is not None
    assert (late.valid, late.written, late.superseded) == (2, 1, 1)
    # Both versions were read by their own ETag even though the key now holds the newer one.
    versions = s3.list_object_versions(Bucket=bucket, Prefix="incoming/o.csv")["Versions"]
    assert len(versions) == 2


def test_partial_batch_failure_reports_only_the_bad_message(
    stack, run_handler, fixtures_dir
) -> None:
    good = _upload(stack, "incoming/good.csv", (fixtures_dir / "test_data1.csv").read_bytes())
    ref = FileRef(
        stack.names.bucket, "incoming/missing.csv", "", "0" * 32, 10, "2026-01-01T00:00:00.000Z"
    )
    stack.clients.sqs.send_message(
        QueueUrl=stack.settings.ingest_queue_url, MessageBody=event_body([ref])
    )
    stack.clients.sqs.send_message(
        QueueUrl=stack.settings.ingest_queue_url, MessageBody='{"hello": 1}'
    )
    batch = good + _messages(stack)
    assert len(batch) == 3

    result = run_handler(batch)

    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    assert failed == {batch[1]["MessageId"], batch[2]["MessageId"]}
    ledger = bootstrap.ledger(stack.settings, stack.clients)
    gone = ledger.get(ref.file_id)
    assert gone is not None
    assert gone.status == Status.FAILED
    assert "NoSuch" in (gone.last_error or "")
    assert len(_orders(stack)) == 7


def test_crash_mid_file_then_redelivery_stores_exactly_the_file(stack, run_handler) -> None:
    rows = [f"Ord{i:05d},C{i % 7},0{1 + i % 9}/01/24,Pending,{i}.5" for i in range(600)]
    msgs = _upload(stack, "incoming/big.csv", ("\n".join(rows) + "\n").encode())
    ref = parse_body(msgs[0]["Body"])[0]

    # First attempt: the process dies after 200 orders are written (only a claim is left).
    ledger = bootstrap.ledger(stack.settings, stack.clients)
    claim = ledger.claim(ref, lease_s=1)
    writer = OrdersWriter(stack.clients.dynamodb, stack.names.orders_table, threads=4)
    first = pl.DataFrame(
        {
            "line": list(range(1, 201)),
            "Order_Id": [f"Ord{i:05d}" for i in range(200)],
            "Customer_Id": [f"C{i % 7}" for i in range(200)],
            "Order_Date": [f"2024-01-0{1 + i % 9}" for i in range(200)],
            "Order_Status": ["Pending"] * 200,
            "Order_Total": [f"{i}.5" for i in range(200)],
        }
    )
    session = writer.session(ref, "2026-01-01T00:00:00.000Z")
    session.submit(first)
    session.close()
    assert claim.owned
    assert len(_orders(stack)) == 200

    time.sleep(1.1)  # the dead attempt's lease runs out
    assert run_handler(msgs) == {"batchItemFailures": []}

    orders = _orders(stack)
    assert sorted(orders) == sorted(f"Ord{i:05d}" for i in range(600))
    assert orders["Ord00007"]["Order_Total"] == Decimal("7.5")
    entry = ledger.get(ref.file_id)
    assert entry is not None
    assert entry.status == Status.SUCCEEDED
    assert entry.attempts == 2
    assert entry.valid == 600
    count = stack.clients.dynamodb.query(
        TableName=stack.names.orders_table,
        IndexName="source-index",
        KeyConditionExpression="source_file_id = :f",
        ExpressionAttributeValues={":f": {"S": ref.file_id}},
        Select="COUNT",
    )["Count"]
    assert count == 600


def test_poison_object_marks_failed_with_error(stack) -> None:
    # Straight through the service: an object that is gone is an infrastructure failure.
    service = bootstrap.ingest(stack.settings, stack.clients)
    ref = FileRef(
        stack.names.bucket, "incoming/nope.csv", "v-missing", "e", 1, "2026-01-01T00:00:00.000Z"
    )
    with pytest.raises(Exception, match=r"gone|NoSuch"):
        service.ingest(ref)
    entry = service.ledger.get(ref.file_id)
    assert entry is not None
    assert entry.status == Status.FAILED
    assert entry.last_error


def test_replay_runs_a_finished_version_once_per_replay_id(stack, run_handler) -> None:
    msgs = _upload(stack, "incoming/r.csv", b"Ord9,C1,01/01/24,Pending,5\nbad,,,,\n")
    assert run_handler(msgs) == {"batchItemFailures": []}
    ref = parse_body(msgs[0]["Body"])[0]
    replay = Replay(id=uuid.uuid4().hex, reason="schema fixed")
    for _ in range(2):  # the replay message itself delivered twice
        stack.clients.sqs.send_message(
            QueueUrl=stack.settings.ingest_queue_url, MessageBody=event_body([ref], replay=replay)
        )
    assert run_handler(_messages(stack)) == {"batchItemFailures": []}
    entry = bootstrap.ledger(stack.settings, stack.clients).get(ref.file_id)
    assert entry is not None
    assert entry.attempts == 2
    assert entry.replay_id == replay.id
    assert len(_notices(stack)) == 2  # the first run's and the replay's
    assert (entry.status, entry.valid, entry.invalid) == (Status.PARTIAL, 1, 1)


@pytest.mark.slow
def test_object_gone_dead_letters_after_five_receives_with_its_error(stack) -> None:
    from core.local.worker import drain

    s3, bucket = stack.clients.s3, stack.names.bucket
    s3.put_object(Bucket=bucket, Key="incoming/vanished.csv", Body=b"Ord1,C1,01/01/24,Pending,1\n")
    for version in s3.list_object_versions(Bucket=bucket, Prefix="incoming/vanished.csv")[
        "Versions"
    ]:
        s3.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])

    drain(stack.clients, stack.settings, timeout_s=60, retry_after_s=0)

    dlq_url = stack.clients.sqs.get_queue_url(QueueName=stack.names.ingest_dlq)["QueueUrl"]
    dead = stack.clients.sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10)["Messages"]
    (ref,) = [r for m in dead for r in parse_body(m["Body"])]
    assert ref.key == "incoming/vanished.csv"
    entry = bootstrap.ledger(stack.settings, stack.clients).get(ref.file_id)
    assert entry is not None
    assert entry.status == Status.FAILED
    assert entry.attempts == 5
    assert "gone" in (entry.last_error or "")
