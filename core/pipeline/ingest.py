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

A file too big for one run is written over several (docs/pipeline.md, "Big files"). Every
attempt reads and validates the whole version again, which yields the same valid rows in the
same order and the whole file's rejects and counts; the writes go out in frames, and after
each the ledger's checkpoint says how many valid rows are stored. Before the function's
deadline the attempt stops, pauses the entry (``FilePaused``) and its message comes back
within seconds; the next attempt, or the one that takes over a crashed attempt's lapsed claim,
skips the rows already stored. Rejects and the one notice come from the attempt that finishes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, Protocol
from urllib.parse import quote

import polars as pl
from botocore.exceptions import ClientError

from core.aws.settings import INCOMING_PREFIX, MIB, REJECTS_PREFIX, Settings
from core.aws.stack import MAX_RECEIVE_COUNT
from core.pipeline.events import FileRef, header_safe, iso_ms, parse_body
from core.pipeline.ledger import (
    Checkpoint,
    Claim,
    Decision,
    FileOutcome,
    LeaseLost,
    Ledger,
    Status,
    lease_seconds,
)
from core.pipeline.notice import SAMPLE_ROWS, FileNotice, SampleRow
from core.pipeline.orders_store import BATCH_GET_MAX, WriteStats
from core.pipeline.retry import retry_after, retry_failed
from core.validation.csv_out import RejectsCsv
from core.validation.engine import REASONS
from core.validation.limits import Limits, human_bytes
from core.validation.rules import LINE
from core.validation.verdict import verdict_of

COPY_BUFFER = 1024 * 1024
MULTIPART_THRESHOLD = 8 * 1024 * 1024  # boto3's own default
MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8 bytes
# S3 refuses a PUT whose user metadata (names + values, UTF-8 bytes) passes 2 KB
# (MetadataTooLarge); moto does not check. Read as 2,000 bytes, the stricter reading.
MAX_METADATA_BYTES = 2_000
# A paused file's message comes back after this long: the next attempt can start at once.
PAUSE_RETRY_S = 1
SPILL_COMPRESSION: Final = "zstd"  # 0.03-0.42 of the CSV, against 1.7-1.9 uncompressed
TMP_RESERVE_BYTES = 64 * MIB  # /tmp kept free for what else writes there (polars, the runtime)
PROGRESS_EVERY_S = 1.0  # the ledger hears of progress at most this often (and at a pause)
# Writing in frames: each frame is sized to take about a twentieth of the function's time
# (within these bounds; the barrier between frames costs a few percent of a 2 s frame), and
# the attempt stops when the frame in flight and the next one might not finish before the
# deadline less a margin (what pausing costs: three small writes).
FRAME_SHARE = 20
FRAME_MIN_S, FRAME_MAX_S = 0.25, 2.0  # progress and checkpoints at least every 2 s
STOP_MARGIN_SHARE = 50
STOP_MARGIN_MIN_S, STOP_MARGIN_MAX_S = 0.5, 10.0
FRAME_MIN_ROWS = 100  # one slice of the writer: a frame is never smaller
FIRST_RATE = 1_000  # rows/s assumed until a frame has been measured (a cold, slow table)


class RetryLater(RuntimeError):
    """The message must come back later; nothing failed (no error alarm is due)."""


class FileBusy(RetryLater):
    """Another attempt holds this file (or another version of its key): retry later."""


class FilePaused(RetryLater):
    """This attempt stopped before its deadline; the file resumes on the next delivery."""


class OutOfTime(RuntimeError):
    """An attempt could not store a single frame in its time: an infrastructure failure."""


class OutOfRuns(RuntimeError):
    """The queue's last delivery ran out of time too: the file needs more runs than it has."""


class ScratchFull(RuntimeError):
    """The object and what is kept of it do not fit in the function's /tmp."""


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
    @property
    def committed_rows(self) -> int: ...
    @property
    def stats(self) -> WriteStats: ...
    def submit(self, frame: pl.DataFrame) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> WriteStats: ...
    def abort(self) -> None: ...


class Writer(Protocol):
    def session(self, source: FileRef, ingested_at: str) -> Session: ...


Span = Callable[[str], contextlib.AbstractContextManager[Any]]


