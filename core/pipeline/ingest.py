"""The ingest service: one S3 object version in, orders + rejects + a notice + an outcome out.

For each file named by a message: claim it in the ledger → stream the object to /tmp →
validate it with the engine, spilling valid chunks to disk and rejected rows to a CSV → if the
file is accepted, write its valid orders → put the rejects CSV at ``rejects/<key>.csv`` →
enqueue a notice (PARTIAL/REJECTED) → record the outcome.

Validation finishes before the first order is written, so a file rejected half-way (too many
rows, a hostile line) stores nothing; validation costs a few percent of the writes, so nothing
is lost by not overlapping them. The notice is enqueued before the outcome is recorded: a crash
in between re-sends it on redelivery, and notify de-duplicates by file id, so it is never lost.

Data problems are outcomes (the message is consumed). Infrastructure problems mark the entry
FAILED with ``last_error`` and re-raise, so that message alone is retried and, after its last
receive, dead-lettered with the error in the ledger.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import polars as pl
from botocore.exceptions import ClientError

from core.aws.settings import INCOMING_PREFIX, REJECTS_PREFIX, Settings
from core.pipeline.events import FileRef, header_safe, iso_ms, parse_body
from core.pipeline.ledger import (
    Claim,
    Decision,
    DynamoLedger,
    FileOutcome,
    LeaseLost,
    Ledger,
    Status,
    lease_seconds,
)
from core.pipeline.notice import SAMPLE_ROWS, FileNotice, SampleRow
from core.pipeline.orders_store import OrdersWriter, WriteStats
from core.pipeline.retry import retry_failed
from core.validation.csv_out import RejectsCsv
from core.validation.engine import REASONS, validate
from core.validation.limits import Limits, human_bytes
from core.validation.rules import LINE

COPY_BUFFER = 1024 * 1024
MULTIPART_THRESHOLD = 8 * 1024 * 1024  # boto3's own default
MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8 bytes


class FileBusy(RuntimeError):
    """Another attempt holds this file (or another version of its key): retry later."""


class ObjectUnavailable(RuntimeError):
    """The object version cannot be read (gone, access denied): an infrastructure failure."""


# ---- ports (adapters below; fakes in the tests) ---------------------------------------------


class ChunkLike(Protocol):
    @property
    def valid(self) -> pl.DataFrame: ...
    @property
    def rejects(self) -> pl.DataFrame: ...


class OutcomeLike(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def rows(self) -> int: ...
    @property
    def valid(self) -> int: ...
    @property
    def invalid(self) -> int: ...
    @property
    def reasons(self) -> Mapping[str, int]: ...
    @property
    def error(self) -> str | None: ...


class Validate(Protocol):
    def __call__(
        self,
        source: Path,
        name: str,
        *,
        limits: Limits | None = ...,
        on_chunk: Callable[[Any], None] | None = ...,
    ) -> OutcomeLike: ...


class ObjectSource(Protocol):
    def download(self, ref: FileRef, into: IO[bytes]) -> None: ...


class RejectsStore(Protocol):
    def put(self, ref: FileRef, key: str, path: Path) -> None: ...


class NoticeQueue(Protocol):
    def send(self, notice: FileNotice) -> None: ...


class Session(Protocol):
    def submit(self, frame: pl.DataFrame) -> None: ...
    def close(self) -> WriteStats: ...
    def abort(self) -> None: ...


class Writer(Protocol):
    def session(self, source: FileRef, ingested_at: str) -> Session: ...


Span = Callable[[str], contextlib.AbstractContextManager[Any]]


def _no_span(name: str) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


# ---- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestResult:
    file_id: str
    key: str
    decision: Decision
    status: Status | None = None  # None when skipped as a duplicate
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    written: int = 0
    superseded: int = 0
    seconds: float = 0.0
    notified: bool = False

    @property
    def skipped(self) -> bool:
        return self.status is None


def limits_from_settings(settings: Settings) -> Limits:
    """The reader's limits as this deployment configured them (the engine never reads settings)."""
    return Limits(
        max_bytes=settings.max_file_bytes,
        max_rows=settings.max_rows,
        max_decompressed_bytes=settings.max_file_bytes,
    )


