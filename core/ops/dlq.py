"""Dead-letter review: list without consuming, show, redrive without loss, purge.

Listing peeks: messages are received with a short visibility timeout so paging moves on, then
all are made visible again at once (ChangeMessageVisibility 0) — nothing is consumed.

Redrive goes back to the source queue. On AWS it uses SQS's native StartMessageMoveTask (one
active task per queue; moved messages get new ids). Where that API is missing — the local
emulator answers HTTP 500 — it is detected once with a fail-fast client, and messages are moved
by receive → send → delete, always sending before deleting: a crash may duplicate a message but
never lose one, and the ledger makes a duplicate harmless.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.ops.event_messages import iso_now, objects_in_body, parse_iso
from core.pipeline.notice import FileNotice

PEEK_VISIBILITY_S = 30  # long enough to page through a DLQ, short if the process dies
MOVE_VISIBILITY_S = 60
SQS_BATCH = 10
TERMINAL_TASK_STATES = ("COMPLETED", "CANCELLED", "FAILED")

Progress = Callable[[int, int | None], None]  # moved so far, total when known


class DlqError(RuntimeError):
    """An expected problem, worded for the person at the terminal."""


@dataclass(frozen=True)
class FileMention:
    """A file a dead letter is about."""

    file_id: str
    bucket: str
    key: str
    size: int | None


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]
    message_attributes: dict[str, Any]
    # The source queue's maxReceiveCount, when known: a moved message keeps its receive count
    # and every peek adds one, so past this many the receives were looks, not attempts.
    max_receives: int | None = None

    @property
    def receive_count(self) -> int:
        """Receives by the consumer: our peeks (this one and earlier ones) not counted."""
        seen = max(int(self.attributes.get("ApproximateReceiveCount", "1")) - 1, 0)
        return seen if self.max_receives is None else min(seen, self.max_receives)

    @property
    def sent_at(self) -> str | None:
        return _epoch_ms(self.attributes.get("SentTimestamp"))

    @property
    def first_received_at(self) -> str | None:
        return _epoch_ms(self.attributes.get("ApproximateFirstReceiveTimestamp"))

    @property
    def body_bytes(self) -> int:
        return len(self.body.encode())

    def unredrivable_reason(self, queue: str) -> str | None:
        """Why this message can never succeed on ``queue`` (ingest or notify); None if it can.

        Ingest reads S3 events (replays are S3 events too) and notify reads file notices;
        any other body fails on every receive, so a redrive only sends it back here."""
        if queue == "notify":
            try:
                FileNotice.from_json(self.body)
            except ValueError:
                return "not a file notice: notify cannot read it"
            return None
        if objects_in_body(self.body):
            return None
        return "not an S3 event (nor a replay of one): ingest cannot read it"

    def files(self) -> list[FileMention]:
        """The files named by the body: an S3 event (ingest) or a file notice (notify)."""
        found = [
            FileMention(o.file_id, o.bucket, o.key, o.size) for o in objects_in_body(self.body)
        ]
        if found:
            return found
        try:
            notice = FileNotice.from_json(self.body)
        except ValueError:
            return []
        return [FileMention(notice.file_id, notice.bucket, notice.key, None)]


def _whole(raw: Any) -> int | None:
    """A redrive policy's maxReceiveCount (a number or a string), None when unreadable."""
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _epoch_ms(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        return iso_now(datetime.fromtimestamp(int(raw) / 1000, UTC))
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass
class RedriveResult:
    moved: int = 0
    failed: int = 0
    method: str = ""  # "native" (StartMessageMoveTask) or "copy" (receive → send → delete)
    dry_run: bool = False
    would_move: int = 0
    task_handle: str | None = None
    errors: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # ids that can never succeed, kept in the DLQ
    purged: list[str] = field(default_factory=list)  # ids that can never succeed, deleted


def _send_attributes(raw: dict[str, Any]) -> dict[str, Any]:
    """Received message attributes in the shape SendMessage accepts."""
    keep = ("DataType", "StringValue", "BinaryValue")
    return {name: {k: v for k, v in value.items() if k in keep} for name, value in raw.items()}


def _missing_api(exc: Exception) -> bool:
    """True when the endpoint does not implement the call (the emulator answers 500)."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return status in (500, 501) or code in ("500", "501", "NotImplemented", "InternalFailure")
    return isinstance(exc, BotoCoreError)


class DeadLetterQueue:
    """One source queue's DLQ. ``probe_sqs`` is a client with retries off, to fail fast."""

    def __init__(
        self,
        sqs: Any,
        *,
        source_url: str,
        dlq_url: str,
        probe_sqs: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_receives: int | None = None,
    ) -> None:
        self._sqs = sqs
        self.max_receives = max_receives
        self._probe = probe_sqs or sqs
        self.source_url = source_url
        self.url = dlq_url
        self._sleep = sleep
        self._arns: dict[str, str] = {}

    @classmethod
    def for_source(cls, sqs: Any, source_url: str, **kwargs: Any) -> DeadLetterQueue:
        """The DLQ named by the source queue's redrive policy."""
        try:
            attrs = sqs.get_queue_attributes(QueueUrl=source_url, AttributeNames=["RedrivePolicy"])[
                "Attributes"
            ]
        except ClientError as exc:
            raise DlqError(f"cannot read queue {source_url}: {_error_text(exc)}") from None
        policy = attrs.get("RedrivePolicy")
        if not policy:
            raise DlqError(f"queue {source_url} has no dead-letter queue")
        redrive = json.loads(policy)
        arn = redrive["deadLetterTargetArn"]
        _, _, _, _, account, name = arn.split(":", 5)
        dlq_url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        kwargs.setdefault("max_receives", _whole(redrive.get("maxReceiveCount")))
        return cls(sqs, source_url=source_url, dlq_url=dlq_url, **kwargs)

    def _arn(self, url: str) -> str:
        if url not in self._arns:
            self._arns[url] = self._sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
        return self._arns[url]

    def depth(self) -> int:
        attrs = self._sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs.get("ApproximateNumberOfMessages", 0))

    def source_visibility_s(self) -> int:
        attrs = self._sqs.get_queue_attributes(
            QueueUrl=self.source_url, AttributeNames=["VisibilityTimeout"]
        )["Attributes"]
        return int(attrs.get("VisibilityTimeout", 30))

    # ---- review ---------------------------------------------------------------------------

    def _receive(self, count: int, visibility_s: int, wait_s: int = 0) -> list[DeadLetter]:
        got = self._sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=min(count, SQS_BATCH),
            VisibilityTimeout=visibility_s,
            WaitTimeSeconds=wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return [
            DeadLetter(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m.get("Body", ""),
                attributes=dict(m.get("Attributes", {})),
                message_attributes=dict(m.get("MessageAttributes", {})),
                max_receives=self.max_receives,
            )
            for m in got.get("Messages", [])
        ]

    def _release(self, letters: list[DeadLetter]) -> None:
        for start in range(0, len(letters), SQS_BATCH):
            batch = letters[start : start + SQS_BATCH]
            self._sqs.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                    for n, m in enumerate(batch)
                ],
            )

    def peek(self, limit: int = 1000) -> list[DeadLetter]:
        """Up to ``limit`` messages, all visible again when this returns (or fails)."""
        seen: dict[str, DeadLetter] = {}
        held: list[DeadLetter] = []
        try:
            while len(seen) < limit:
                # A 1 s long poll asks every SQS server; a short poll may miss messages.
                batch = self._receive(limit - len(seen), PEEK_VISIBILITY_S, wait_s=1)
                held.extend(batch)
                fresh = [m for m in batch if m.message_id not in seen]
                if not fresh:
                    break
                for m in fresh:
                    seen[m.message_id] = m
        finally:
            self._release(held)
        return list(seen.values())

    def find(self, message_id: str) -> DeadLetter | None:
        return next((m for m in self.peek() if m.message_id == message_id), None)

    def delete(self, message_id: str) -> bool:
        """Delete the one message with this id; every other one is made visible again."""
        held: list[DeadLetter] = []
        seen: set[str] = set()
        try:
            while True:
                batch = self._receive(SQS_BATCH, MOVE_VISIBILITY_S, wait_s=1)
                fresh = [m for m in batch if m.message_id not in seen]
                if not fresh:
                    return False
                for letter in fresh:
                    seen.add(letter.message_id)
                    if letter.message_id == message_id:
                        self._sqs.delete_message(
                            QueueUrl=self.url, ReceiptHandle=letter.receipt_handle
                        )
                        held.extend(m for m in batch if m is not letter)
                        return True
                held.extend(batch)
        finally:
            self._release(held)

    # ---- redrive --------------------------------------------------------------------------

    def native_redrive_available(self) -> bool:
        """Ask once, with retries off: the emulator answers 500 where AWS has the API."""
        try:
            self._probe.list_message_move_tasks(SourceArn=self._arn(self.url), MaxResults=1)
        except (ClientError, BotoCoreError) as exc:
            if _missing_api(exc):
                return False
            raise DlqError(f"cannot check redrive tasks: {_error_text(exc)}") from None
        return True

    def redrive(
        self,
        *,
        max_messages: int | None = None,
        rate: float | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
        poll_s: float = 2.0,
        cannot_succeed: Callable[[DeadLetter], bool] | None = None,
        purge_unredrivable: bool = False,
    ) -> RedriveResult:
        """Move messages back to the source queue, send before delete.

        Messages ``cannot_succeed`` picks (bodies the handler can never read) stay in the DLQ
        (``left``), or are deleted with ``purge_unredrivable`` (``purged``)."""
        doomed: list[DeadLetter] = []
        if cannot_succeed is not None:
            doomed = [m for m in self.peek() if cannot_succeed(m)]
        if dry_run:
            depth = self.depth() - len(doomed)
            would = depth if max_messages is None else min(depth, max_messages)
            ids = [m.message_id for m in doomed]
            return RedriveResult(
                dry_run=True,
                would_move=max(would, 0),
                left=[] if purge_unredrivable else ids,
                purged=ids if purge_unredrivable else [],
            )
        # The native task moves everything; --max, or a message that must stay, needs the
        # copy path on AWS too.
        if max_messages is None and not doomed and self.native_redrive_available():
            return self._native(rate, progress, poll_s)
        return self._copy(
            max_messages, rate, progress, cannot_succeed if doomed else None, purge_unredrivable
        )

    def _native(
        self, rate: float | None, progress: Progress | None, poll_s: float
    ) -> RedriveResult:
        source_arn = self._arn(self.url)
        tasks = self._sqs.list_message_move_tasks(SourceArn=source_arn, MaxResults=1)
        running = [t for t in tasks.get("Results", []) if t.get("Status") == "RUNNING"]
        if running:
            task = running[0]
            raise DlqError(
                "a redrive is already running for this queue "
                f"({task.get('ApproximateNumberOfMessagesMoved', 0)} of "
                f"{task.get('ApproximateNumberOfMessagesToMove', '?')} moved); wait for it"
            )
        kwargs: dict[str, Any] = {
            "SourceArn": source_arn,
            "DestinationArn": self._arn(self.source_url),
        }
        if rate:
            kwargs["MaxNumberOfMessagesPerSecond"] = max(1, min(int(rate), 500))
        handle = self._sqs.start_message_move_task(**kwargs)["TaskHandle"]
        result = RedriveResult(method="native", task_handle=handle)
        while True:
            task = self._sqs.list_message_move_tasks(SourceArn=source_arn, MaxResults=1)["Results"][
                0
            ]
            result.moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
            total = task.get("ApproximateNumberOfMessagesToMove")
            if progress:
                progress(result.moved, int(total) if total is not None else None)
            if task.get("Status") in TERMINAL_TASK_STATES:
                if task.get("Status") != "COMPLETED":
                    result.errors.append(str(task.get("FailureReason") or task.get("Status")))
                return result
            self._sleep(poll_s)

    def _copy(
        self,
        max_messages: int | None,
        rate: float | None,
        progress: Progress | None,
        cannot_succeed: Callable[[DeadLetter], bool] | None = None,
        purge_unredrivable: bool = False,
    ) -> RedriveResult:
        result = RedriveResult(method="copy")
        total = self.depth() if max_messages is None else max_messages
        started = time.monotonic()
        stay: list[DeadLetter] = []  # held invisible until the end, so the loop moves on
        try:
            while max_messages is None or result.moved < max_messages:
                want = (
                    SQS_BATCH
                    if max_messages is None
                    else min(SQS_BATCH, max_messages - result.moved)
                )
                if rate:
                    want = max(1, min(want, int(rate)))
                batch = self._receive(want, MOVE_VISIBILITY_S, wait_s=1)
                if not batch:
                    break
                if cannot_succeed is not None:
                    # Asked once a message: the question may cost a call (does the object exist?).
                    doomed = [m for m in batch if cannot_succeed(m)]
                    doomed_ids = {m.message_id for m in doomed}
                    batch = [m for m in batch if m.message_id not in doomed_ids]
                    if purge_unredrivable and doomed:
                        self._delete(doomed)
                        result.purged += [m.message_id for m in doomed]
                    elif doomed:
                        stay.extend(doomed)
                        result.left += [m.message_id for m in doomed]
                    if not batch:
                        continue
                moved = self._send_to_source(batch, result)
                sent_ids = {m.message_id for m in moved}
                kept = [m for m in batch if m.message_id not in sent_ids]
                # Only what reached the source queue leaves the DLQ; the rest becomes visible again.
                if moved:
                    self._delete(moved)
                if kept:
                    self._release(kept)
                    result.failed += len(kept)
                    break
                result.moved += len(moved)
                if progress:
                    progress(result.moved, total)
                if rate:
                    ahead = result.moved / rate - (time.monotonic() - started)
                    if ahead > 0:
                        self._sleep(ahead)
        finally:
            self._release(stay)
        return result

    def _send_to_source(self, letters: list[DeadLetter], result: RedriveResult) -> list[DeadLetter]:
        """Send copies to the source queue (attributes kept); return those SQS accepted.

        Refusals are noted in ``result.errors``; the caller decides what becomes of them.
        """
        sent = self._sqs.send_message_batch(
            QueueUrl=self.source_url,
            Entries=[
                {
                    "Id": str(n),
                    "MessageBody": m.body,
                    **(
                        {"MessageAttributes": _send_attributes(m.message_attributes)}
                        if m.message_attributes
                        else {}
                    ),
                }
                for n, m in enumerate(letters)
            ],
        )
        for failure in sent.get("Failed", []):
            result.errors.append(str(failure.get("Message") or failure.get("Code")))
        ok = {int(s["Id"]) for s in sent.get("Successful", [])}
        return [m for n, m in enumerate(letters) if n in ok]

    def _delete(self, letters: list[DeadLetter]) -> None:
        self._sqs.delete_message_batch(
            QueueUrl=self.url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": m.receipt_handle} for n, m in enumerate(letters)
            ],
        )

    def redrive_ids(self, message_ids: set[str]) -> RedriveResult:
        """Move only the named messages back, send before delete; the rest stay untouched.

        Messages are held while the queue is walked, so each is seen once; those not chosen
        (and any the source queue refused) are made visible again at the end.
        """
        result = RedriveResult(method="copy")
        held: list[DeadLetter] = []
        seen: set[str] = set()
        try:
            while len(seen & message_ids) < len(message_ids):
                batch = self._receive(SQS_BATCH, MOVE_VISIBILITY_S, wait_s=1)
                fresh = [m for m in batch if m.message_id not in seen]
                held.extend(batch)
                if not fresh:
                    break
                seen.update(m.message_id for m in fresh)
                chosen = [m for m in fresh if m.message_id in message_ids]
                if not chosen:
                    continue
                moved = self._send_to_source(chosen, result)
                result.failed += len(chosen) - len(moved)
                if moved:
                    self._delete(moved)
                    gone = {m.message_id for m in moved}
                    held = [m for m in held if m.message_id not in gone]
                    result.moved += len(moved)
        finally:
            self._release(held)
        return result

    # ---- purge ----------------------------------------------------------------------------

    def purge(self, *, dry_run: bool = False) -> int:
        """Delete every message, counting exactly (PurgeQueue reports no count)."""
        if dry_run:
            return self.depth()
        deleted = 0
        while True:
            batch = self._receive(SQS_BATCH, MOVE_VISIBILITY_S, wait_s=1)
            if not batch:
                return deleted
            got = self._sqs.delete_message_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m.receipt_handle} for n, m in enumerate(batch)
                ],
            )
            deleted += len(got.get("Successful", []))


