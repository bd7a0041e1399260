"""The ledger: one item per object version in the files table, the pipeline's idempotency key.

A file is claimed with a conditional write before any effect happens, so a duplicate event for
a finished version is acknowledged and skipped, and a PROCESSING claim whose lease ran out (the
earlier attempt died) may be taken over. Every later write is conditioned on the claim's token,
so an attempt that was taken over can never overwrite the outcome of the one that replaced it.

Versions of one object key are processed one at a time: the claimant also holds a key lock (an
item ``lock#<bucket>/<key>`` in the same table, without ``status`` or ``object_key`` so it never
appears in the indexes). This closes the race between two uploads of the same key writing the
same orders at once; see docs/pipeline.md.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from core.aws.stack import FILES_KEY, FILES_OBJECT_INDEX, FILES_STATUS_INDEX
from core.pipeline.events import FileRef, iso_ms

RETENTION = timedelta(days=400)  # ledger items expire (TTL) long after any redelivery
LOCK_PREFIX = "lock#"


class Status(StrEnum):
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    PARTIAL = "PARTIAL"
    REJECTED = "REJECTED"
    FAILED = "FAILED"


FINISHED = frozenset({Status.SUCCEEDED, Status.PARTIAL, Status.REJECTED})
ALL_STATUSES = tuple(Status)


class Decision(StrEnum):
    NEW = "new"  # never seen: create the item
    TAKEOVER = "takeover"  # PROCESSING, lease expired: the earlier attempt died
    RETRY = "retry"  # FAILED earlier: SQS redelivered it
    RESUME = "resume"  # PROCESSING, paused by an attempt that ran short of time: go on
    REPLAY = "replay"  # finished, and an operator asked for it to run again
    DUPLICATE = "duplicate"  # finished: acknowledge and skip
    BUSY = "busy"  # another attempt holds a live lease: try again later


@dataclass(frozen=True)
class ReplayRecord:
    at: str
    reason: str


@dataclass(frozen=True)
class Checkpoint:
    """How far an unfinished file's writes got, so a later attempt resumes instead of rewriting.

    Every attempt validates the whole object version again (cheap next to the writes, and it
    rebuilds the rejects and counts exactly), which yields the same valid rows in the same
    order; ``done`` of them, from the first, are stored.
    """

    done: int  # valid rows, in file order, whose writes completed
    valid: int  # valid rows that validation found: a resume checks it finds the same
    superseded: int = 0  # of ``done``, rows not stored because a newer upload holds the order
    stamp: str = ""  # the ``ingested_at`` every row of this run carries
    taken: dict[str, int] = field(default_factory=dict)  # of ``done``: older file id → orders


@dataclass(frozen=True)
class LedgerEntry:
    file_id: str
    bucket: str
    object_key: str
    version: str
    etag: str
    status: Status
    size: int = 0
    event_time: str = ""
    rank: str = ""
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    written: int = 0  # orders this version stored (the rest of ``valid`` lost to newer files)
    superseded: int = 0  # valid rows not stored because a newer upload holds the order
    # Orders of ``written`` newer uploads took over later: taker file id → orders (set by the
    # takers through ``record_taken``, never by this file's own writes).
    taken: dict[str, int] = field(default_factory=dict)
    # Live progress while PROCESSING (kept at the end): rows validated so far, orders stored.
    rows_judged: int = 0
    rows_written: int = 0
    checkpoint: Checkpoint | None = None  # set while a file's writes are under way
    pauses: int = 0  # times an attempt stopped before its deadline to let the next resume
    paused_at: str | None = None  # set while paused, until the next attempt claims it
    error: str | None = None
    last_error: str | None = None
    attempts: int = 0
    received_at: str = ""
    started_at: str = ""
    finished_at: str | None = None
    updated_at: str = ""
    lease_until: int | None = None
    notified_at: str | None = None
    replays: int = 0
    replay_log: tuple[ReplayRecord, ...] = ()
    replay_id: str | None = None
    claim_token: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def seconds(self) -> float | None:
        """Processing time of the last attempt, when it has finished."""
        if not self.finished_at or not self.started_at:
            return None
        return (_parse(self.finished_at) - _parse(self.started_at)).total_seconds()


@dataclass(frozen=True)
class FileOutcome:
    status: Status
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    reasons: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None
    written: int = 0
    superseded: int = 0


@dataclass(frozen=True)
class Claim:
    """What ``claim`` decided; ``token`` is set when this attempt now owns the file."""

    decision: Decision
    entry: LedgerEntry
    token: str | None = None
    holder: str | None = None  # BUSY: the file id (or lock holder) in the way

    @property
    def owned(self) -> bool:
        return self.token is not None


class LeaseLost(RuntimeError):
    """Another attempt took the file over; this one must stop without recording anything."""


def decide(existing: LedgerEntry | None, ref: FileRef, now_epoch: float) -> Decision:
    """The claim rule, shared by every ledger implementation."""
    if existing is None:
        return Decision.NEW
    if existing.status == Status.PROCESSING:
        if existing.paused_at is not None:
            return Decision.RESUME  # paused before its deadline: no attempt holds it
        if existing.lease_until is not None and existing.lease_until > now_epoch:
            return Decision.BUSY
        return Decision.TAKEOVER
    if existing.status == Status.FAILED:
        return Decision.RETRY
    if ref.replay is not None and ref.replay.id != existing.replay_id:
        return Decision.REPLAY
    return Decision.DUPLICATE


class Ledger(Protocol):
    def claim(self, ref: FileRef, lease_s: int) -> Claim: ...
    def renew(self, claim: Claim, lease_s: int) -> None: ...
    def finish(self, claim: Claim, outcome: FileOutcome) -> LedgerEntry: ...
    def fail(self, claim: Claim, error: str) -> None: ...
    def progress(
        self,
        claim: Claim,
        *,
        rows_judged: int | None = None,
        rows_written: int | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None: ...
    def pause(self, claim: Claim, lease_s: int) -> None: ...
    def record_taken(self, older_id: str, taker_id: str, orders: int) -> None: ...
    def get(self, file_id: str) -> LedgerEntry | None: ...


def _parse(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def restarted(entry: LedgerEntry) -> LedgerEntry:
    """``entry`` with its progress cleared, as a replay's claim leaves it."""
    return replace(entry, rows_judged=0, rows_written=0, pauses=0, checkpoint=None, taken={})


