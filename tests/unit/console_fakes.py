"""In-memory fakes behind the console's Backend: a ledger, a bucket, SQS (via the DLQ fake)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.console.backend import Backend, QueueDepth
from core.ops.alerts import Alert
from core.ops.dlq import DeadLetterQueue
from core.ops.ops_adapters import StoredObject
from core.ops.replay import Replayer
from core.ops.upload import Uploaded
from core.pipeline.ledger import ALL_STATUSES, LedgerEntry, ReplayRecord, Status
from tests.unit.test_dlq import DLQ, SOURCE, FakeSqs
from tests.unit.test_replay import FakeQueue

B = "orders-bucket"
T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class FakeLedger:
    entries: dict[str, LedgerEntry] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def add(
        self, key: str, status: Status = Status.SUCCEEDED, n: int = 0, **kw: Any
    ) -> LedgerEntry:
        at = iso(T0 + timedelta(seconds=n))
        values: dict[str, Any] = {
            "file_id": f"{B}/{key}#v{n}",
            "bucket": B,
            "object_key": key,
            "version": f"v{n}",
            "etag": f"e{n}",
            "status": status,
            "size": 100,
            "event_time": at,
            "received_at": at,
            "started_at": at,
            "updated_at": at,
            "attempts": 1,
        }
        values.update(kw)
        entry = LedgerEntry(**values)
        self.entries[entry.file_id] = entry
        return entry

    def get(self, file_id: str) -> LedgerEntry | None:
        return self.entries.get(file_id)

    def _newest(self, entries: list[LedgerEntry]) -> list[LedgerEntry]:
        return sorted(entries, key=lambda e: (e.updated_at, e.file_id), reverse=True)

    def recent(self, limit: int = 50, until: str | None = None) -> list[LedgerEntry]:
        self.calls.append(f"recent {limit} {until}")
        entries = [e for e in self.entries.values() if until is None or e.updated_at <= until]
        return self._newest(entries)[:limit]

    def by_status(
        self,
        status: Status | str,
        since: str | None = None,
        limit: int | None = None,
        until: str | None = None,
    ) -> list[LedgerEntry]:
        self.calls.append(f"by_status {status} {since} {limit} {until}")
        return self._newest(
            [
                e
                for e in self.entries.values()
                if e.status == status
                and (since is None or e.updated_at >= since)
                and (until is None or e.updated_at <= until)
            ]
        )[:limit]

    def for_key(self, bucket: str, key: str) -> list[LedgerEntry]:
        self.calls.append(f"for_key {key}")
        return self._newest(
            [e for e in self.entries.values() if e.bucket == bucket and e.object_key == key]
        )

    def record_replay(self, file_id: str, reason: str) -> None:
        e = self.entries[file_id]
        self.entries[file_id] = replace(
            e,
            replays=e.replays + 1,
            replay_log=(*e.replay_log, ReplayRecord("2026-12-04T10:00:00.000Z", reason)),
        )


@dataclass
class FakeBucket:
    bucket: str = B
    objects: dict[str, bytes] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # key -> etag of the current version

    def lines(self, key: str) -> Iterator[bytes]:
        if key not in self.objects:
            from botocore.exceptions import ClientError

            raise ClientError(
                {"Error": {"Code": "NoSuchKey", "Message": "The specified key does not exist."}},
                "GetObject",
            )
        yield from self.objects[key].splitlines(keepends=True)

    def read(self, key: str) -> bytes:
        return self.objects[key]

    def exists(self, key: str) -> bool:
        return key in self.objects

    def last_key(self, prefix: str) -> str | None:
        return max((k for k in self.objects if k.startswith(prefix)), default=None)

    # the replayer's view of the bucket
    def head(self, key: str) -> StoredObject | None:
        if key not in self.objects:
            return None
        etag = self.versions.get(key, "e0")
        return StoredObject(key, None, etag, len(self.objects[key]), T0)

    def current(self, prefix: str) -> list[StoredObject]:
        return [o for k in sorted(self.objects) if (o := self.head(k)) and k.startswith(prefix)]


@dataclass
class FakeUploader:
    bucket: FakeBucket
    ledger: FakeLedger
    outcome: Status | None = Status.PARTIAL

    def put(self, path: Path, key: str) -> Uploaded:
        body = path.read_bytes()
        self.bucket.objects[key] = body
        n = len(self.ledger.entries) + 1000
        if self.outcome is not None:  # the "pipeline" answers at once
            self.ledger.add(key, self.outcome, n, rows=3, valid=2, invalid=1, version="")
            entry = self.ledger.entries.pop(f"{B}/{key}#v{n}")
            self.ledger.entries[f"{B}/{key}#etag:e{n}"] = replace(
                entry, file_id=f"{B}/{key}#etag:e{n}", finished_at=entry.updated_at
            )
        return Uploaded(path, B, key, "", f"e{n}", len(body), 0.0)


@dataclass
class Fakes:
    ledger: FakeLedger
    bucket: FakeBucket
    sqs: dict[str, FakeSqs]
    queue: FakeQueue
    uploader: FakeUploader
    backend: Backend
    alerts: list[Alert] = field(default_factory=list)


def make_fakes(outbox: Path | None = None) -> Fakes:
    ledger = FakeLedger()
    bucket = FakeBucket()
    sqs = {"ingest": FakeSqs(), "notify": FakeSqs()}
    queue = FakeQueue()
    uploader = FakeUploader(bucket, ledger)
    alerts: list[Alert] = []
    backend = Backend(
        bucket=B,
        where="test stack",
        ledger=ledger,
        raw_item=lambda file_id: {"last_error": "boom"} if file_id in ledger.entries else None,
        objects=bucket,
        dead_letters=lambda q: DeadLetterQueue(
            sqs[q], source_url=SOURCE, dlq_url=DLQ, sleep=lambda _: None
        ),
        replayer=Replayer(ledger, bucket, queue, clock=lambda: T0 + timedelta(hours=1)),
        uploader=uploader,
        queue_depths=lambda: [QueueDepth("ingest", 0, 0), QueueDepth("notify", 0, 0)],
        alerts=lambda: list(alerts),
        outbox=outbox,
    )
    return Fakes(ledger, bucket, sqs, queue, uploader, backend, alerts)


STATUSES = ALL_STATUSES
