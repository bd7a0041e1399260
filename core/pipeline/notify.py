"""Tell a person, once, which files had rejected rows: one SES email per batch of notices.

Notices arrive at least once (and ingest may, rarely, enqueue a file's notice twice), so each
file is claimed in the ledger before the email goes out: a conditional update takes a short
lease on the file's item, the send confirms it by setting ``notified_at``, and a failed send
releases it so SQS retries. A file already notified is acknowledged without a second email.
Failures are per message: a malformed notice, a file another worker is sending, or a batch whose
email could not be sent are reported back to SQS by message id; the others are consumed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError

from core.aws.settings import ENV_RECIPIENTS, Settings, SettingsError
from core.aws.signing import presign_get
from core.aws.stack import FILES_KEY
from core.pipeline.email_report import (
    DEFAULT_MAX_BYTES,
    Composed,
    Link,
    RejectsStore,
    compose,
)
from core.pipeline.notice import FileNotice
from core.pipeline.retry import retry_failed
from core.validation.schema import Schema

log = logging.getLogger(__name__)

MIN_LEASE_S = 30  # a claim outlives any send; a crashed sender's claim lapses after this
LEASE_MARGIN_S = 10
SES_MAX_RECIPIENTS = 50  # To + Cc + Bcc of one SendRawEmail


# --- what the service consumes and reports --------------------------------------------------


@dataclass(frozen=True)
class QueueMessage:
    message_id: str
    body: str


def messages_from_event(event: Mapping[str, Any]) -> list[QueueMessage]:
    """The SQS records of a Lambda event, as (message id, body) pairs."""
    return [QueueMessage(r["messageId"], r["body"]) for r in event.get("Records", [])]


def back_off_failed(
    event: Mapping[str, Any], report: BatchReport, sqs: Any, settings: Settings
) -> None:
    """Each message the batch failed comes back after its backoff by receive count
    (core/pipeline/retry.py), not after the queue's whole visibility timeout."""
    for record in event.get("Records", []):
        if record["messageId"] in report.failed:
            count = int(record.get("attributes", {}).get("ApproximateReceiveCount") or 1)
            retry_failed(
                sqs,
                settings.notify_queue_url,
                record["receiptHandle"],
                count,
                settings.retry_schedule_s,
            )


class NotifyFailedError(Exception):
    """A message of the batch was not handled; SQS will deliver it again."""


@dataclass
class BatchReport:
    failed: dict[str, str] = field(default_factory=dict)  # message id -> why
    files_notified: int = 0
    duplicates: int = 0  # messages acknowledged without an email section of their own
    emails_sent: int = 0
    attached: int = 0
    linked: int = 0
    ses_message_id: str | None = None
    outbox_path: str | None = None

    def summary(self) -> dict[str, Any]:
        """The report as plain JSON values, for the function's log line."""
        return {k: v for k, v in vars(self).items() if v not in (None, {}, 0)}

    def check(self, record: Any) -> None:
        """Raise for a record this batch failed (the shape powertools' record handler wants)."""
        reason = self.failed.get(record.message_id)
        if reason is not None:
            raise NotifyFailedError(reason)


# --- ports ----------------------------------------------------------------------------------


class Claim(Enum):
    TAKEN = "taken"  # ours: send the email
    DONE = "done"  # already notified: acknowledge, send nothing
    BUSY = "busy"  # another sender holds a live lease: retry later
    MISSING = "missing"  # no ledger item for the file


class NotifyLedger(Protocol):
    def claim(self, file_id: str, token: str, now_s: int, lease_s: int) -> Claim: ...

    def confirm(self, file_id: str, token: str, notified_at: str, message_id: str) -> None: ...

    def release(self, file_id: str, token: str, error: str) -> None: ...


class SendThrottledError(Exception):
    """SES is throttling this account; the send may be retried."""


class SendRejectedError(Exception):
    """SES refused the message (unverified sender, paused account): retrying will not help."""


class Mailer(Protocol):
    def send(self, sender: str, recipients: Sequence[str], data: bytes) -> str:
        """Send a raw MIME message; return the provider's message id."""


# --- the service ----------------------------------------------------------------------------