def no_span(name: str) -> contextlib.AbstractContextManager[Any]:
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
    """``incoming/a/b.csv`` → ``rejects/a/b.csv``; another name gets ``.csv`` added
    (``b.xlsx`` → ``b.xlsx.csv``), so the source name stays recognisable.

    A source key near S3's 1,024-byte limit could overflow it: its name is then cut (at a
    character) and a hash of the whole key keeps it unique.
    """
    rel = key[len(INCOMING_PREFIX) :] if key.startswith(INCOMING_PREFIX) else key
    rejects = (
        f"{REJECTS_PREFIX}{rel}" if rel.lower().endswith(".csv") else f"{REJECTS_PREFIX}{rel}.csv"
    )
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
    """Valid chunks spilled to zstd Arrow IPC files, rejects appended to one CSV, a sample kept.

    What it writes counts against ``budget`` bytes of /tmp, on top of the ``base`` bytes already
    there (the object): past it, or when the disk itself is full, ``ScratchFull``.
    """

    def __init__(self, workdir: Path, *, budget: int | None = None, base: int = 0) -> None:
        self._dir = workdir
        self._valid: list[Path] = []
        self._valid_rows: list[int] = []
        self.rejects_path = workdir / "rejects.csv"
        self._rejects_file: IO[bytes] | None = None
        self._rejects_csv: RejectsCsv | None = None
        self.rejected_rows = 0
        self.spilled_bytes = 0
        self.sample: list[SampleRow] = []
        self._budget, self._base = budget, base

    def add(self, chunk: ChunkLike) -> None:
        try:
            self._add(chunk)
        except OSError as exc:
            # With what this file had written when the disk filled past the budget, the file is
            # too big: a verdict. Within it, something else fills /tmp (a killed run's leftovers):
            # an infrastructure failure, retried (in another environment, if need be).
            partial = self._dir / self._next_valid_name()
            written = self.used_bytes + (partial.stat().st_size if partial.exists() else 0)
            if exc.errno == errno.ENOSPC and self._over(written):
                raise ScratchFull(
                    self._too_big(f"and the disk filled up ({exc.strerror})")
                ) from None
            raise
        if self._over(self.used_bytes):
            raise ScratchFull(self._too_big(f"past {human_bytes(self._budget or 0)} of /tmp"))

    def _over(self, used: int) -> bool:
        return self._budget is not None and used > self._budget

    def _next_valid_name(self) -> str:
        return f"valid-{len(self._valid):06d}.arrow"

    def _add(self, chunk: ChunkLike) -> None:
        if chunk.valid.height:
            path = self._dir / self._next_valid_name()
            chunk.valid.write_ipc(path, compression=SPILL_COMPRESSION)
            self._valid.append(path)
            self._valid_rows.append(chunk.valid.height)
            self.spilled_bytes += path.stat().st_size
        rejects = chunk.rejects
        if rejects.height:
            if self._rejects_csv is None:
                self._rejects_file = self.rejects_path.open("wb")
                columns = [c for c in rejects.columns if c not in (LINE, REASONS)]
                self._rejects_csv = RejectsCsv(self._rejects_file, columns)
            self._rejects_csv.write(rejects)
            self.rejected_rows += rejects.height
            self._keep_sample(rejects)

    @property
    def used_bytes(self) -> int:
        """The object, the spill and the rejects CSV so far (its buffer included)."""
        rejects = self._rejects_file.tell() if self._rejects_file is not None else 0
        return self._base + self.spilled_bytes + rejects

    def _too_big(self, why: str) -> str:
        return (
            f"The file does not fit in this deployment's temporary storage: the file and what "
            f"is kept of it while it is checked came to {human_bytes(self.used_bytes)}, {why}. "
            "Split the file, or raise IngestTmpMb."
        )

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

    def cursor(self, skip: int = 0) -> RowCursor:
        """The valid rows in file order, the first ``skip`` left out (already stored)."""
        return RowCursor(self._valid, self._valid_rows, skip)