def rejects_key_for(key: str) -> str:
    """``incoming/a/b.csv`` → ``rejects/a/b.csv.csv``: the source name stays recognisable.

    A source key near S3's 1,024-byte limit would overflow it by 3 bytes: its name is then cut
    (at a character) and a hash of the whole key keeps it unique.
    """
    rel = key[len(INCOMING_PREFIX) :] if key.startswith(INCOMING_PREFIX) else key
    rejects = f"{REJECTS_PREFIX}{rel}.csv"
    if len(rejects.encode()) <= MAX_KEY_BYTES:
        return rejects
    tag = "~" + hashlib.sha256(key.encode()).hexdigest()[:16] + ".csv"
    room = MAX_KEY_BYTES - len(REJECTS_PREFIX) - len(tag)
    cut = rel.encode()[:room].decode(errors="ignore")
    return f"{REJECTS_PREFIX}{cut}{tag}"


def describe(exc: BaseException) -> str:
    """One line for ``last_error``: the AWS error code and message, or the exception."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        op = getattr(exc, "operation_name", "") or "AWS call"
        return f"{op}: {err.get('Code', 'Error')}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


# ---- the lease heartbeat -------------------------------------------------------------------


class Heartbeat:
    """Keeps the claim's lease alive while a long file is processed; notices a takeover."""

    def __init__(self, ledger: Ledger, claim: Claim, lease_s: int) -> None:
        self._ledger, self._claim, self._lease_s = ledger, claim, lease_s
        self._stop = threading.Event()
        self._lost: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ledger-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(max(1.0, self._lease_s / 3)):
            try:
                self._ledger.renew(self._claim, self._lease_s)
            except LeaseLost as exc:
                self._lost = exc
                return
            except Exception:  # noqa: S112 - a missed renewal is retried on the next beat  # nosec B112
                continue

    def check(self) -> None:
        """Cheap: raise if the background renewal found the file taken over."""
        if self._lost is not None:
            raise LeaseLost(str(self._lost))

    def confirm(self) -> None:
        """Renew now (one conditional write): before writing orders, make sure we still own."""
        self.check()
        self._ledger.renew(self._claim, self._lease_s)


# ---- collecting a validation's output ------------------------------------------------------


class ChunkSpill:
    """Valid chunks spilled to Arrow IPC files, rejects appended to one CSV, a sample kept."""

    def __init__(self, workdir: Path) -> None:
        self._dir = workdir
        self._valid: list[Path] = []
        self.rejects_path = workdir / "rejects.csv"
        self._rejects_file: IO[bytes] | None = None
        self._rejects_csv: RejectsCsv | None = None
        self.rejected_rows = 0
        self.sample: list[SampleRow] = []

    def add(self, chunk: ChunkLike) -> None:
        if chunk.valid.height:
            path = self._dir / f"valid-{len(self._valid):06d}.arrow"
            chunk.valid.write_ipc(path)
            self._valid.append(path)
        rejects = chunk.rejects
        if rejects.height:
            if self._rejects_csv is None:
                self._rejects_file = self.rejects_path.open("wb")
                columns = [c for c in rejects.columns if c not in (LINE, REASONS)]
                self._rejects_csv = RejectsCsv(self._rejects_file, columns)
            self._rejects_csv.write(rejects)
            self.rejected_rows += rejects.height
            self._keep_sample(rejects)

    def _keep_sample(self, rejects: pl.DataFrame) -> None:
        room = SAMPLE_ROWS - len(self.sample)
        if room <= 0:
            return
        values_cols = [c for c in rejects.columns if c not in (LINE, REASONS)]
        for row in rejects.head(room).iter_rows(named=True):
            reasons = str(row.get(REASONS) or "")
            self.sample.append(
                SampleRow(
                    line=int(row[LINE]),
                    values={c: row[c] for c in values_cols},
                    reasons=[r for r in reasons.split(";") if r],
                )
            )

    def close(self) -> None:
        if self._rejects_file is not None:
            self._rejects_file.close()

    def valid_frames(self) -> Iterator[pl.DataFrame]:
        for path in self._valid:
            yield pl.read_ipc(path)