class Notifier:
    def __init__(
        self,
        ledger: NotifyLedger,
        store: RejectsStore,
        mailer: Mailer,
        *,
        sender: str,
        recipients: Sequence[str],
        outbox_dir: str = "",
        lease_s: int = MIN_LEASE_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        schema: Schema | None = None,
        stack_name: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger, self.store, self.mailer = ledger, store, mailer
        self.sender, self.recipients = sender, tuple(recipients)
        self.outbox_dir = outbox_dir
        self.lease_s, self.max_bytes = lease_s, max_bytes
        self.schema = schema
        self.stack_name = stack_name
        self.clock = clock

    def handle(self, messages: Sequence[QueueMessage]) -> BatchReport:
        """Send the batch's email; report per message what SQS should deliver again."""
        report = BatchReport()
        by_file = self._parse(messages, report)
        token = uuid.uuid4().hex
        claimed = self._claim(by_file, token, report)
        if not claimed:
            return report
        notices = [notice for notice, _ in claimed.values()]
        try:
            composed = self._compose(notices)
            # One send, one retry policy: botocore's standard mode in the client (``Clients``:
            # 1 + 5 calls at most, jittered backoff, a retry quota). Past it, SQS delivers again.
            ses_id = self.mailer.send(self.sender, self.recipients, composed.data)
        except Exception as exc:  # anything that stops the email: release, let SQS retry
            error = _describe_send_error(exc, self.sender)
            log.error("email for %d file(s) not sent: %s", len(notices), error)
            self._release_all(claimed, token, error)
            for file_id, (_, ids) in claimed.items():
                report.failed.update(dict.fromkeys(ids, f"{file_id}: {error}"))
            return report
        self._after_send(composed, ses_id, claimed, token, report)
        return report

    # Each step below is one paragraph of ``handle``.

    def _parse(
        self, messages: Sequence[QueueMessage], report: BatchReport
    ) -> dict[str, tuple[FileNotice, list[str]]]:
        by_file: dict[str, tuple[FileNotice, list[str]]] = {}
        for message in messages:
            try:
                notice = FileNotice.from_json(message.body)
            except ValueError as exc:
                log.error("message %s is not a file notice: %s", message.message_id, exc)
                report.failed[message.message_id] = str(exc)
                continue
            previous = by_file.get(notice.file_id)
            if previous is None:
                by_file[notice.file_id] = (notice, [message.message_id])
                continue
            # The same file twice in one batch: one section, from the newest notice.
            newest = max(previous[0], notice, key=lambda n: n.finished_at)
            by_file[notice.file_id] = (newest, [*previous[1], message.message_id])
        return by_file

    def _claim(
        self, by_file: dict[str, tuple[FileNotice, list[str]]], token: str, report: BatchReport
    ) -> dict[str, tuple[FileNotice, list[str]]]:
        claimed = {}
        now_s = int(self.clock())
        for file_id, (notice, ids) in by_file.items():
            try:
                outcome = self.ledger.claim(file_id, token, now_s, self.lease_s)
            except Exception as exc:  # the ledger is unreachable: retry this file later
                why = f"cannot claim {file_id} in the ledger: {exc}"
            else:
                if outcome is Claim.TAKEN:
                    claimed[file_id] = (notice, ids)
                    report.duplicates += len(ids) - 1
                    continue
                if outcome is Claim.DONE:
                    log.info("%s was already notified; notice acknowledged", file_id)
                    report.duplicates += len(ids)
                    continue
                why = f"{file_id}: " + (
                    "another notify is sending this file's email"
                    if outcome is Claim.BUSY
                    else "no ledger item for this file"
                )
            log.warning("%s", why)
            report.failed.update(dict.fromkeys(ids, why))
        return claimed

    def _compose(self, notices: Sequence[FileNotice]) -> Composed:
        return compose(
            notices,
            self.store,
            sender=self.sender,
            recipients=self.recipients,
            max_bytes=self.max_bytes,
            schema=self.schema,
            stack_name=self.stack_name,
        )

    def _after_send(
        self,
        composed: Composed,
        ses_id: str,
        claimed: dict[str, tuple[FileNotice, list[str]]],
        token: str,
        report: BatchReport,
    ) -> None:
        report.emails_sent, report.ses_message_id = 1, ses_id
        report.files_notified = len(claimed)
        report.attached, report.linked = len(composed.attached), len(composed.linked)
        report.outbox_path = self._write_outbox(composed)
        notified_at = _iso_now(self.clock())
        for file_id in claimed:
            try:
                self.ledger.confirm(file_id, token, notified_at, ses_id)
            except Exception:  # the email is out and its messages are consumed: no resend
                log.exception("email sent but %s not marked notified", file_id)
        log.info(
            "email %s sent for %d file(s): %d attached, %d linked",
            ses_id,
            len(claimed),
            report.attached,
            report.linked,
        )

    def _release_all(
        self, claimed: dict[str, tuple[FileNotice, list[str]]], token: str, error: str
    ) -> None:
        for file_id in claimed:
            try:
                self.ledger.release(file_id, token, error)
            except Exception:  # the lease lapses on its own
                log.exception("could not release the notify claim on %s", file_id)

    def _write_outbox(self, composed: Composed) -> str | None:
        """Keep a copy a person can open (the local stack sets an outbox folder)."""
        if not self.outbox_dir:
            return None
        try:
            folder = Path(self.outbox_dir)
            folder.mkdir(parents=True, exist_ok=True)
            stamp = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y%m%dT%H%M%S%fZ")
            path = folder / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
            partial = path.with_suffix(".eml.part")
            partial.write_bytes(composed.data)
            partial.replace(path)  # a reader never sees half a message
        except OSError as exc:
            log.warning("email sent but not written to the outbox: %s", exc)
            return None
        return str(path)


def _describe_send_error(exc: Exception, sender: str) -> str:
    if isinstance(exc, SendRejectedError):
        return f"SES rejected the email from {sender} (is that sender verified?): {exc}"
    if isinstance(exc, SendThrottledError):
        return f"SES kept throttling the send (retried by the client): {exc}"
    return f"{type(exc).__name__}: {exc}"


def _iso_now(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


# --- adapters -------------------------------------------------------------------------------


class DynamoNotifyLedger:
    """The notify fields of a ledger item: ``notified_at`` and a short claim before it."""

    # Not yet notified for the item's current processing (a replay, which sets a new
    # ``replay_id``, notifies again), and no live claim by another sender.
    _CLAIMABLE = (
        "attribute_exists(#k)"
        " AND (attribute_not_exists(notified_at) OR (attribute_exists(replay_id)"
        " AND (attribute_not_exists(notified_replay_id) OR notified_replay_id <> replay_id)))"
        " AND (attribute_not_exists(notify_lease_until) OR notify_lease_until < :now)"
    )

    def __init__(self, client: Any, table: str) -> None:
        self.client, self.table = client, table

    def claim(self, file_id: str, token: str, now_s: int, lease_s: int) -> Claim:
        try:
            self.client.update_item(
                TableName=self.table,
                Key={FILES_KEY: {"S": file_id}},
                UpdateExpression="SET notify_claim = :token, notify_lease_until = :until",
                ConditionExpression=self._CLAIMABLE,
                ExpressionAttributeNames={"#k": FILES_KEY},
                ExpressionAttributeValues={
                    ":token": {"S": token},
                    ":until": {"N": str(now_s + lease_s)},
                    ":now": {"N": str(now_s)},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            old: Mapping[str, Any] | None = exc.response.get("Item")  # type: ignore[assignment]
            if old and old.get("notify_claim", {}).get("S") == token:
                return Claim.TAKEN  # our claim was applied, only its answer lost: a retry met it
            return _why_unclaimable(old)
        return Claim.TAKEN

    def confirm(self, file_id: str, token: str, notified_at: str, message_id: str) -> None:
        self.client.update_item(
            TableName=self.table,
            Key={FILES_KEY: {"S": file_id}},
            UpdateExpression=(
                "SET notified_at = :at, notify_message_id = :mid,"
                " notified_replay_id = if_not_exists(replay_id, :none)"
                " REMOVE notify_claim, notify_lease_until, notify_error"
            ),
            ConditionExpression="attribute_exists(#k)",
            ExpressionAttributeNames={"#k": FILES_KEY},
            ExpressionAttributeValues={
                ":at": {"S": notified_at},
                ":mid": {"S": message_id},
                ":none": {"S": ""},
            },
        )

    def release(self, file_id: str, token: str, error: str) -> None:
        try:
            self.client.update_item(
                TableName=self.table,
                Key={FILES_KEY: {"S": file_id}},
                UpdateExpression="SET notify_error = :err REMOVE notify_claim, notify_lease_until",
                ConditionExpression="notify_claim = :token",
                ExpressionAttributeValues={":err": {"S": error}, ":token": {"S": token}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            # The claim was already taken over; it is not ours to release.


def _why_unclaimable(item: Mapping[str, Any] | None) -> Claim:
    if not item:
        return Claim.MISSING
    replay = item.get("replay_id", {}).get("S")
    if "notified_at" in item and (
        replay is None or item.get("notified_replay_id", {}).get("S") == replay
    ):
        return Claim.DONE
    return Claim.BUSY


class S3RejectsStore:
    def __init__(self, client: Any) -> None:
        self.client = client

    def size(self, bucket: str, key: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    def read(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def presign(self, bucket: str, key: str, expires_s: int) -> Link:
        url, expires_at = presign_get(self.client, bucket, key, expires_s)
        return Link(url, expires_at)


class SesMailer:
    _THROTTLED = ("Throttling", "ThrottlingException", "TooManyRequestsException")
    _REJECTED = (
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "AccountSendingPausedException",
        "ConfigurationSetSendingPausedException",
    )

    def __init__(self, client: Any) -> None:
        self.client = client

    def send(self, sender: str, recipients: Sequence[str], data: bytes) -> str:
        try:
            answer = self.client.send_raw_email(
                Source=sender, Destinations=list(recipients), RawMessage={"Data": data}
            )
        except ClientError as exc:
            error = exc.response["Error"]
            text = f"{error.get('Code')}: {error.get('Message', '')}"
            if error.get("Code") in self._THROTTLED:
                raise SendThrottledError(text) from exc
            if error.get("Code") in self._REJECTED:
                raise SendRejectedError(text) from exc
            raise
        return str(answer["MessageId"])


def lease_for(settings: Settings) -> int:
    """A claim must outlive the notify function's own timeout."""
    return max(MIN_LEASE_S, settings.function_timeout_s + LEASE_MARGIN_S)


def check_recipients(settings: Settings) -> None:
    """SES sends one message to at most 50 addresses: say so at start, not at the first send."""
    if len(settings.recipients) > SES_MAX_RECIPIENTS:
        raise SettingsError(
            f"{ENV_RECIPIENTS} names {len(settings.recipients)} addresses; SES sends one message"
            f" to at most {SES_MAX_RECIPIENTS}: use a distribution list"
        )