def reached_dlq_estimate(
    letter: DeadLetter, last_failure_at: str | None, visibility_s: int
) -> str | None:
    """SQS keeps no move time: the last recorded failure is when it moved, within seconds.

    A message that fails on its last receive is made visible again at once (core/pipeline/
    retry.py), so the next receive moves it. Without a recorded failure (the function crashed
    or timed out), the first receive plus one visibility timeout per allowed receive is the
    best estimate.
    """
    if last_failure_at:
        return iso_now(parse_iso(last_failure_at))
    first = letter.first_received_at
    if first is None:
        return None
    return iso_now(
        parse_iso(first) + timedelta(seconds=visibility_s * max(letter.receive_count - 1, 0))
    )


def why_unredrivable(
    letter: DeadLetter, queue: str, object_exists: Callable[[FileMention], bool]
) -> str | None:
    """Why redriving this message can never succeed on ``queue``, or None when it may.

    A body the queue's handler cannot read fails on every receive
    (``DeadLetter.unredrivable_reason``); an ingest event whose object is gone from the bucket
    fails again too. The CLI and the console both ask this.
    """
    shape = letter.unredrivable_reason(queue)
    if shape is not None or queue != "ingest":
        return shape
    if not any(object_exists(f) for f in letter.files()):
        return "its object is gone from the bucket"
    return None


class Unredrivable:
    """``why_unredrivable`` for the letters of one queue, each object looked up once.

    Only a clear "not there" (``object_exists`` says False) makes a letter hopeless. An error
    while looking does not: S3 answers 403, not 404, for a missing key to a caller without
    ``s3:ListBucket``, and a throttled look proves nothing either; such a letter stays
    redrivable.
    """

    def __init__(self, queue: str, object_exists: Callable[[FileMention], bool]) -> None:
        self.queue = queue
        self._object_exists = object_exists
        self._seen: dict[tuple[str, str], bool] = {}

    def _exists(self, mention: FileMention) -> bool:
        where = (mention.bucket, mention.key)
        if where not in self._seen:
            try:
                self._seen[where] = self._object_exists(mention)
            except (ClientError, BotoCoreError):
                self._seen[where] = True
        return self._seen[where]

    def reason(self, letter: DeadLetter) -> str | None:
        return why_unredrivable(letter, self.queue, self._exists)

    def __call__(self, letter: DeadLetter) -> bool:
        return self.reason(letter) is not None


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip()
    return str(exc)