def fresh_entry(ref: FileRef, now: datetime, lease_s: int, token: str) -> LedgerEntry:
    """The entry of a first claim: PROCESSING, attempt 1, leased to ``token`` for ``lease_s``."""
    stamp = iso_ms(now)
    return LedgerEntry(
        file_id=ref.file_id,
        bucket=ref.bucket,
        object_key=ref.key,
        version=ref.version_tag,
        etag=ref.etag,
        status=Status.PROCESSING,
        size=ref.size,
        event_time=ref.event_time,
        rank=ref.rank,
        attempts=1,
        received_at=stamp,
        started_at=stamp,
        updated_at=stamp,
        lease_until=int(now.timestamp()) + lease_s,
        claim_token=token,
    )


# ---- DynamoDB attribute values -------------------------------------------------------------


_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def _to_item(entry: LedgerEntry) -> dict[str, Any]:
    """The entry as a files-table item (DynamoDB attribute values, boto3's own encoding)."""
    plain = asdict(entry)
    plain[FILES_KEY] = plain.pop("file_id")
    plain["status"] = str(entry.status)
    plain["expires_at"] = int((_parse(entry.updated_at) + RETENTION).timestamp())
    if not entry.replay_log:
        del plain["replay_log"]
    del plain["taken"]  # the takers' attribute: only ``record_taken`` writes it
    # Unset attributes are left out, not null: conditions test them with attribute_exists.
    return {name: _SERIALIZER.serialize(v) for name, v in plain.items() if v is not None}


def _checkpoint_value(checkpoint: Checkpoint) -> dict[str, Any]:
    return dict(_SERIALIZER.serialize(asdict(checkpoint)))


