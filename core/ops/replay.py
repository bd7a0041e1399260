"""Replay: run files through the pipeline again, e.g. after fixing a schema or a rule.

Each file is re-enqueued as the S3 event S3 would send for its current version, with the
original event time (so the ordering rule never lets a replay move an order backwards) and an
``orderpipe_replay`` field naming this replay: ingest's claim lets a finished version run once
more per replay id (core/pipeline/ledger.py ``Decision.REPLAY``), so a duplicate delivery of the
replay message is still skipped. The replay is recorded on the ledger item (count, when, why)
before the message is sent: ingest rewrites the item when it claims it, and must read the new count.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from core.aws.settings import INCOMING_PREFIX
from core.ops.event_messages import ObjectVersion, iso_now, s3_event_body
from core.ops.ops_adapters import StoredObject
from core.pipeline.ledger import LedgerEntry, Status

SOURCE = "orderpipe-replay"
DEFAULT_STATUSES = (Status.FAILED, Status.REJECTED, Status.PARTIAL)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


NO_SUCH_OBJECT = "no such object in the bucket"


class ReplayError(ValueError):
    """Bad selection or options, worded for the person at the terminal."""


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``7d``, ``1w`` (a bare number is seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise ReplayError(f"not a duration: {text!r} (use e.g. 30m, 2h, 7d)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_statuses(text: str) -> tuple[Status, ...]:
    out = []
    for part in text.split(","):
        name = part.strip().upper()
        if not name:
            continue
        try:
            out.append(Status(name))
        except ValueError:
            allowed = ", ".join(s.value for s in Status)
            raise ReplayError(f"unknown status {part.strip()!r} (one of {allowed})") from None
    return tuple(out)


def incoming_key(key: str) -> str:
    """Accept ``orders.csv`` or ``incoming/orders.csv``."""
    key = key.strip()
    return key if key.startswith(INCOMING_PREFIX) else INCOMING_PREFIX + key.lstrip("/")


class LedgerPort(Protocol):
    def get(self, file_id: str) -> LedgerEntry | None: ...
    def by_status(self, status: Status | str, since: str | None = None) -> list[LedgerEntry]: ...
    def record_replay(self, file_id: str, reason: str) -> None: ...


class ObjectsPort(Protocol):
    bucket: str

    def head(self, key: str) -> StoredObject | None: ...
    def current(self, prefix: str) -> Iterable[StoredObject]: ...


class QueuePort(Protocol):
    def send(self, bodies: list[tuple[str, dict[str, str]]]) -> list[str]: ...


@dataclass(frozen=True)
class Selection:
    keys: tuple[str, ...] = ()
    statuses: tuple[Status, ...] = ()
    since: timedelta | None = None
    prefix: str | None = None
    force: bool = False


@dataclass
class ReplayItem:
    key: str
    file_id: str = ""
    status: str | None = None  # the current version's ledger status, None if never seen
    action: str = "replay"  # replay | skip
    why: str = ""
    message: str = ""
    replay_id: str = ""
    done: bool = False

    def to_json(self, dry_run: bool) -> dict[str, Any]:
        if self.action == "skip":
            action = "skipped"
        else:
            action = "would replay" if dry_run else ("replayed" if self.done else "failed")
        return {
            "key": self.key,
            "file_id": self.file_id,
            "status": self.status,
            "action": action,
            "why": self.why,
            "replay_id": self.replay_id or None,
        }


class Replayer:
    def __init__(
        self,
        ledger: LedgerPort,
        objects: ObjectsPort,
        queue: QueuePort,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ledger = ledger
        self._objects = objects
        self._queue = queue
        self._clock = clock

    # ---- which keys -----------------------------------------------------------------------

    def select(self, selection: Selection) -> list[str]:
        if not (selection.keys or selection.statuses or selection.prefix is not None):
            raise ReplayError("name the files: KEY..., --status S1,S2 or --prefix P")
        since = iso_now(self._clock() - selection.since) if selection.since is not None else None
        prefix = incoming_key(selection.prefix) if selection.prefix is not None else None
        if selection.keys:
            keys = [incoming_key(k) for k in selection.keys]
        elif selection.statuses:
            keys = [
                e.object_key
                for status in selection.statuses
                for e in self._ledger.by_status(status, since)
                if e.bucket == self._objects.bucket
            ]
        else:
            assert prefix is not None  # the selection was validated above  # nosec B101
            cutoff = self._clock() - selection.since if selection.since else None
            keys = [
                o.key
                for o in self._objects.current(prefix)
                if cutoff is None or o.last_modified >= cutoff
            ]
        if prefix is not None:
            keys = [k for k in keys if k.startswith(prefix)]
        return list(dict.fromkeys(keys))

    # ---- what to do with each -------------------------------------------------------------

    def plan(self, selection: Selection) -> list[ReplayItem]:
        items = []
        for key in self.select(selection):
            item = self._plan_one(key, selection)
            if (
                selection.statuses
                and item.action == "replay"
                and item.status not in {s.value for s in selection.statuses}
            ):
                item.action, item.why = "skip", f"current version is {item.status or 'unseen'}"
            items.append(item)
        return items

    def _plan_one(self, key: str, selection: Selection) -> ReplayItem:
        obj = self._objects.head(key)
        if obj is None:
            return ReplayItem(key, action="skip", why=NO_SUCH_OBJECT)
        bucket = self._objects.bucket
        entry = None
        for version in obj.candidate_versions():
            entry = self._ledger.get(f"{bucket}/{key}#{version}")
            if entry is not None:
                break
        if entry is None:
            first = obj.as_version(bucket)
            return ReplayItem(
                key,
                file_id=first.file_id,
                why="never processed: sent as a first delivery",
                message=s3_event_body(first, source=SOURCE),
            )
        item = ReplayItem(key, file_id=entry.file_id, status=entry.status.value)
        now = self._clock().timestamp()
        if entry.status == Status.PROCESSING and (entry.lease_until or 0) > now:
            item.action, item.why = "skip", "being processed right now"
        elif entry.status == Status.SUCCEEDED and not selection.force:
            item.action, item.why = "skip", "already SUCCEEDED (use --force to replay it anyway)"
        else:
            item.why = f"was {entry.status.value}"
        return item

    # ---- doing it ---------------------------------------------------------------------------

    def run(
        self,
        items: Sequence[ReplayItem],
        *,
        reason: str,
        dry_run: bool = False,
        progress: Callable[[ReplayItem], None] | None = None,
    ) -> list[ReplayItem]:
        for item in items:
            if item.action == "replay" and not dry_run:
                self._replay(item, reason)
            if progress:
                progress(item)
        return list(items)

    def _replay(self, item: ReplayItem, reason: str) -> None:
        if not item.message:  # a version the ledger knows: record first, then send
            entry = self._ledger.get(item.file_id)
            if entry is None:
                item.why = "vanished from the ledger"
                return
            item.replay_id = uuid.uuid4().hex
            self._ledger.record_replay(entry.file_id, reason)
            version = ObjectVersion(
                bucket=entry.bucket,
                key=entry.object_key,
                version=entry.version,
                etag=entry.etag,
                size=entry.size,
                event_time=entry.event_time or entry.received_at,
            )
            item.message = s3_event_body(
                version, source=SOURCE, replay_id=item.replay_id, replay_reason=reason
            )
        failed = self._queue.send([(item.message, {})])
        item.done = not failed
        if failed:
            item.why = "the ingest queue refused the message"