class RowCursor:
    """Hands out the spilled valid rows in frames of any size, without reading skipped files."""

    def __init__(self, paths: list[Path], rows: list[int], skip: int) -> None:
        first = 0
        while first < len(paths) and skip >= rows[first]:
            skip -= rows[first]
            first += 1
        self._pending = list(paths[first:])
        self._skip = skip  # rows to leave out of the first file still pending
        self._frame: pl.DataFrame | None = None

    @property
    def exhausted(self) -> bool:
        return not self._pending and (self._frame is None or self._frame.is_empty())

    def take(self, rows: int) -> pl.DataFrame | None:
        """The next ``rows`` rows (fewer at the end); None when every row was handed out."""
        parts: list[pl.DataFrame] = []
        wanted = rows
        while wanted > 0:
            if self._frame is None or self._frame.is_empty():
                if not self._pending:
                    break
                self._frame = pl.read_ipc(self._pending.pop(0)).slice(self._skip)
                self._skip = 0
                continue
            parts.append(self._frame.head(wanted))
            self._frame = self._frame.slice(min(wanted, self._frame.height))
            wanted -= parts[-1].height
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else pl.concat(parts, rechunk=True)


# ---- pacing the writes against the function's deadline -----------------------------------


class Deadline:
    """How long the function has left, from the Lambda context (or the local worker's).

    ``last_run``: this delivery of the message is the queue's last (the next failure sends it
    to the DLQ), so a file that would pause fails instead, saying why.
    """

    def __init__(self, remaining_ms: Callable[[], int], *, last_run: bool = False) -> None:
        self._remaining_ms = remaining_ms
        self.last_run = last_run

    def for_last_run(self) -> Deadline:
        return Deadline(self._remaining_ms, last_run=True)

    @classmethod
    def of(cls, context: Any) -> Deadline | None:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        return cls(remaining) if callable(remaining) else None

    def left_s(self) -> float:
        return self._remaining_ms() / 1000


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