def _s(item: Mapping[str, Any], name: str) -> str | None:
    """One string attribute of a raw item, or None when absent."""
    value = item.get(name)
    return None if value is None else str(_DESERIALIZER.deserialize(value))


def from_item(item: Mapping[str, Any]) -> LedgerEntry:
    """A files-table item (DynamoDB attribute values) as a typed entry."""
    data = {name: _DESERIALIZER.deserialize(value) for name, value in item.items()}

    def text(name: str) -> str:
        return str(data.get(name) or "")

    def number(name: str) -> int:
        return int(data.get(name) or 0)

    def maybe(name: str) -> str | None:
        value = data.get(name)
        return None if value is None else str(value)

    point = data.get("checkpoint")
    lease = data.get("lease_until")
    return LedgerEntry(
        file_id=text(FILES_KEY),
        bucket=text("bucket"),
        object_key=text("object_key"),
        version=text("version"),
        etag=text("etag"),
        status=Status(text("status") or Status.PROCESSING),
        size=number("size"),
        event_time=text("event_time"),
        rank=text("rank"),
        rows=number("rows"),
        valid=number("valid"),
        invalid=number("invalid"),
        reasons={k: int(v) for k, v in (data.get("reasons") or {}).items()},
        written=number("written"),
        superseded=number("superseded"),
        taken={str(k): int(v) for k, v in (data.get("taken") or {}).items()},
        rows_judged=number("rows_judged"),
        rows_written=number("rows_written"),
        checkpoint=Checkpoint(
            done=int(point.get("done", 0)),
            valid=int(point.get("valid", 0)),
            superseded=int(point.get("superseded", 0)),
            stamp=str(point.get("stamp", "")),
            taken={str(k): int(v) for k, v in (point.get("taken") or {}).items()},
        )
        if point
        else None,
        pauses=number("pauses"),
        paused_at=maybe("paused_at"),
        error=maybe("error"),
        last_error=maybe("last_error"),
        attempts=number("attempts"),
        received_at=text("received_at"),
        started_at=text("started_at"),
        finished_at=maybe("finished_at"),
        updated_at=text("updated_at"),
        lease_until=None if lease is None else int(lease),
        notified_at=maybe("notified_at"),
        replays=number("replays"),
        replay_log=tuple(
            ReplayRecord(at=str(r["at"]), reason=str(r.get("reason", "")))
            for r in data.get("replay_log") or ()
        ),
        replay_id=maybe("replay_id"),
        claim_token=maybe("claim_token"),
    )