# ---- the service -----------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class IngestService:
    settings: Settings
    ledger: Ledger
    objects: ObjectSource
    writer: Writer
    rejects: RejectsStore
    notices: NoticeQueue
    validate: Validate
    span: Span = _no_span
    clock: Callable[[], datetime] = _now
    tmp_dir: str | None = None
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        self.limits = limits_from_settings(self.settings)

    def handle_body(self, body: str) -> list[IngestResult]:
        """Every file a message names; raises (the message fails) on the first failure."""
        return [self.ingest(ref) for ref in parse_body(body)]

    def ingest(self, ref: FileRef) -> IngestResult:
        lease = lease_seconds(self.settings.function_timeout_s)
        claim = self.ledger.claim(ref, lease)
        if claim.decision == Decision.DUPLICATE:
            return IngestResult(ref.file_id, ref.key, claim.decision)
        if not claim.owned:
            raise FileBusy(f"{ref.file_id} is being processed by another attempt ({claim.holder})")
        started = time.monotonic()
        try:
            with Heartbeat(self.ledger, claim, lease) as beat:
                result = self._process(ref, claim, beat)
        except LeaseLost:
            raise  # the attempt that took over owns the outcome now
        except BaseException as exc:
            self.ledger.fail(claim, describe(exc))
            raise
        return replace(result, seconds=round(time.monotonic() - started, 3))

    def _process(self, ref: FileRef, claim: Claim, beat: Heartbeat) -> IngestResult:
        if ref.size > self.limits.max_bytes:
            error = (
                f"The file is {human_bytes(ref.size)}, larger than the "
                f"{human_bytes(self.limits.max_bytes)} orderpipe accepts."
            )
            return self._conclude(
                ref, claim, beat, _Verdict(Status.REJECTED, error=error), spill=None
            )
        with tempfile.TemporaryDirectory(prefix="orderpipe-", dir=self.tmp_dir) as tmp:
            workdir = Path(tmp)
            source = workdir / "object"
            with self.span("read"), source.open("wb") as sink:
                self.objects.download(ref, sink)
            beat.check()
            spill = ChunkSpill(workdir)
            with self.span("validate"):
                try:
                    outcome = self.validate(source, ref.key, limits=self.limits, on_chunk=spill.add)
                finally:
                    spill.close()
            beat.confirm()
            stats = WriteStats()
            if outcome.status == "rejected":
                verdict = _Verdict(
                    Status.REJECTED,
                    rows=outcome.rows,
                    invalid=outcome.invalid,
                    reasons=dict(outcome.reasons),
                    error=outcome.error or "The file was rejected.",
                )
            else:
                with self.span("write"):
                    stats = self._write(ref, claim, spill, beat)
                verdict = _Verdict(
                    Status.PARTIAL if outcome.invalid else Status.SUCCEEDED,
                    rows=outcome.rows,
                    valid=outcome.valid,
                    invalid=outcome.invalid,
                    reasons=dict(outcome.reasons),
                )
            return self._conclude(ref, claim, beat, verdict, spill=spill, stats=stats)

    def _write(self, ref: FileRef, claim: Claim, spill: ChunkSpill, beat: Heartbeat) -> WriteStats:
        # A redelivery writes byte-identical items (ingested_at = when the version was first
        # received); only a replay stamps its own time.
        stamp = claim.entry.received_at
        if claim.decision == Decision.REPLAY or not stamp:
            stamp = iso_ms(self.clock())
        session = self.writer.session(ref, stamp)
        try:
            for frame in spill.valid_frames():
                beat.check()
                session.submit(frame)
        except BaseException:
            session.abort()
            raise
        return session.close()

    def _conclude(
        self,
        ref: FileRef,
        claim: Claim,
        beat: Heartbeat,
        verdict: _Verdict,
        *,
        spill: ChunkSpill | None,
        stats: WriteStats | None = None,
    ) -> IngestResult:
        notified = False
        if verdict.status in (Status.PARTIAL, Status.REJECTED):
            rejects_key: str | None = None
            rejects_bytes = 0
            if spill is not None and spill.rejected_rows:
                rejects_key = rejects_key_for(ref.key)
                rejects_bytes = spill.rejects_path.stat().st_size
                self.rejects.put(ref, rejects_key, spill.rejects_path)
            beat.check()
            with self.span("notify"):
                self.notices.send(
                    FileNotice(
                        file_id=ref.file_id,
                        bucket=ref.bucket,
                        key=ref.key,
                        version=ref.version_tag,
                        status=str(verdict.status),
                        rows=verdict.rows,
                        valid=verdict.valid,
                        invalid=verdict.invalid,
                        reasons=verdict.reasons,
                        error=verdict.error,
                        rejects_key=rejects_key,
                        rejects_bytes=rejects_bytes,
                        sample=list(spill.sample) if spill else [],
                        finished_at=iso_ms(self.clock()),
                    )
                )
            notified = True
        beat.check()
        self.ledger.finish(
            claim,
            FileOutcome(
                status=verdict.status,
                rows=verdict.rows,
                valid=verdict.valid,
                invalid=verdict.invalid,
                reasons=verdict.reasons,
                error=verdict.error,
                written=stats.written if stats else 0,
                superseded=stats.superseded if stats else 0,
            ),
        )
        stats = stats or WriteStats()
        return IngestResult(
            file_id=ref.file_id,
            key=ref.key,
            decision=claim.decision,
            status=verdict.status,
            rows=verdict.rows,
            valid=verdict.valid,
            invalid=verdict.invalid,
            written=stats.written,
            superseded=stats.superseded,
            notified=notified,
        )