class Pacer:
    """Sizes write frames and says whether the next one still fits before the deadline.

    The rate is measured on this attempt's own writes (rows stored per second since its first
    frame); until a frame is stored, ``FIRST_RATE`` stands in. Without a deadline (tools, tests,
    the CLI) every frame fits.
    """

    def __init__(
        self,
        deadline: Deadline | None,
        *,
        min_rows: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._deadline = deadline
        span = deadline.left_s() if deadline is not None else FRAME_MAX_S * FRAME_SHARE
        self.span_s = span  # the time this file's attempt began with
        self.last_run = deadline is not None and deadline.last_run
        self.frame_s = _clamp(span / FRAME_SHARE, FRAME_MIN_S, FRAME_MAX_S)
        self.margin_s = _clamp(span / STOP_MARGIN_SHARE, STOP_MARGIN_MIN_S, STOP_MARGIN_MAX_S)
        self._min_rows = min_rows
        self._clock = clock
        self._started: float | None = None
        self._stored = 0

    @property
    def measured(self) -> bool:
        return self._stored > 0

    @property
    def rate(self) -> float:
        if self._started is None or not self._stored:
            return FIRST_RATE
        return self._stored / max(1e-3, self._clock() - self._started)

    def start(self) -> None:
        if self._started is None:
            self._started = self._clock()

    def stored(self, rows: int) -> None:
        """Rows this attempt has stored so far."""
        self._stored = rows

    def next_rows(self, in_flight: int = 0) -> int:
        """Rows for the next frame: a frame's worth, or fewer if only fewer can be stored (with
        ``in_flight`` rows still being written) before the deadline less the margin; 0 when
        not even ``FRAME_MIN_ROWS`` can."""
        want = max(self._min_rows, int(self.rate * self.frame_s))
        if self._deadline is None:
            return want
        room = int((self._deadline.left_s() - self.margin_s) * self.rate) - in_flight
        return want if room >= want else (room if room >= FRAME_MIN_ROWS else 0)


class Throttle:
    """True at most once per ``every_s`` (the first call waits a full interval)."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._every, self._clock = every_s, clock
        self._last = clock()

    def due(self) -> bool:
        now = self._clock()
        if now - self._last < self._every:
            return False
        self._last = now
        return True


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
    span: Span = no_span
    clock: Callable[[], datetime] = _now
    monotonic: Callable[[], float] = time.monotonic
    tmp_dir: str | None = None
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        self.limits = limits_from_settings(self.settings)

    def handle_body(self, body: str, deadline: Deadline | None = None) -> list[IngestResult]:
        """Every file a message names; raises (the message fails) on the first failure."""
        return [self.ingest(ref, deadline) for ref in parse_body(body)]

    def ingest(self, ref: FileRef, deadline: Deadline | None = None) -> IngestResult:
        lease = lease_seconds(self.settings.function_timeout_s)
        claim = self.ledger.claim(ref, lease)
        if claim.decision == Decision.DUPLICATE:
            return IngestResult(ref.file_id, ref.key, claim.decision)
        if not claim.owned:
            raise FileBusy(f"{ref.file_id} is being processed by another attempt ({claim.holder})")
        started = time.monotonic()
        try:
            with Heartbeat(self.ledger, claim, lease) as beat:
                result = self._process(ref, claim, beat, deadline)
        except (LeaseLost, FilePaused):
            raise  # taken over: the other attempt owns the outcome; paused: the ledger says so
        except BaseException as exc:
            self.ledger.fail(claim, describe(exc))
            raise
        return replace(result, seconds=round(time.monotonic() - started, 3))

    @property
    def scratch_budget(self) -> int:
        """Bytes of /tmp one file may use: the object, its spill and its rejects."""
        return self.settings.tmp_mb * MIB - TMP_RESERVE_BYTES

    def _process(
        self, ref: FileRef, claim: Claim, beat: Heartbeat, deadline: Deadline | None
    ) -> IngestResult:
        pacer = Pacer(deadline, min_rows=BATCH_GET_MAX * self.writer_threads, clock=self.monotonic)
        too_big = self._too_big(ref)
        if too_big is not None:
            return self._conclude(
                ref, claim, beat, FileOutcome(Status.REJECTED, error=too_big), spill=None
            )
        with tempfile.TemporaryDirectory(prefix="orderpipe-", dir=self.tmp_dir) as tmp:
            workdir = Path(tmp)
            source = workdir / "object"
            with self.span("read"), source.open("wb") as sink:
                self.objects.download(ref, sink)
            beat.check()
            spill = ChunkSpill(workdir, budget=self.scratch_budget, base=source.stat().st_size)
            try:
                with self.span("validate"):
                    outcome = self._validate(source, ref, claim, spill)
            except ScratchFull as exc:
                verdict = FileOutcome(Status.REJECTED, error=str(exc))
                return self._conclude(ref, claim, beat, verdict, spill=None)
            finally:
                spill.close()
            source.unlink()  # read whole: its room goes back to /tmp
            beat.confirm()
            stats = WriteStats()
            if outcome.status == "rejected":
                verdict = FileOutcome(
                    Status.REJECTED,
                    rows=outcome.rows,
                    invalid=outcome.invalid,
                    reasons=dict(outcome.reasons),
                    error=outcome.error or "The file was rejected.",
                )
            else:
                with self.span("write"):
                    stats = self._write(ref, claim, spill, beat, outcome=outcome, pacer=pacer)
                verdict = FileOutcome(
                    Status(verdict_of(outcome)),  # the one mapping (core/validation/verdict.py)
                    rows=outcome.rows,
                    valid=outcome.valid,
                    invalid=outcome.invalid,
                    reasons=dict(outcome.reasons),
                )
            return self._conclude(ref, claim, beat, verdict, spill=spill, stats=stats)

    def _too_big(self, ref: FileRef) -> str | None:
        if ref.size > self.limits.max_bytes:
            return (
                f"The file is {human_bytes(ref.size)}, larger than the "
                f"{human_bytes(self.limits.max_bytes)} orderpipe accepts."
            )
        if ref.size > self.scratch_budget:
            return (
                f"The file is {human_bytes(ref.size)}, more than the "
                f"{human_bytes(self.scratch_budget)} of temporary storage this deployment has "
                "for a file and what is kept of it. Split the file, or raise IngestTmpMb."
            )
        return None

    @property
    def writer_threads(self) -> int:
        return max(1, int(getattr(self.writer, "threads", 1)))

    def _validate(self, source: Path, ref: FileRef, claim: Claim, spill: ChunkSpill) -> OutcomeLike:
        """Validate into ``spill``, telling the ledger how many rows are judged as it goes."""
        judged = 0
        earlier = claim.entry.rows_judged  # a resumed attempt judges the same rows again
        throttle = Throttle(PROGRESS_EVERY_S, self.monotonic)

        def on_chunk(chunk: ChunkLike) -> None:
            nonlocal judged
            spill.add(chunk)
            judged += chunk.valid.height + chunk.rejects.height
            if judged > earlier and throttle.due():
                self.ledger.progress(claim, rows_judged=judged)

        return self.validate(source, ref.key, limits=self.limits, on_chunk=on_chunk)

    def _write(
        self,
        ref: FileRef,
        claim: Claim,
        spill: ChunkSpill,
        beat: Heartbeat,
        *,
        outcome: OutcomeLike,
        pacer: Pacer,
    ) -> WriteStats:
        """Store the valid rows the checkpoint does not cover, frame by frame, until the end or
        until the next frame might not finish before the deadline (then pause)."""
        start = self._resume_point(claim, outcome)
        session = self.writer.session(ref, start.stamp)
        cursor = spill.cursor(skip=start.done)
        throttle = Throttle(PROGRESS_EVERY_S, self.monotonic)
        submitted = 0
        takes = TakenRecorder(self.ledger, ref.file_id, start.taken)

        def checkpoint() -> None:
            stats = session.stats
            # Recorded before the checkpoint that counts them: a crash in between loses none.
            takes.record(_merged(start.taken, stats.taken))
            self.ledger.progress(
                claim,
                rows_judged=outcome.rows,
                rows_written=start.written + stats.written,
                checkpoint=Checkpoint(
                    done=start.done + session.committed_rows,
                    valid=outcome.valid,
                    superseded=start.superseded + stats.superseded,
                    stamp=start.stamp,
                    taken=_merged(start.taken, stats.taken),
                ),
            )

        try:
            while not cursor.exhausted:
                beat.check()
                rows = pacer.next_rows(in_flight=submitted - session.committed_rows)
                if rows == 0:
                    session.close()
                    self._pause(
                        ref,
                        claim,
                        start,
                        session=session,
                        outcome=outcome,
                        pacer=pacer,
                        checkpoint=checkpoint,
                    )
                frame = cursor.take(rows)
                if frame is None:
                    break
                pacer.start()
                session.submit(frame)
                submitted += frame.height
                if not pacer.measured:
                    session.flush()  # the first frame alone: the rate the others are sized by
                pacer.stored(session.committed_rows)
                if throttle.due():
                    checkpoint()
        except BaseException:
            session.abort()
            raise
        stats = session.close()
        taken = _merged(start.taken, stats.taken)
        takes.record(taken)  # before the rejects, the notice and the outcome, any of which may fail
        return WriteStats(
            written=start.written + stats.written,
            superseded=start.superseded + stats.superseded,
            taken=taken,
            batch_calls=stats.batch_calls,
            get_calls=stats.get_calls,
            conditional_puts=stats.conditional_puts,
            retries=stats.retries,
        )

    def _pause(
        self,
        ref: FileRef,
        claim: Claim,
        start: _Start,
        *,
        session: Session,
        outcome: OutcomeLike,
        pacer: Pacer,
        checkpoint: Callable[[], None],
    ) -> None:
        """Record how far the writes got and let the file go, or fail if they got nowhere with
        the function's time to themselves (with less, files before it in the batch took it)."""
        had_the_time = pacer.span_s >= self.settings.function_timeout_s / 2
        if session.committed_rows == 0 and start.done < outcome.valid and had_the_time:
            raise OutOfTime(
                f"{ref.file_id}: no rows could be stored before the function's deadline "
                "(reading and checking the file took most of it); raise IngestTimeoutSeconds "
                "or lower MaxRows"
            )
        checkpoint()
        done = start.done + session.committed_rows
        if pacer.last_run:
            # Failed, not paused: the ledger says why the message is in the DLQ, and a redrive
            # or a replay of the FAILED file resumes from the checkpoint just recorded.
            raise OutOfRuns(
                f"{ref.file_id}: {done:,} of {outcome.valid:,} valid rows stored when the "
                f"queue's last delivery ran out of time; the file needs more runs than "
                f"{MAX_RECEIVE_COUNT}: raise IngestTimeoutSeconds, lower MaxRows or split it "
                "(a redrive resumes it)"
            )
        self.ledger.pause(claim, lease_seconds(self.settings.function_timeout_s))
        raise FilePaused(
            f"{ref.file_id}: {done:,} of {outcome.valid:,} valid rows stored before the "
            "deadline; the next delivery resumes from there"
        )

    def _resume_point(self, claim: Claim, outcome: OutcomeLike) -> _Start:
        """Where this attempt's writes start: the checkpoint, when it is this file's."""
        point = claim.entry.checkpoint
        if (
            point is not None
            and claim.decision != Decision.REPLAY
            and point.valid == outcome.valid
            and point.done <= outcome.valid
            and point.stamp
        ):
            return _Start(
                point.done, claim.entry.rows_written, point.superseded, point.stamp, point.taken
            )
        # A redelivery writes byte-identical items (ingested_at = when the version was first
        # received); only a replay stamps its own time.
        stamp = claim.entry.received_at
        if claim.decision == Decision.REPLAY or not stamp:
            stamp = iso_ms(self.clock())
        return _Start(0, 0, 0, stamp)

    def _conclude(
        self,
        ref: FileRef,
        claim: Claim,
        beat: Heartbeat,
        verdict: FileOutcome,
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
                        reasons=dict(verdict.reasons),
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
            replace(
                verdict,
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
class _Start:
    """Where an attempt's writes begin: rows already stored and the counts they brought."""

    done: int
    written: int
    superseded: int
    stamp: str
    taken: dict[str, int] = field(default_factory=dict)


class TakenRecorder:
    """Tells the ledger, per older file, how many of its orders this file took over so far.

    Counts only rise within a run, and ``record_taken`` keeps the highest figure, so calling
    again (a retry, a resumed run counting from its checkpoint) never counts an order twice.
    """

    def __init__(self, ledger: Ledger, taker_id: str, recorded: Mapping[str, int]) -> None:
        self._ledger, self._taker = ledger, taker_id
        self._recorded = dict(recorded)  # a checkpoint's takes were recorded before it

    def record(self, taken: Mapping[str, int]) -> None:
        for older, orders in sorted(taken.items()):
            if orders > self._recorded.get(older, 0):
                self._ledger.record_taken(older, self._taker, orders)
                self._recorded[older] = orders


def _merged(first: Mapping[str, int], second: Mapping[str, int]) -> dict[str, int]:
    merged = dict(first)
    for key, n in second.items():
        merged[key] = merged.get(key, 0) + n
    return merged


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
            "Metadata": rejects_metadata(ref),
        }
        if path.stat().st_size < MULTIPART_THRESHOLD:
            # One PutObject: the transfer manager's setup costs more than a small file's upload.
            with path.open("rb") as body:
                self._s3.put_object(Bucket=ref.bucket, Key=key, Body=body, **extra)
            return
        self._s3.upload_file(str(path), ref.bucket, key, ExtraArgs=extra)


def rejects_metadata(ref: FileRef) -> dict[str, str]:
    """The rejects object's user metadata: the source version, and its key when it fits.

    Metadata travels as HTTP headers and must be ASCII, so the key is percent-encoded (a key
    with an accent, a bidi override or a tab would otherwise fail the upload, every retry).
    Encoded, a long non-ASCII key can pass S3's 2 KB of metadata: it is then left out, since
    the ledger holds it exactly and the rejects key names it.
    """
    meta = {"source-version": quote(ref.version_tag, safe="/:")}
    with_key = {**meta, "source-key": header_safe(ref.key)}
    size = sum(len(name) + len(value) for name, value in with_key.items())
    return with_key if size <= MAX_METADATA_BYTES else meta


class SqsNotices:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._sqs, self._url = client, queue_url

    def send(self, notice: FileNotice) -> None:
        self._sqs.send_message(QueueUrl=self._url, MessageBody=notice.to_json())


def handle_record(
    service: IngestService,
    body: str,
    receipt_handle: str,
    sqs: Any,
    receive_count: int = 1,
    *,
    deadline: Deadline | None = None,
) -> list[IngestResult]:
    """One SQS record; a paused file comes back at once, a failed one (busy or broken) after a
    backoff by receive count (core/pipeline/retry.py), then the record fails (so it comes back).

    The backoff's first four waits (41 min on AWS) outlast a busy file's holder (its lease is
    the function timeout plus a little), so a message never dead-letters only for waiting.
    """
    url = service.settings.ingest_queue_url
    if deadline is not None and receive_count >= MAX_RECEIVE_COUNT:
        deadline = deadline.for_last_run()
    try:
        return service.handle_body(body, deadline)
    except FilePaused:
        if receipt_handle and url:
            retry_after(sqs, url, receipt_handle, PAUSE_RETRY_S)
        raise
    except Exception:
        retry_failed(sqs, url, receipt_handle, receive_count, service.settings.retry_schedule_s)
        raise
