"""What the console reads and does, as small ports over the core functions the CLI calls.

``Backend.for_stack`` wires the real adapters (ledger, DLQs, replayer, uploader, alerts inbox,
reconcile reports); unit tests build a ``Backend`` from in-memory fakes instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError

from core import bootstrap
from core.aws.clients import Clients
from core.aws.settings import REPORTS_PREFIX, Settings
from core.ops.alerts import Alert, AlertsError, AlertsInbox
from core.ops.dlq import DeadLetter, RedriveResult
from core.ops.upload import Uploaded
from core.pipeline.ledger import LedgerEntry, Status

QUEUE_NAMES = ("ingest", "notify")


class LedgerView(Protocol):
    def get(self, file_id: str) -> LedgerEntry | None: ...
    def recent(self, limit: int = 50, until: str | None = None) -> list[LedgerEntry]: ...
    def by_status(
        self,
        status: Status | str,
        since: str | None = None,
        limit: int | None = None,
        until: str | None = None,
    ) -> list[LedgerEntry]: ...
    def for_key(self, bucket: str, key: str) -> list[LedgerEntry]: ...


class DeadLetters(Protocol):
    url: str
    source_url: str

    def peek(self, limit: int = 1000) -> list[DeadLetter]: ...
    def find(self, message_id: str) -> DeadLetter | None: ...
    def depth(self) -> int: ...
    def source_visibility_s(self) -> int: ...
    def redrive(
        self,
        *,
        dry_run: bool = False,
        cannot_succeed: Callable[[DeadLetter], bool] | None = None,
    ) -> RedriveResult: ...
    def redrive_ids(self, message_ids: set[str]) -> RedriveResult: ...
    def purge(self, *, dry_run: bool = False) -> int: ...


class Objects(Protocol):
    """The bucket, as the console reads it: rejects CSVs and reconcile reports."""

    def lines(self, key: str) -> Iterator[bytes]: ...
    def read(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def last_key(self, prefix: str) -> str | None: ...


class Uploads(Protocol):
    def put(self, path: Path, key: str) -> Uploaded: ...


class Replays(Protocol):
    def plan(self, selection: Any) -> list[Any]: ...
    def run(self, items: Any, *, reason: str, dry_run: bool = False) -> list[Any]: ...


@dataclass(frozen=True)
class QueueDepth:
    name: str
    visible: int
    in_flight: int


@dataclass
class Backend:
    bucket: str
    where: str
    ledger: LedgerView
    raw_item: Callable[[str], dict[str, Any] | None]  # the ledger item's extra fields
    objects: Objects
    dead_letters: Callable[[str], DeadLetters]  # "ingest" | "notify"
    replayer: Replays
    uploader: Uploads
    queue_depths: Callable[[], list[QueueDepth]]
    alerts: Callable[[], list[Alert]]
    outbox: Path | None = None
    _dlqs: dict[str, DeadLetters] = field(default_factory=dict)

    def dlq(self, queue: str) -> DeadLetters:
        if queue not in QUEUE_NAMES:
            raise ValueError(f"no such queue: {queue}")
        if queue not in self._dlqs:
            self._dlqs[queue] = self.dead_letters(queue)
        return self._dlqs[queue]

    def last_reconcile(self) -> dict[str, Any] | None:
        key = self.objects.last_key(f"{REPORTS_PREFIX}reconcile/")
        if key is None:
            return None
        doc = json.loads(self.objects.read(key))
        return doc if isinstance(doc, dict) else None

    @classmethod
    def for_stack(cls, clients: Clients, settings: Settings, where: str) -> Backend:
        ledger = bootstrap.ledger(settings, clients)
        reader = bootstrap.ledger_reader(settings, clients)

        def dead_letters(queue: str) -> DeadLetters:
            source = settings.ingest_queue_url if queue == "ingest" else settings.notify_queue_url
            return bootstrap.dead_letters(clients, source)

        def raw_item(file_id: str) -> dict[str, Any] | None:
            record = reader.get(file_id)
            return None if record is None else record.raw

        def depths() -> list[QueueDepth]:
            urls = [("ingest", settings.ingest_queue_url), ("notify", settings.notify_queue_url)]
            return [_depth(clients.sqs, name, url) for name, url in urls if url]

        def alerts() -> list[Alert]:
            return AlertsInbox.for_settings(clients.sqs, settings).read(limit=50)

        return cls(
            bucket=settings.bucket,
            where=where,
            ledger=ledger,
            raw_item=raw_item,
            objects=S3Objects(clients.s3, settings.bucket),
            dead_letters=dead_letters,
            replayer=bootstrap.replayer(settings, clients),
            uploader=bootstrap.uploader(settings, clients),
            queue_depths=depths,
            alerts=alerts,
            outbox=Path(settings.outbox_dir) if settings.outbox_dir else None,
        )


def _depth(sqs: Any, name: str, url: str) -> QueueDepth:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return QueueDepth(
        name,
        int(attrs.get("ApproximateNumberOfMessages", 0)),
        int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
    )


class S3Objects:
    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def lines(self, key: str) -> Iterator[bytes]:
        """The object's lines with their ends, streamed (a rejects CSV may be large)."""
        body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            yield from body.iter_lines(keepends=True)
        finally:
            body.close()

    def read(self, key: str) -> bytes:
        return bytes(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def last_key(self, prefix: str) -> str | None:
        """The greatest key under ``prefix`` (report keys sort by time)."""
        last = None
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for item in page.get("Contents", []):
                last = item["Key"]
        return last


def alerts_or_reason(read: Callable[[], list[Alert]]) -> tuple[list[Alert], str | None]:
    """Alerts, or why there are none to show (on AWS the topic mails a person instead)."""
    try:
        return read(), None
    except AlertsError as exc:
        return [], str(exc)


def first(entries: Iterable[LedgerEntry]) -> LedgerEntry | None:
    return next(iter(entries), None)
