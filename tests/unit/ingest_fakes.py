"""In-memory stand-ins for the ingest ports: the ledger, S3, the notify queue, DynamoDB."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import ClientError

from core.aws.settings import Settings
from core.pipeline.events import FileRef, iso_ms
from core.pipeline.ledger import (
    Checkpoint,
    Claim,
    Decision,
    FileOutcome,
    LeaseLost,
    LedgerEntry,
    Status,
    decide,
    fresh_entry,
    restarted,
)
from core.pipeline.notice import FileNotice

# The ingest tests' deployment: queues by URL, a 60 s function.
SETTINGS = Settings(
    bucket="b",
    orders_table="orders",
    files_table="files",
    notify_queue_url="http://queue/notify",
    ingest_queue_url="http://queue/ingest",
    function_timeout_s=60,
)


class FakeClock:
    def __init__(self, start: str = "2026-05-01T12:00:00+00:00") -> None:
        self.now = datetime.fromisoformat(start)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class InMemoryLedger:
    """The ledger's rules (``decide``, tokens, per-key lock) over a dict."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.items: dict[str, LedgerEntry] = {}
        self.locks: dict[str, tuple[str, str, int]] = {}  # key -> (holder, token, lease_until)
        self._mutex = threading.Lock()  # DynamoDB's conditional writes are atomic; so is this
        self.progress_log: list[tuple[int, int, Checkpoint | None]] = []

    def claim(self, ref: FileRef, lease_s: int) -> Claim:
        with self._mutex:
            return self._claim(ref, lease_s)

    def _claim(self, ref: FileRef, lease_s: int) -> Claim:
        now = self.clock()
        existing = self.items.get(ref.file_id)
        decision = decide(existing, ref, now.timestamp())
        if existing is not None and decision in (Decision.DUPLICATE, Decision.BUSY):
            return Claim(decision, existing, holder=existing.file_id)
        lock = self.locks.get(f"{ref.bucket}/{ref.key}")
        token = uuid.uuid4().hex
        if lock and lock[0] != ref.file_id and lock[2] >= int(now.timestamp()):
            placeholder = existing or fresh_entry(ref, now, lease_s, token)
            return Claim(Decision.BUSY, placeholder, holder=lock[0])
        lease = int(now.timestamp()) + lease_s
        self.locks[f"{ref.bucket}/{ref.key}"] = (ref.file_id, token, lease)
        stamp = iso_ms(now)
        if existing is None:
            entry = fresh_entry(ref, now, lease_s, token)
        else:
            entry = replace(
                existing,
                status=Status.PROCESSING,
                attempts=existing.attempts + 1,
                started_at=stamp,
                updated_at=stamp,
                lease_until=lease,
                claim_token=token,
                replay_id=ref.replay.id if ref.replay else existing.replay_id,
                paused_at=None,
            )
            if decision == Decision.REPLAY:
                entry = restarted(entry)
        self.items[ref.file_id] = entry
        return Claim(decision, entry, token=token)

    def _owned(self, claim: Claim) -> LedgerEntry:
        current = self.items[claim.entry.file_id]
        if claim.token is None or current.claim_token != claim.token:
            raise LeaseLost(f"{claim.entry.file_id} was taken over by another attempt")
        return current

    def renew(self, claim: Claim, lease_s: int) -> None:
        current = self._owned(claim)
        now = self.clock()
        lease = int(now.timestamp()) + lease_s
        self.items[current.file_id] = replace(current, lease_until=lease, updated_at=iso_ms(now))
        key = f"{current.bucket}/{current.object_key}"
        holder, token, _ = self.locks[key]
        self.locks[key] = (holder, token, lease)

    def _unlock(self, entry: LedgerEntry, token: str) -> None:
        key = f"{entry.bucket}/{entry.object_key}"
        if key in self.locks and self.locks[key][1] == token:
            del self.locks[key]

    def finish(self, claim: Claim, outcome: FileOutcome) -> LedgerEntry:
        current = self._owned(claim)
        stamp = iso_ms(self.clock())
        entry = replace(
            current,
            status=outcome.status,
            rows=outcome.rows,
            valid=outcome.valid,
            invalid=outcome.invalid,
            reasons=dict(outcome.reasons),
            error=outcome.error,
            written=outcome.written,
            superseded=outcome.superseded,
            rows_judged=outcome.rows,
            rows_written=outcome.written,
            checkpoint=None,
            last_error=None,
            finished_at=stamp,
            updated_at=stamp,
            lease_until=None,
            claim_token=None,
        )
        self.items[entry.file_id] = entry
        self._unlock(entry, claim.token or "")
        return entry

    def fail(self, claim: Claim, error: str) -> None:
        try:
            current = self._owned(claim)
        except LeaseLost:
            return
        stamp = iso_ms(self.clock())
        self.items[current.file_id] = replace(
            current,
            status=Status.FAILED,
            last_error=error,
            finished_at=stamp,
            updated_at=stamp,
            lease_until=None,
            claim_token=None,
        )
        self._unlock(current, claim.token or "")

    def progress(
        self,
        claim: Claim,
        *,
        rows_judged: int | None = None,
        rows_written: int | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        with self._mutex:
            current = self._owned(claim)
            self.progress_log.append((rows_judged or 0, rows_written or 0, checkpoint))
            self.items[current.file_id] = replace(
                current,
                rows_judged=current.rows_judged if rows_judged is None else rows_judged,
                rows_written=current.rows_written if rows_written is None else rows_written,
                checkpoint=current.checkpoint if checkpoint is None else checkpoint,
            )

    def pause(self, claim: Claim, lease_s: int) -> None:
        with self._mutex:
            current = self._owned(claim)
            now = self.clock()
            lease = int(now.timestamp()) + lease_s
            self.items[current.file_id] = replace(
                current,
                lease_until=lease,
                updated_at=iso_ms(now),
                claim_token=None,
                paused_at=iso_ms(now),
                pauses=current.pauses + 1,
            )
            key = f"{current.bucket}/{current.object_key}"
            if key in self.locks and self.locks[key][1] == claim.token:
                self.locks[key] = (self.locks[key][0], self.locks[key][1], lease)

    def record_taken(self, older_id: str, taker_id: str, orders: int) -> None:
        with self._mutex:
            entry = self.items.get(older_id)
            if entry is None:
                return
            taken = dict(entry.taken)
            taken[taker_id] = max(taken.get(taker_id, 0), orders)
            self.items[older_id] = replace(entry, taken=taken)

    def get(self, file_id: str) -> LedgerEntry | None:
        return self.items.get(file_id)

    def recent(self, limit: int = 50, until: str | None = None) -> list[LedgerEntry]:
        ordered = sorted(self.items.values(), key=lambda e: (e.updated_at, e.file_id), reverse=True)
        return [e for e in ordered if until is None or e.updated_at <= until][:limit]

    def for_key(self, bucket: str, key: str) -> list[LedgerEntry]:
        found = [e for e in self.items.values() if e.bucket == bucket and e.object_key == key]
        return sorted(found, key=lambda e: e.received_at, reverse=True)

    def by_status(
        self,
        status: Status | str,
        since: str | None = None,
        limit: int | None = None,
        until: str | None = None,
    ) -> list[LedgerEntry]:
        found = [
            e
            for e in self.items.values()
            if e.status == Status(status)
            and (since is None or e.updated_at >= since)
            and (until is None or e.updated_at <= until)
        ]
        return sorted(found, key=lambda e: e.updated_at, reverse=True)[:limit]


@dataclass
class FakeObjects:
    """S3 as a dict of file_id → bytes, plus the rejects objects written."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    rejects: dict[str, bytes] = field(default_factory=dict)
    fail_with: BaseException | None = None

    def download(self, ref: FileRef, into: IO[bytes]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        if ref.file_id not in self.bodies:
            raise ClientError(
                {"Error": {"Code": "NoSuchKey", "Message": "The key does not exist"}}, "GetObject"
            )
        into.write(self.bodies[ref.file_id])

    def put(self, ref: FileRef, key: str, path: Path) -> None:
        self.rejects[key] = path.read_bytes()


class FakeSqs:
    """SQS as a handler's retry sees it: each ChangeMessageVisibility recorded; ``refuse`` makes
    SQS refuse it (a receipt handle gone stale)."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.refuse = refuse

    def change_message_visibility(self, **kw: Any) -> None:
        if self.refuse:
            raise ClientError(
                {"Error": {"Code": "ReceiptHandleIsInvalid", "Message": "gone"}},
                "ChangeMessageVisibility",
            )
        self.calls.append(kw)


@dataclass
class FakeNotices:
    sent: list[FileNotice] = field(default_factory=list)
    fail_with: BaseException | None = None

    def send(self, notice: FileNotice) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(notice)


class FakeDynamo:
    """Just enough of the DynamoDB client for the orders writer: batch get/write, conditional put.

    ``unprocessed`` lists, per BatchWriteItem call, how many items to hand back unprocessed
    (as DynamoDB does when throttled). ``calls`` records every call's size. Requests may come
    as JSON text (``EncodedRequest``), as from a writer that encodes rows with polars; they are
    handed back unprocessed as they came.
    """

    def __init__(self, unprocessed: list[int] | None = None) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.unprocessed = list(unprocessed or [])
        self.calls: list[tuple[str, int]] = []
        self.keys_per_call: list[list[str]] = []
        self.before_put: Callable[[str], None] | None = None

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((table, request),) = RequestItems.items()
        keys = [k["Order_Id"]["S"] for k in request["Keys"]]
        assert len(keys) <= 100
        assert len(set(keys)) == len(keys)
        self.calls.append(("get", len(keys)))
        found = [self.items[k] for k in keys if k in self.items]
        return {"Responses": {table: found}, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        decoded = [json.loads(r) if isinstance(r, str) else r for r in requests]
        keys = [r["PutRequest"]["Item"]["Order_Id"]["S"] for r in decoded]
        assert len(keys) <= 25
        assert len(set(keys)) == len(keys), "the same key twice in one call"
        self.calls.append(("write", len(keys)))
        self.keys_per_call.append(keys)
        left = self.unprocessed.pop(0) if self.unprocessed else 0
        done, back = decoded[: len(requests) - left], requests[len(requests) - left :]
        for r in done:
            item = r["PutRequest"]["Item"]
            self.items[item["Order_Id"]["S"]] = item
        return {"UnprocessedItems": {table: back} if back else {}}

    def put_item(self, TableName: str, Item: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        key = Item["Order_Id"]["S"]
        self.calls.append(("put", 1))
        if self.before_put is not None:
            self.before_put(key)
        values = kwargs["ExpressionAttributeValues"]
        stored = self.items.get(key)
        allowed = (
            stored is None
            or stored["source_rank"]["S"] < values[":rank"]["S"]
            or stored["source_file_id"]["S"] == values[":src"]["S"]
        )
        if not allowed:
            raise ClientError(
                {"Error": {"Code": "ConditionalCheckFailedException", "Message": "no"}}, "PutItem"
            )
        self.items[key] = Item
        if kwargs.get("ReturnValues") == "ALL_OLD" and stored is not None:
            return {"Attributes": stored}
        return {}