def _conditional_failed(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DynamoLedger:
    """The files table through a DynamoDB client (injected; never built here)."""

    def __init__(self, client: Any, table: str, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._ddb = client
        self._table = table
        self._clock = clock

    # ---- claiming ------------------------------------------------------------------------

    def claim(self, ref: FileRef, lease_s: int) -> Claim:
        """Take the file for this attempt, or say why not. Races end in BUSY, never twice."""
        for _ in range(3):
            now = self._clock()
            existing = self.get(ref.file_id)
            decision = decide(existing, ref, now.timestamp())
            if existing is not None and decision in (Decision.DUPLICATE, Decision.BUSY):
                return Claim(decision, existing, holder=existing.file_id)
            token = uuid.uuid4().hex
            holder = self._lock_key(ref, token, now, lease_s)
            if holder is not None:
                placeholder = existing or fresh_entry(ref, now, lease_s, token)
                return Claim(Decision.BUSY, placeholder, holder=holder)
            try:
                entry = self._write_claim(
                    ref, existing=existing, decision=decision, now=now, lease_s=lease_s, token=token
                )
            except ClientError as exc:
                if _conditional_failed(exc):
                    mine = self.get(ref.file_id)
                    if mine is not None and mine.claim_token == token:
                        # Our write was applied and only its answer lost: botocore's retry met
                        # our own claim. The file is ours (its key lock too).
                        return Claim(decision, mine, token=token)
                self._unlock_key(ref, token)
                if not _conditional_failed(exc):
                    raise
                continue  # someone else moved the item between our read and write: look again
            return Claim(decision, entry, token=token)
        current = self.get(ref.file_id)
        assert current is not None  # our conditional write failed: it exists  # nosec B101
        return Claim(Decision.BUSY, current, holder=current.file_id)

    def _write_claim(
        self,
        ref: FileRef,
        *,
        existing: LedgerEntry | None,
        decision: Decision,
        now: datetime,
        lease_s: int,
        token: str,
    ) -> LedgerEntry:
        fresh = fresh_entry(ref, now, lease_s, token)
        if existing is None:
            self._ddb.put_item(
                TableName=self._table,
                Item=_to_item(fresh),
                ConditionExpression="attribute_not_exists(#k)",
                ExpressionAttributeNames={"#k": FILES_KEY},
            )
            return fresh
        stamp = iso_ms(now)
        # Any claim made for a replay message remembers its id (a FAILED file's replay is a
        # RETRY claim), so a second delivery of that message is a duplicate, not a new replay.
        replay_id = ref.replay.id if ref.replay else None
        entry = replace(
            existing,
            status=Status.PROCESSING,
            attempts=existing.attempts + 1,
            started_at=stamp,
            updated_at=stamp,
            lease_until=fresh.lease_until,
            claim_token=token,
            replay_id=replay_id or existing.replay_id,
            paused_at=None,
        )
        if decision == Decision.REPLAY:
            entry = restarted(entry)
        # Optimistic concurrency: the item must still be exactly what we decided on. An update,
        # not a put, so attributes other writers own (notify's claim and its replay marker)
        # survive a takeover or a replay.
        values: dict[str, Any] = {
            ":s": {"S": str(existing.status)},
            ":u": {"S": existing.updated_at},
            ":processing": {"S": str(Status.PROCESSING)},
            ":attempts": {"N": str(entry.attempts)},
            ":stamp": {"S": stamp},
            ":lease": {"N": str(entry.lease_until)},
            ":token": {"S": token},
        }
        update = (
            "SET #s = :processing, attempts = :attempts, started_at = :stamp, #u = :stamp,"
            " lease_until = :lease, claim_token = :token"
        )
        if entry.replay_id:
            update += ", replay_id = :replay"
            values[":replay"] = {"S": entry.replay_id}
        removes = ["paused_at"]
        if decision == Decision.REPLAY:
            # A replay writes every row again: its progress starts from nothing. Orders newer
            # uploads took will count in its own ``superseded``, so their record goes too.
            update += ", rows_judged = :zero, rows_written = :zero, pauses = :zero"
            removes.extend(["checkpoint", "taken"])
            values[":zero"] = {"N": "0"}
        update += " REMOVE " + ", ".join(removes)
        self._ddb.update_item(
            TableName=self._table,
            Key={FILES_KEY: {"S": entry.file_id}},
            UpdateExpression=update,
            ConditionExpression="#s = :s AND #u = :u",
            ExpressionAttributeNames={"#s": "status", "#u": "updated_at"},
            ExpressionAttributeValues=values,
        )
        return entry

    def _lock_key(self, ref: FileRef, token: str, now: datetime, lease_s: int) -> str | None:
        """Hold the object key for this version; return the holder's file id if taken."""
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item={
                    FILES_KEY: {"S": f"{LOCK_PREFIX}{ref.bucket}/{ref.key}"},
                    "holder": {"S": ref.file_id},
                    "claim_token": {"S": token},
                    "lease_until": {"N": str(int(now.timestamp()) + lease_s)},
                    "expires_at": {"N": str(int((now + RETENTION).timestamp()))},
                },
                ConditionExpression=(
                    "attribute_not_exists(#k) OR lease_until < :now OR holder = :me"
                ),
                ExpressionAttributeNames={"#k": FILES_KEY},
                ExpressionAttributeValues={
                    ":now": {"N": str(int(now.timestamp()))},
                    ":me": {"S": ref.file_id},
                },
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            got = self._ddb.get_item(
                TableName=self._table,
                Key={FILES_KEY: {"S": f"{LOCK_PREFIX}{ref.bucket}/{ref.key}"}},
                ConsistentRead=True,
            ).get("Item", {})
            return _s(got, "holder") or "another version"
        return None

    def _unlock_key(self, ref: FileRef, token: str) -> None:
        try:
            self._ddb.delete_item(
                TableName=self._table,
                Key={FILES_KEY: {"S": f"{LOCK_PREFIX}{ref.bucket}/{ref.key}"}},
                ConditionExpression="claim_token = :t",
                ExpressionAttributeValues={":t": {"S": token}},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    # ---- while working and at the end ----------------------------------------------------

    def _owned_update(
        self,
        claim: Claim,
        expression: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Update the entry only while this attempt still holds the claim; return the item."""
        if claim.token is None:
            raise ValueError("this attempt does not own the file")
        extra = {"ExpressionAttributeNames": names} if names else {}
        try:
            reply: dict[str, Any] = self._ddb.update_item(
                TableName=self._table,
                Key={FILES_KEY: {"S": claim.entry.file_id}},
                UpdateExpression=expression,
                ConditionExpression="claim_token = :token",
                ExpressionAttributeValues={**values, ":token": {"S": claim.token}},
                ReturnValues="ALL_NEW",
                **extra,
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                raise LeaseLost(
                    f"{claim.entry.file_id} was taken over by another attempt"
                ) from None
            raise
        return dict(reply.get("Attributes", {}))

    def renew(self, claim: Claim, lease_s: int) -> None:
        """Push the lease forward; raises LeaseLost when another attempt took over."""
        now = self._clock()
        lease = int(now.timestamp()) + lease_s
        self._owned_update(
            claim,
            "SET lease_until = :l, updated_at = :u",
            {":l": {"N": str(lease)}, ":u": {"S": iso_ms(now)}},
        )
        self._ddb.update_item(
            TableName=self._table,
            Key={FILES_KEY: {"S": f"{LOCK_PREFIX}{claim.entry.bucket}/{claim.entry.object_key}"}},
            UpdateExpression="SET lease_until = :l",
            ConditionExpression="claim_token = :token",
            ExpressionAttributeValues={":l": {"N": str(lease)}, ":token": {"S": claim.token}},
        )

    def finish(self, claim: Claim, outcome: FileOutcome) -> LedgerEntry:
        now = iso_ms(self._clock())
        values: dict[str, Any] = {
            ":s": {"S": str(outcome.status)},
            ":rows": {"N": str(outcome.rows)},
            ":valid": {"N": str(outcome.valid)},
            ":invalid": {"N": str(outcome.invalid)},
            ":reasons": {"M": {k: {"N": str(v)} for k, v in outcome.reasons.items()}},
            ":written": {"N": str(outcome.written)},
            ":superseded": {"N": str(outcome.superseded)},
            ":now": {"S": now},
            ":exp": {"N": str(int((_parse(now) + RETENTION).timestamp()))},
        }
        # ``finish_token`` names the attempt that wrote the outcome, so a retry of this very
        # write (its answer lost) can tell its own outcome from a takeover's.
        sets = (
            "SET #s = :s, #rows = :rows, valid = :valid, invalid = :invalid, reasons = :reasons,"
            " written = :written, superseded = :superseded,"
            " rows_judged = :rows, rows_written = :written,"
            " finished_at = :now, updated_at = :now, expires_at = :exp, finish_token = :token"
        )
        removes = ["lease_until", "claim_token", "last_error", "checkpoint"]
        if outcome.error is not None:
            sets += ", #error = :error"
            values[":error"] = {"S": outcome.error}
        else:
            removes.append("#error")
        try:
            item = self._owned_update(
                claim,
                f"{sets} REMOVE {', '.join(removes)}",
                values,
                {"#s": "status", "#rows": "rows", "#error": "error"},
            )
        except LeaseLost:
            item = self._own_outcome(claim, outcome)
        assert claim.token is not None  # only an owned claim gets here  # nosec B101
        self._unlock_key(_ref_of(claim.entry), claim.token)
        return from_item(item)

    def _own_outcome(self, claim: Claim, outcome: FileOutcome) -> dict[str, Any]:
        """The entry, if the outcome in it is this attempt's own; else LeaseLost stands."""
        item: dict[str, Any] = self._ddb.get_item(
            TableName=self._table, Key={FILES_KEY: {"S": claim.entry.file_id}}, ConsistentRead=True
        ).get("Item", {})
        if _s(item, "finish_token") == claim.token and _s(item, "status") == str(outcome.status):
            return item  # our write was applied; only its answer was lost
        raise LeaseLost(f"{claim.entry.file_id} was taken over by another attempt")

    def fail(self, claim: Claim, error: str) -> None:
        """Record an infrastructure failure; SQS will redeliver and RETRY picks it up."""
        now = iso_ms(self._clock())
        if claim.token is None:
            return
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={FILES_KEY: {"S": claim.entry.file_id}},
                UpdateExpression=(
                    "SET #s = :s, last_error = :e, finished_at = :now, updated_at = :now"
                    " REMOVE lease_until, claim_token"
                ),
                ConditionExpression="claim_token = :token",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":s": {"S": str(Status.FAILED)},
                    ":e": {"S": error[:2000]},
                    ":now": {"S": now},
                    ":token": {"S": claim.token},
                },
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
        self._unlock_key(_ref_of(claim.entry), claim.token)

    def progress(
        self,
        claim: Claim,
        *,
        rows_judged: int | None = None,
        rows_written: int | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        """Record how far this attempt got; raises LeaseLost when another took over.

        ``updated_at`` is left alone: it orders the status index and conditions claims, and
        progress is not a change of state.
        """
        sets: list[str] = []
        values: dict[str, Any] = {}
        if rows_judged is not None:
            sets.append("rows_judged = :judged")
            values[":judged"] = {"N": str(rows_judged)}
        if rows_written is not None:
            sets.append("rows_written = :written")
            values[":written"] = {"N": str(rows_written)}
        if checkpoint is not None:
            sets.append("checkpoint = :checkpoint")
            values[":checkpoint"] = _checkpoint_value(checkpoint)
        if sets:
            self._owned_update(claim, "SET " + ", ".join(sets), values)

    def pause(self, claim: Claim, lease_s: int) -> None:
        """Let go of a file that is not finished, its checkpoint kept, for the next attempt.

        The entry stays PROCESSING, marked ``paused_at`` and without a claim token, so the
        redelivery resumes it at once (``Decision.RESUME``). The lease, pushed ``lease_s``
        ahead on entry and key lock, only tells reconcile when a paused file nobody resumed
        is stuck; the key lock stays this file's, so no other version of the key cuts in.
        """
        now = self._clock()
        lease = int(now.timestamp()) + lease_s
        stamp = iso_ms(now)
        self._owned_update(
            claim,
            "SET lease_until = :l, updated_at = :u, paused_at = :u,"
            " pauses = if_not_exists(pauses, :zero) + :one REMOVE claim_token",
            {
                ":l": {"N": str(lease)},
                ":u": {"S": stamp},
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
            },
        )
        with contextlib.suppress(ClientError):  # a lock past its lease is free anyway
            self._ddb.update_item(
                TableName=self._table,
                Key={
                    FILES_KEY: {"S": f"{LOCK_PREFIX}{claim.entry.bucket}/{claim.entry.object_key}"}
                },
                UpdateExpression="SET lease_until = :l",
                ConditionExpression="claim_token = :token",
                ExpressionAttributeValues={":l": {"N": str(lease)}, ":token": {"S": claim.token}},
            )

    def record_taken(self, older_id: str, taker_id: str, orders: int) -> None:
        """Record on an older file's entry that ``taker_id`` took ``orders`` of its orders over.

        A map ``taken`` of taker file id → orders, set (never added to) and only ever raised:
        a retry, a resumed run or a replay of the taker writes the same or a smaller figure, so
        nothing is counted twice. Reconcile expects ``written`` less their sum under the older
        file. An older file with no entry (expired) is left alone.
        """
        key = {FILES_KEY: {"S": older_id}}
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression="SET taken = if_not_exists(taken, :empty)",
                ConditionExpression="attribute_exists(#k)",
                ExpressionAttributeNames={"#k": FILES_KEY},
                ExpressionAttributeValues={":empty": {"M": {}}},
            )
            self._ddb.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression="SET taken.#t = :n",
                ConditionExpression="attribute_not_exists(taken.#t) OR taken.#t < :n",
                ExpressionAttributeNames={"#t": taker_id},
                ExpressionAttributeValues={":n": {"N": str(orders)}},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    def record_replay(self, file_id: str, reason: str) -> None:
        """Count a replay request on the entry (``orderpipe replay`` calls this)."""
        now = iso_ms(self._clock())
        self._ddb.update_item(
            TableName=self._table,
            Key={FILES_KEY: {"S": file_id}},
            UpdateExpression=(
                "SET replays = if_not_exists(replays, :zero) + :one,"
                " replay_log = list_append(if_not_exists(replay_log, :empty), :entry)"
            ),
            ConditionExpression="attribute_exists(#k)",
            ExpressionAttributeNames={"#k": FILES_KEY},
            ExpressionAttributeValues={
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
                ":empty": {"L": []},
                ":entry": {"L": [{"M": {"at": {"S": now}, "reason": {"S": reason}}}]},
            },
        )

    # ---- queries -------------------------------------------------------------------------

    def get(self, file_id: str) -> LedgerEntry | None:
        item = self._ddb.get_item(
            TableName=self._table, Key={FILES_KEY: {"S": file_id}}, ConsistentRead=True
        ).get("Item")
        return None if item is None else from_item(item)

    def _query(self, limit: int | None = None, **kwargs: Any) -> Iterator[LedgerEntry]:
        pages = self._ddb.get_paginator("query").paginate(TableName=self._table, **kwargs)
        items = (item for page in pages for item in page.get("Items", []))
        yield from (from_item(item) for item in itertools.islice(items, limit))

    def by_status(
        self,
        status: Status | str,
        since: str | None = None,
        limit: int | None = None,
        until: str | None = None,
    ) -> list[LedgerEntry]:
        """Entries in one status, newest update first; ``since`` and ``until`` are ISO times,
        both inclusive.

        ``limit`` stops after that many, and ``until`` starts a page where the last one ended:
        a paged list reads only what it shows, however deep the page.
        """
        condition = "#s = :s"
        values: dict[str, Any] = {":s": {"S": str(Status(status))}}
        names = {"#s": "status"}
        if since or until:
            names["#u"] = "updated_at"
        if since and until:
            condition += " AND #u BETWEEN :since AND :until"
        elif since:
            condition += " AND #u >= :since"
        elif until:
            condition += " AND #u <= :until"
        if since:
            values[":since"] = {"S": since}
        if until:
            values[":until"] = {"S": until}
        page = {"Limit": limit} if limit else {}
        return list(
            self._query(
                limit,
                IndexName=FILES_STATUS_INDEX,
                KeyConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ScanIndexForward=False,
                **page,
            )
        )

    def recent(self, limit: int = 50, until: str | None = None) -> list[LedgerEntry]:
        """The latest-updated entries across all statuses, newest first (one query each);
        ``until`` (inclusive) continues from where an earlier page ended."""
        merged = [e for s in ALL_STATUSES for e in self.by_status(s, limit=limit, until=until)]
        merged.sort(key=lambda e: (e.updated_at, e.file_id), reverse=True)
        return merged[:limit]

    def for_key(self, bucket: str, key: str) -> list[LedgerEntry]:
        """Every version of one object seen by the pipeline, newest receipt first."""
        entries = self._query(
            IndexName=FILES_OBJECT_INDEX,
            KeyConditionExpression="object_key = :k",
            ExpressionAttributeValues={":k": {"S": key}},
            ScanIndexForward=False,
        )
        return [e for e in entries if e.bucket == bucket]


def _ref_of(entry: LedgerEntry) -> FileRef:
    return FileRef(
        bucket=entry.bucket,
        key=entry.object_key,
        version=entry.version,
        etag=entry.etag,
        size=entry.size,
        event_time=entry.event_time,
    )


def lease_seconds(function_timeout_s: int) -> int:
    """A claim outlives the function by a little, so only a dead attempt is taken over."""
    return function_timeout_s + 5