@dataclass(frozen=True)
class _Verdict:
    status: Status
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    error: str | None = None


# ---- AWS adapters ----------------------------------------------------------------------------


class S3Objects:
    """Reads object versions and stores rejects CSVs through an injected S3 client."""

    def __init__(self, client: Any) -> None:
        self._s3 = client

    def download(self, ref: FileRef, into: IO[bytes]) -> None:
        try:
            body = self._get(ref)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchVersion", "404"):
                raise ObjectUnavailable(
                    f"{ref.file_id} is gone ({code}); it was deleted or overwritten before ingest"
                ) from exc
            raise
        with contextlib.closing(body):
            shutil.copyfileobj(body, into, COPY_BUFFER)

    def _get(self, ref: FileRef) -> Any:
        if ref.version:
            return self._s3.get_object(Bucket=ref.bucket, Key=ref.key, VersionId=ref.version)[
                "Body"
            ]
        try:
            # Known by its ETag only (the emulator sends no versionId): read exactly that one.
            return self._s3.get_object(Bucket=ref.bucket, Key=ref.key, IfMatch=ref.etag)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412"):
                raise
        version = self._version_with_etag(ref)
        if version is None:
            raise ClientError(
                {"Error": {"Code": "NoSuchVersion", "Message": f"no version with ETag {ref.etag}"}},
                "GetObject",
            )
        return self._s3.get_object(Bucket=ref.bucket, Key=ref.key, VersionId=version)["Body"]

    def _version_with_etag(self, ref: FileRef) -> str | None:
        """A newer upload replaced the object: find the older version by its ETag."""
        pages = self._s3.get_paginator("list_object_versions").paginate(
            Bucket=ref.bucket, Prefix=ref.key
        )
        for page in pages:
            for version in page.get("Versions", []):
                if version["Key"] == ref.key and version["ETag"].strip('"') == ref.etag:
                    return str(version["VersionId"])
        return None

    def put(self, ref: FileRef, key: str, path: Path) -> None:
        extra: dict[str, Any] = {
            "ContentType": "text/csv; charset=utf-8",
            # User metadata is ASCII only: the key goes percent-encoded (header_safe).
            "Metadata": {
                "source-key": header_safe(ref.key),
                "source-version": header_safe(ref.version_tag),
            },
        }
        if path.stat().st_size < MULTIPART_THRESHOLD:
            # One PutObject: the transfer manager's setup costs more than a small file's upload.
            with path.open("rb") as body:
                self._s3.put_object(Bucket=ref.bucket, Key=key, Body=body, **extra)
            return
        self._s3.upload_file(str(path), ref.bucket, key, ExtraArgs=extra)


class SqsNotices:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._sqs, self._url = client, queue_url

    def send(self, notice: FileNotice) -> None:
        self._sqs.send_message(QueueUrl=self._url, MessageBody=notice.to_json())


# ---- composition root ------------------------------------------------------------------------


def build(settings: Settings, clients: Any, *, span: Span = _no_span) -> IngestService:
    """Wire the service for the Lambda, the local worker, tools and tests alike."""
    settings.require("bucket", "orders_table", "files_table", "notify_queue_url")
    objects = S3Objects(clients.s3)
    return IngestService(
        settings=settings,
        ledger=DynamoLedger(clients.dynamodb, settings.files_table),
        objects=objects,
        writer=OrdersWriter(
            clients.dynamodb_bulk, settings.orders_table, threads=settings.write_threads
        ),
        rejects=objects,
        notices=SqsNotices(clients.sqs, settings.notify_queue_url),
        validate=validate,
        span=span,
    )


def handle_record(
    service: IngestService, body: str, receipt_handle: str, sqs: Any, receive_count: int = 1
) -> list[IngestResult]:
    """One SQS record; a failed one (busy or broken) comes back after a backoff (``retry``).

    The backoff's first four waits (41 min on AWS) outlast a busy file's holder (its lease is
    the function timeout plus a little), so a message never dead-letters only for waiting.
    """
    try:
        return service.handle_body(body)
    except Exception:
        retry_failed(
            sqs,
            service.settings.ingest_queue_url,
            receipt_handle,
            receive_count,
            service.settings.retry_schedule_s,
        )
        raise
