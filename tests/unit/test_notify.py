"""The notify service with in-memory fakes: one email per batch, never two for one file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from core.pipeline.email_report import Link
from core.pipeline.notice import FileNotice, SampleRow
from core.pipeline.notify import (
    Claim,
    Notifier,
    NotifyFailedError,
    QueueMessage,
    SendRejectedError,
    SendThrottledError,
    messages_from_event,
)

BUCKET = "orderpipe-unit-orders"


@dataclass
class LedgerItem:
    notified_at: str | None = None
    lease_until: int | None = None
    claim: str | None = None
    error: str | None = None
    message_id: str | None = None


class FakeLedger:
    """The notify fields of ledger items, with the same claim rules as the DynamoDB adapter."""

    def __init__(self, *file_ids: str) -> None:
        self.items = {f: LedgerItem() for f in file_ids}
        self.broken: set[str] = set()

    def claim(self, file_id: str, token: str, now_s: int, lease_s: int) -> Claim:
        if file_id in self.broken:
            raise ConnectionError("ledger unreachable")
        item = self.items.get(file_id)
        if item is None:
            return Claim.MISSING
        if item.notified_at is not None:
            return Claim.DONE
        if item.lease_until is not None and item.lease_until >= now_s:
            return Claim.BUSY
        item.claim, item.lease_until = token, now_s + lease_s
        return Claim.TAKEN

    def confirm(self, file_id: str, token: str, notified_at: str, message_id: str) -> None:
        item = self.items[file_id]
        item.notified_at, item.message_id = notified_at, message_id
        item.claim = item.lease_until = item.error = None

    def release(self, file_id: str, token: str, error: str) -> None:
        item = self.items[file_id]
        if item.claim == token:
            item.claim = item.lease_until = None
            item.error = error


class MemoryStore:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.fail_reads = False

    def size(self, bucket: str, key: str) -> int | None:
        body = self.objects.get(key)
        return None if body is None else len(body)

    def read(self, bucket: str, key: str) -> bytes:
        if self.fail_reads:
            raise PermissionError("AccessDenied")
        return self.objects[key]

    def presign(self, bucket: str, key: str, expires_s: int) -> Link:
        return Link(f"https://example.test/{key}?expires={expires_s}", None)


@dataclass
class FakeMailer:
    sent: list[bytes] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)  # raised first, in order
    calls: int = 0

    def send(self, sender: str, recipients: Sequence[str], data: bytes) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(data)
        return f"ses-{len(self.sent)}"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make_notice(name: str, *, invalid: int = 2) -> FileNotice:
    key = f"incoming/{name}"
    return FileNotice(
        file_id=f"{BUCKET}/{key}#etag:{name}",
        bucket=BUCKET,
        key=key,
        version=f"etag:{name}",
        status="PARTIAL",
        rows=10,
        valid=10 - invalid,
        invalid=invalid,
        reasons={"total_not_number": invalid},
        rejects_key=f"rejects/{key}.csv",
        sample=[SampleRow(5, {"Order_Id": f"{name}-5"}, ["total_not_number"])],
        finished_at="2026-11-25T09:00:00.000Z",
    )


@dataclass
class World:
    ledger: FakeLedger
    store: MemoryStore
    mailer: FakeMailer
    clock: Clock
    notifier: Notifier
    notices: list[FileNotice]


def world(*names: str, outbox: Path | None = None) -> World:
    notices = [make_notice(n) for n in names]
    ledger = FakeLedger(*(n.file_id for n in notices))
    store = MemoryStore({n.rejects_key or "": f"line\n5,{n.key}\n".encode() for n in notices})
    mailer, clock = FakeMailer(), Clock()
    notifier = Notifier(
        ledger,
        store,
        mailer,
        sender="orders@x.test",
        recipients=["ops@x.test", "lead@x.test"],
        outbox_dir=str(outbox) if outbox else "",
        lease_s=30,
        clock=clock,
    )
    return World(ledger, store, mailer, clock, notifier, notices)


def msg(notice: FileNotice, message_id: str) -> QueueMessage:
    return QueueMessage(message_id, notice.to_json())


def sections(data: bytes) -> str:
    message = message_from_bytes(data, policy=policy.default)
    body = message.get_body(("plain",))  # type: ignore[attr-defined]
    return str(body.get_content())


def test_a_batch_of_notices_becomes_one_email_and_every_file_is_marked(tmp_path: Path) -> None:
    w = world("a.csv", "b.csv", outbox=tmp_path / "outbox")
    report = w.notifier.handle([msg(w.notices[0], "m1"), msg(w.notices[1], "m2")])

    assert report.failed == {}
    assert len(w.mailer.sent) == 1
    text = sections(w.mailer.sent[0])
    assert "incoming/a.csv" in text
    assert "incoming/b.csv" in text
    assert report.emails_sent == 1
    assert report.files_notified == 2
    assert report.attached == 2
    assert report.ses_message_id == "ses-1"
    for n in w.notices:
        item = w.ledger.items[n.file_id]
        assert item.notified_at == "2027-01-15T08:00:00.000Z"
        assert item.message_id == "ses-1"
        assert item.claim is None
    eml = list((tmp_path / "outbox").glob("*.eml"))
    assert len(eml) == 1
    assert eml[0].read_bytes() == w.mailer.sent[0]
    assert report.outbox_path == str(eml[0])


def test_the_same_file_twice_in_a_batch_is_one_section() -> None:
    w = world("a.csv")
    report = w.notifier.handle([msg(w.notices[0], "m1"), msg(w.notices[0], "m2")])
    assert report.failed == {}
    assert report.duplicates == 1
    assert len(w.mailer.sent) == 1
    assert sections(w.mailer.sent[0]).count("incoming/a.csv  [") == 1


def test_a_redelivered_notice_sends_no_second_email() -> None:
    w = world("a.csv")
    w.notifier.handle([msg(w.notices[0], "m1")])
    report = w.notifier.handle([msg(w.notices[0], "m1-again")])
    assert report.failed == {}
    assert report.duplicates == 1
    assert report.emails_sent == 0
    assert len(w.mailer.sent) == 1


def test_a_malformed_message_fails_alone() -> None:
    w = world("a.csv")
    report = w.notifier.handle(
        [
            QueueMessage("bad", "{not json"),
            QueueMessage("odd", '{"type":"other"}'),
            msg(w.notices[0], "good"),
        ]
    )
    assert set(report.failed) == {"bad", "odd"}
    assert "not JSON" in report.failed["bad"]
    assert "not an orderpipe file notice" in report.failed["odd"]
    assert len(w.mailer.sent) == 1


def test_throttling_past_the_clients_retries_fails_the_batch_and_releases_the_claims() -> None:
    w = world("a.csv", "b.csv")
    w.mailer.failures = [SendThrottledError("Throttling: Maximum sending rate exceeded.")]
    report = w.notifier.handle([msg(w.notices[0], "m1"), msg(w.notices[1], "m2")])
    assert set(report.failed) == {"m1", "m2"}
    assert "SES kept throttling" in report.failed["m1"]
    assert w.mailer.calls == 1  # the client retried already; the notifier adds no loop
    for n in w.notices:
        item = w.ledger.items[n.file_id]
        assert item.notified_at is None
        assert item.claim is None  # released: the retry can claim at once
        assert "Throttling" in (item.error or "")
    # SQS delivers again: this time SES accepts, one email.
    again = w.notifier.handle([msg(w.notices[0], "m1"), msg(w.notices[1], "m2")])
    assert again.failed == {}
    assert len(w.mailer.sent) == 1


def test_an_unverified_sender_is_a_clear_error_and_is_not_retried_in_the_call() -> None:
    w = world("a.csv")
    w.mailer.failures = [SendRejectedError("MessageRejected: Email address is not verified.")]
    report = w.notifier.handle([msg(w.notices[0], "m1")])
    assert w.mailer.calls == 1
    expected = "SES rejected the email from orders@x.test (is that sender verified?)"
    assert expected in report.failed["m1"]
    item = w.ledger.items[w.notices[0].file_id]
    assert item.error is not None
    assert expected in item.error
    assert "MessageRejected" in item.error


def test_a_file_claimed_by_another_sender_waits_for_its_lease() -> None:
    w = world("a.csv", "b.csv")
    busy = w.ledger.items[w.notices[0].file_id]
    busy.claim, busy.lease_until = "someone-else", int(w.clock.now) + 20
    report = w.notifier.handle([msg(w.notices[0], "m1"), msg(w.notices[1], "m2")])
    assert list(report.failed) == ["m1"]
    assert "another notify is sending" in report.failed["m1"]
    assert "incoming/a.csv" not in sections(w.mailer.sent[0])
    # The other sender died: once its lease lapses, the retry takes the file over.
    w.clock.now += 21
    again = w.notifier.handle([msg(w.notices[0], "m1")])
    assert again.failed == {}
    assert len(w.mailer.sent) == 2
    assert "incoming/a.csv" in sections(w.mailer.sent[1])


def test_a_notice_without_a_ledger_item_fails() -> None:
    w = world("a.csv")
    stray = make_notice("stray.csv")
    report = w.notifier.handle([msg(stray, "m1"), msg(w.notices[0], "m2")])
    assert list(report.failed) == ["m1"]
    assert "no ledger item" in report.failed["m1"]
    assert len(w.mailer.sent) == 1


def test_an_unreachable_ledger_fails_only_that_file() -> None:
    w = world("a.csv", "b.csv")
    w.ledger.broken.add(w.notices[1].file_id)
    report = w.notifier.handle([msg(w.notices[0], "m1"), msg(w.notices[1], "m2")])
    assert list(report.failed) == ["m2"]
    assert "ledger unreachable" in report.failed["m2"]


def test_a_rejects_read_error_fails_the_batch_and_sends_nothing() -> None:
    w = world("a.csv")
    w.store.fail_reads = True
    report = w.notifier.handle([msg(w.notices[0], "m1")])
    assert "AccessDenied" in report.failed["m1"]
    assert w.mailer.sent == []
    assert w.ledger.items[w.notices[0].file_id].claim is None


def test_an_unwritable_outbox_does_not_undo_a_sent_email(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    w = world("a.csv", outbox=blocker / "outbox")
    report = w.notifier.handle([msg(w.notices[0], "m1")])
    assert report.failed == {}
    assert report.outbox_path is None
    assert w.ledger.items[w.notices[0].file_id].notified_at is not None


def test_report_check_raises_only_for_failed_records() -> None:
    w = world("a.csv")
    report = w.notifier.handle([QueueMessage("bad", "nope"), msg(w.notices[0], "good")])

    @dataclass
    class Record:
        message_id: str

    report.check(Record("good"))
    with pytest.raises(NotifyFailedError, match="not JSON"):
        report.check(Record("bad"))


def test_messages_are_read_from_a_lambda_sqs_event() -> None:
    event: dict[str, Any] = {
        "Records": [
            {"messageId": "1", "body": "a", "eventSource": "aws:sqs"},
            {"messageId": "2", "body": "b", "eventSource": "aws:sqs"},
        ]
    }
    assert messages_from_event(event) == [QueueMessage("1", "a"), QueueMessage("2", "b")]
    assert messages_from_event({}) == []


def test_more_recipients_than_ses_takes_is_a_clear_settings_error() -> None:
    from core import bootstrap
    from core.aws.clients import Clients
    from core.aws.settings import Settings, SettingsError

    many = tuple(f"ops{i}@x.test" for i in range(51))
    with pytest.raises(SettingsError, match="ORDERPIPE_RECIPIENTS names 51 addresses"):
        bootstrap.notifier(Settings(files_table="t", sender="s@x.test", recipients=many), Clients())


class _Raw:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def stream(self, **_: Any) -> Any:
        yield self.payload


def test_ses_sends_have_one_retry_policy_the_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """A throttled send costs the client's attempts, not the client's times the notifier's."""
    import time

    from botocore.awsrequest import AWSResponse

    from core.aws.clients import Clients
    from core.pipeline.notify import SesMailer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # botocore's backoff, not waited here
    clients = Clients(region="us-east-1")
    calls: list[str] = []
    answers: list[int] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        calls.append(request.url)
        if answers and answers.pop(0) == 200:
            body = (
                b"<SendRawEmailResponse><SendRawEmailResult><MessageId>ses-1</MessageId>"
                b"</SendRawEmailResult></SendRawEmailResponse>"
            )
            return AWSResponse(request.url, 200, {}, _Raw(body))
        body = (
            b"<ErrorResponse><Error><Code>Throttling</Code><Message>rate</Message>"
            b"</Error></ErrorResponse>"
        )
        return AWSResponse(request.url, 400, {}, _Raw(body))

    clients.ses.meta.events.register("before-send.ses", answer)
    w = world("a.csv")
    w.notifier.mailer = SesMailer(clients.ses)

    report = w.notifier.handle([msg(w.notices[0], "m1")])
    # Config's retries "max_attempts" counts retries after the first call: 1 + 5 calls, where a
    # retry loop in the notifier on top made it 4 x 6 = 24.
    assert len(calls) == 1 + clients.max_attempts == 6
    assert len(slept) == clients.max_attempts
    assert "SES kept throttling" in report.failed["m1"]
    assert w.ledger.items[w.notices[0].file_id].claim is None  # released for SQS's retry

    calls.clear()
    answers[:] = [400, 200]  # one throttle, then accepted: the client's retry sends it
    again = w.notifier.handle([msg(w.notices[0], "m1")])
    assert again.failed == {}
    assert again.ses_message_id == "ses-1"
    assert len(calls) == 2
