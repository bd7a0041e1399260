"""Big files on fakes: writes paced against the deadline, paused, resumed, counted exactly.

Time is simulated: every item DynamoDB stores costs ``ITEM_S`` on a shared clock, and each
attempt's deadline runs on that clock, so how many attempts a file takes is known in advance.
"""

from __future__ import annotations

import csv
import errno
import functools
import io
import threading
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from core.aws.settings import Settings
from core.pipeline.events import FileRef, Replay, event_body
from core.pipeline.ingest import (
    FRAME_MIN_ROWS,
    PAUSE_RETRY_S,
    TMP_RESERVE_BYTES,
    ChunkSpill,
    Deadline,
    FileBusy,
    FilePaused,
    IngestResult,
    IngestService,
    OutOfRuns,
    OutOfTime,
    Pacer,
    ScratchFull,
    handle_record,
    rejects_key_for,
)
from core.pipeline.ledger import Decision, LeaseLost, Status
from core.pipeline.orders_store import OrdersWriter
from core.validation.engine import validate
from tests.unit.ingest_fakes import (
    SETTINGS,
    FakeClock,
    FakeDynamo,
    FakeNotices,
    FakeObjects,
    FakeSqs,
    InMemoryLedger,
)

ITEM_S = 0.001  # simulated seconds DynamoDB takes per stored item
FUNCTION_S = 1.5  # each attempt's time: 0.5 s margin, so about 1,000 items an attempt


class Ticker:
    """A monotonic clock that only moves when told (thread-safe: writer threads move it)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class TimedDynamo(FakeDynamo):
    """Stores items like ``FakeDynamo``, each one costing ``ITEM_S`` of simulated time."""

    def __init__(self, ticker: Ticker) -> None:
        super().__init__()
        self.ticker = ticker
        self.crash_after: int | None = None  # items, then the "process" dies

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((_, requests),) = RequestItems.items()
        if self.crash_after is not None and self.items_sent() >= self.crash_after:
            raise Crash("the function was killed")
        reply = super().batch_write_item(RequestItems)
        self.ticker.advance(ITEM_S * len(requests))
        return reply

    def items_sent(self) -> int:
        return sum(n for kind, n in self.calls if kind == "write")


class Crash(BaseException):
    """Raised inside a write to stand for the function being killed mid-file."""


def body_of(valid: int, invalid: int) -> bytes:
    lines = [f"Ord{n:05d},C{n},19/04/23,Pending,{n}.50" for n in range(valid)]
    # Rejected rows spread through the file, so every attempt must find them all again.
    for n in range(invalid):
        lines.insert(n * (valid // max(1, invalid)), f"Bad{n:03d},C,not-a-date,Pending,1")
    return ("\n".join(lines) + "\n").encode()


class Pipeline:
    def __init__(self, tmp_path: Path, settings: Settings = SETTINGS) -> None:
        self.clock = FakeClock()
        self.ticker = Ticker()
        self.ledger = InMemoryLedger(self.clock)
        self.objects = FakeObjects()
        self.ddb = TimedDynamo(self.ticker)
        self.notices = FakeNotices()
        self.service = IngestService(
            settings=settings,
            ledger=self.ledger,
            objects=self.objects,
            writer=OrdersWriter(self.ddb, "orders", threads=2),
            rejects=self.objects,
            notices=self.notices,
            # Small chunks, so the spill holds many files and the cursor crosses them.
            validate=functools.partial(validate, chunk_rows=700),
            clock=self.clock,
            monotonic=self.ticker,
            tmp_dir=str(tmp_path),
        )

    def upload(self, key: str, body: bytes) -> FileRef:
        ref = FileRef("b", key, "v1", "etag", len(body), "2026-05-01T11:00:00.000Z")
        self.objects.bodies[ref.file_id] = body
        return ref

    def deadline(self, seconds: float = FUNCTION_S) -> Deadline:
        ends = self.ticker() + seconds
        return Deadline(lambda: max(0, int((ends - self.ticker()) * 1000)))

    def run_until_done(self, ref: FileRef, attempts: int = 10) -> tuple[IngestResult, list[str]]:
        """Deliver the file's message again after each pause, as SQS does; return the result
        and each attempt's claim decision."""
        decisions: list[str] = []
        for _ in range(attempts):
            self.clock.advance(PAUSE_RETRY_S)
            before = self.ledger.get(ref.file_id)
            try:
                result = self.service.ingest(ref, self.deadline())
            except FilePaused:
                decisions.append(self._decision(before))
                continue
            decisions.append(str(result.decision))
            return result, decisions
        raise AssertionError(f"not finished after {attempts} attempts: {decisions}")

    @staticmethod
    def _decision(before: Any) -> str:
        return "new" if before is None else ("resume" if before.paused_at else "other")

    def items_sent(self) -> int:
        return self.ddb.items_sent()


@pytest.fixture
def pipe(tmp_path: Path) -> Pipeline:
    return Pipeline(tmp_path)


def test_a_file_too_big_for_one_run_finishes_over_several_each_order_written_once(
    pipe: Pipeline,
) -> None:
    ref = pipe.upload("incoming/big.csv", body_of(3000, 7))
    result, decisions = pipe.run_until_done(ref)
    assert len(decisions) >= 3, decisions
    assert decisions[0] == "new"
    assert set(decisions[1:-1]) == {"resume"}
    assert result.decision == Decision.RESUME
    assert (result.status, result.rows, result.valid, result.invalid) == (
        Status.PARTIAL,
        3007,
        3000,
        7,
    )
    assert result.written == 3000
    assert pipe.items_sent() == 3000  # no row written twice
    assert len(pipe.ddb.items) == 3000
    entry = pipe.ledger.get(ref.file_id)
    assert entry is not None
    assert (entry.status, entry.written, entry.rows_written, entry.rows_judged) == (
        Status.PARTIAL,
        3000,
        3000,
        3007,
    )
    assert entry.pauses == len(decisions) - 1
    assert entry.attempts == len(decisions)
    assert entry.checkpoint is None
    assert entry.paused_at is None
    # One notice, from the attempt that finished, covering the whole file's rejects.
    assert len(pipe.notices.sent) == 1
    assert pipe.notices.sent[0].invalid == 7
    rejects = list(csv.reader(io.StringIO(pipe.objects.rejects[rejects_key_for(ref.key)].decode())))
    assert sorted(r[1] for r in rejects[1:]) == [f"Bad{n:03d}" for n in range(7)]


def test_progress_reaches_the_ledger_while_the_file_is_processed(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/big.csv", body_of(3000, 7))
    with pytest.raises(FilePaused):
        pipe.service.ingest(ref, pipe.deadline(2.5))  # about 2,000 rows' time
    entry = pipe.ledger.get(ref.file_id)
    assert entry is not None
    assert entry.status == Status.PROCESSING
    assert entry.rows_judged == 3007
    assert entry.checkpoint is not None
    assert 0 < entry.rows_written == entry.checkpoint.done < 3000
    assert entry.rows_written == len(pipe.ddb.items)  # what is stored, exactly
    # The writes were recorded as they went, not only at the pause.
    written = [w for _, w, cp in pipe.ledger.progress_log if cp is not None]
    assert written == sorted(written)
    assert len(written) >= 2


def test_a_crashed_attempt_is_taken_over_and_resumes_from_its_last_checkpoint(
    pipe: Pipeline,
) -> None:
    # With 60 s to go, frames are 2 s long: 2,000 rows; the second one dies 1,500 rows in.
    ref = pipe.upload("incoming/big.csv", body_of(5000, 3))
    pipe.ddb.crash_after = 3500
    # The function dies mid-write: nothing is recorded on the way out (no FAILED).
    pipe.ledger.fail = lambda claim, error: None  # type: ignore[method-assign]
    with pytest.raises(Crash):
        pipe.service.ingest(ref, pipe.deadline(60))
    entry = pipe.ledger.get(ref.file_id)
    assert entry is not None
    assert entry.status == Status.PROCESSING
    assert entry.checkpoint is not None
    saved = entry.checkpoint.done
    assert saved == 2000
    pipe.ddb.crash_after = None
    before = pipe.items_sent()
    pipe.clock.advance(1)
    with pytest.raises(FileBusy):  # too early: the dead attempt's claim is still leased
        pipe.service.ingest(ref, pipe.deadline())
    pipe.clock.advance(SETTINGS.function_timeout_s + 10)
    result = pipe.service.ingest(ref, pipe.deadline(60))
    assert result.decision == Decision.TAKEOVER
    assert (result.status, result.written) == (Status.PARTIAL, 5000)
    # Only rows after the checkpoint were sent again: those the dead attempt wrote after it
    # (500, the same items again) and the rest.
    assert pipe.items_sent() - before == 5000 - saved
    assert len(pipe.ddb.items) == 5000
    assert len(pipe.notices.sent) == 1


def test_a_failed_attempt_is_retried_from_its_checkpoint(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/big.csv", body_of(5000, 0))

    class Throttled(RuntimeError):
        pass

    original = pipe.ddb.batch_write_item

    def flaky(RequestItems: dict[str, Any]) -> dict[str, Any]:
        if pipe.items_sent() >= 3500:
            raise Throttled("ProvisionedThroughputExceededException")
        return original(RequestItems)

    pipe.ddb.batch_write_item = flaky  # type: ignore[method-assign]
    with pytest.raises(Throttled):
        pipe.service.ingest(ref, pipe.deadline(60))
    failed = pipe.ledger.get(ref.file_id)
    assert failed is not None
    assert failed.status == Status.FAILED
    assert failed.checkpoint is not None
    done = failed.checkpoint.done
    pipe.ddb.batch_write_item = original  # type: ignore[method-assign]
    before = pipe.items_sent()
    result = pipe.service.ingest(ref, pipe.deadline(60))
    assert result.decision == Decision.RETRY
    assert (result.status, result.written) == (Status.SUCCEEDED, 5000)
    assert done == 2000
    assert pipe.items_sent() - before == 5000 - done


def test_a_replay_of_a_resumed_file_writes_every_row_again(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/big.csv", body_of(2500, 0))
    pipe.run_until_done(ref)
    stamps = {item["ingested_at"]["S"] for item in pipe.ddb.items.values()}
    assert len(stamps) == 1  # every attempt stamped the rows alike
    before = pipe.items_sent()
    pipe.clock.advance(3600)
    replay = FileRef(
        "b", ref.key, "v1", "etag", ref.size, ref.event_time, replay=Replay("r1", "again")
    )
    result = pipe.service.ingest(replay, pipe.deadline(60))
    assert result.decision == Decision.REPLAY
    assert result.written == 2500
    assert pipe.items_sent() - before == 2500
    assert {item["ingested_at"]["S"] for item in pipe.ddb.items.values()} != stamps


def test_a_checkpoint_from_another_validation_is_not_trusted(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/big.csv", body_of(3000, 0))
    with pytest.raises(FilePaused):
        pipe.service.ingest(ref, pipe.deadline())
    # The rules changed between attempts (a new release): 10 rows are now rejected.
    lines = body_of(3000, 0).decode().splitlines()
    for n in range(10):
        lines[n] = lines[n].replace("19/04/23", "31/02/23")
    pipe.objects.bodies[ref.file_id] = ("\n".join(lines) + "\n").encode()
    before = pipe.items_sent()
    result = pipe.service.ingest(ref, pipe.deadline(60))
    assert (result.status, result.valid, result.written) == (Status.PARTIAL, 2990, 2990)
    assert pipe.items_sent() - before == 2990  # started over: every valid row written


def test_an_attempt_that_cannot_store_anything_in_time_fails_and_says_why(
    tmp_path: Path,
) -> None:
    pipe = Pipeline(tmp_path, SETTINGS.with_(function_timeout_s=1))
    ref = pipe.upload("incoming/big.csv", body_of(3000, 0))
    with pytest.raises(OutOfTime):
        pipe.service.ingest(ref, pipe.deadline(0.55))  # the margin alone is 0.5 s
    entry = pipe.ledger.get(ref.file_id)
    assert entry is not None
    assert entry.status == Status.FAILED
    assert "no rows could be stored before the function's deadline" in (entry.last_error or "")
    assert pipe.items_sent() == 0


def test_a_file_left_little_time_by_the_files_before_it_pauses_instead_of_failing(
    pipe: Pipeline,
) -> None:
    first = pipe.upload("incoming/first.csv", body_of(500, 0))
    second = pipe.upload("incoming/second.csv", body_of(500, 0))
    deadline = pipe.deadline(60)
    pipe.service.ingest(first, deadline)
    pipe.ticker.advance(59.45)  # the batch's earlier files used the function's time
    with pytest.raises(FilePaused):
        pipe.service.ingest(second, deadline)
    entry = pipe.ledger.get(second.file_id)
    assert entry is not None
    assert (entry.status, entry.pauses, entry.rows_written) == (Status.PROCESSING, 1, 0)
    result = pipe.service.ingest(second, pipe.deadline(60))
    assert (result.decision, result.written) == (Decision.RESUME, 500)


def test_handle_record_sends_a_paused_message_back_at_once(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/big.csv", body_of(3000, 0))

    sqs = FakeSqs()
    with pytest.raises(FilePaused):
        handle_record(pipe.service, event_body([ref]), "r-1", sqs, 1, deadline=pipe.deadline())
    assert sqs.calls == [
        {
            "QueueUrl": "http://queue/ingest",
            "ReceiptHandle": "r-1",
            "VisibilityTimeout": PAUSE_RETRY_S,
        }
    ]


def test_the_queues_last_delivery_fails_the_file_saying_why_and_a_redrive_resumes_it(
    pipe: Pipeline,
) -> None:
    ref = pipe.upload("incoming/big.csv", body_of(3000, 0))

    class Sqs:
        def change_message_visibility(self, **kw: Any) -> None:
            pass

    with pytest.raises(OutOfRuns):
        handle_record(pipe.service, event_body([ref]), "r-5", Sqs(), 5, deadline=pipe.deadline())
    entry = pipe.ledger.get(ref.file_id)
    assert entry is not None
    assert entry.status == Status.FAILED
    assert "needs more runs than 5" in (entry.last_error or "")
    assert entry.checkpoint is not None
    done = entry.checkpoint.done
    assert 0 < done < 3000
    before = pipe.items_sent()
    result = pipe.service.ingest(ref, pipe.deadline(60))  # redriven from the DLQ
    assert (result.decision, result.written) == (Decision.RETRY, 3000)
    assert pipe.items_sent() - before == 3000 - done


def test_a_paused_attempt_that_was_taken_over_records_nothing(pipe: Pipeline) -> None:
    ref = pipe.upload("incoming/big.csv", body_of(3000, 0))
    original = pipe.ledger.pause

    def taken_over_first(claim: Any, lease_s: int) -> None:
        pipe.clock.advance(3600)
        pipe.ledger.claim(ref, 60)
        original(claim, lease_s)

    pipe.ledger.pause = taken_over_first  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):
        pipe.service.ingest(ref, pipe.deadline())
    entry = pipe.ledger.get(ref.file_id)
    assert entry is not None
    assert (entry.status, entry.attempts, entry.paused_at) == (Status.PROCESSING, 2, None)


# ---- /tmp ---------------------------------------------------------------------------------


def test_the_spill_is_compressed(tmp_path: Path) -> None:
    spill = ChunkSpill(tmp_path)
    frame = pl.DataFrame(
        {
            "line": range(50_000),
            "Order_Id": [f"Ord{n:07d}" for n in range(50_000)],
            "Order_Status": ["Pending"] * 50_000,
        }
    )

    class Chunk:
        valid = frame
        rejects = frame.clear()

    spill.add(Chunk())
    uncompressed = tmp_path / "plain.arrow"
    frame.write_ipc(uncompressed, compression="uncompressed")
    assert spill.spilled_bytes * 4 < uncompressed.stat().st_size
    back = spill.cursor().take(frame.height)
    assert back is not None
    assert back.equals(frame)


def test_a_file_bigger_than_tmp_is_rejected_without_reading_it(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path, SETTINGS.with_(tmp_mb=65))  # 1 MB once the reserve is kept
    ref = pipe.upload("incoming/big.csv", b"x" * (1024 * 1024 + 1))
    pipe.objects.fail_with = AssertionError("must not be read")
    result = pipe.service.ingest(ref)
    assert result.status == Status.REJECTED
    entry = pipe.ledger.get(ref.file_id)
    assert entry is not None
    assert "temporary storage" in (entry.error or "")
    assert "IngestTmpMb" in (entry.error or "")
    assert len(pipe.notices.sent) == 1


def test_a_file_whose_spill_does_not_fit_tmp_is_rejected_clearly(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path, SETTINGS.with_(tmp_mb=65))
    # 600 KB of rows that are all rejected: the object plus its rejects pass 1 MB.
    body = "".join(f"Bad{n:06d},C{n},not-a-date,Pending,1\n" for n in range(17_000)).encode()
    assert 500_000 < len(body) < 1024 * 1024
    ref = pipe.upload("incoming/wide.csv", body)
    result = pipe.service.ingest(ref)
    assert result.status == Status.REJECTED
    entry = pipe.ledger.get(ref.file_id)
    assert entry is not None
    assert "does not fit in this deployment's temporary storage" in (entry.error or "")
    assert pipe.items_sent() == 0


class _DiskFullAfter:
    """A valid frame whose spill writes ``written`` bytes, then finds the disk full."""

    height = 10

    def __init__(self, written: int) -> None:
        self.written = written

    def write_ipc(self, path: Path, **_: Any) -> None:
        path.write_bytes(b"x" * self.written)
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    ("budget", "written", "verdict"),
    [(1024 * 1024, 1024, False), (10_000, 20_000, True)],
    ids=["something-else-filled-tmp", "the-file-passed-its-budget"],
)
def test_a_full_disk_is_the_files_fault_only_past_its_budget(
    tmp_path: Path, budget: int, written: int, verdict: bool
) -> None:
    spill = ChunkSpill(tmp_path, budget=budget, base=500)

    class Chunk:
        valid: Any = _DiskFullAfter(written)
        rejects = pl.DataFrame()

    with pytest.raises((OSError, ScratchFull), match="No space left") as raised:
        spill.add(Chunk())
    # ScratchFull rejects the file for good; any other error fails the attempt, to be retried.
    assert isinstance(raised.value, ScratchFull) is verdict


# ---- the pacer ----------------------------------------------------------------------------


def test_the_pacer_sizes_frames_by_the_measured_rate_and_shrinks_the_last_to_fit() -> None:
    ticker = Ticker()
    ends = ticker() + 10.0
    deadline = Deadline(lambda: int((ends - ticker()) * 1000))
    pacer = Pacer(deadline, min_rows=200, clock=ticker)
    assert (pacer.frame_s, pacer.margin_s) == (0.5, 0.5)
    assert pacer.next_rows() == 500  # the assumed first rate, 1,000 rows/s
    pacer.start()
    ticker.advance(1.0)
    pacer.stored(4000)  # 4,000 rows/s measured
    assert pacer.next_rows() == 2000
    ticker.advance(8.0)  # 1 s left: 0.5 s after the margin, 2,000 rows; 1,500 in flight
    pacer.stored(36_000)
    assert pacer.next_rows(in_flight=1500) == 500
    assert pacer.next_rows(in_flight=1950) == 0  # not even one slice fits
    assert Pacer(None, min_rows=200).next_rows(in_flight=10**9) >= FRAME_MIN_ROWS


def test_the_lambda_context_is_the_deadline() -> None:
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 2500

    deadline = Deadline.of(Context())
    assert deadline is not None
    assert deadline.left_s() == 2.5
    assert Deadline.of(object()) is None


# ---- the default limits -----------------------------------------------------------------


def test_the_default_limits_follow_from_timeout_rate_and_attempts() -> None:
    """docs/deploy.md's formula, held to the defaults the template also carries."""
    from core.aws import settings as s
    from core.aws.stack import AWS_TIMINGS, MAX_RECEIVE_COUNT

    assert s.WRITE_ATTEMPTS == MAX_RECEIVE_COUNT - 1  # one receive kept for a transient fault
    most = s.rows_within(AWS_TIMINGS.ingest_timeout_s)
    assert most == 4_000 * (900 - 30) * 4
    assert 0.8 * most <= s.DEFAULT_MAX_ROWS <= most
    # The largest file and its compressed spill fit the default /tmp, less the reserve.
    room = s.DEFAULT_TMP_MB * s.MIB - TMP_RESERVE_BYTES
    assert room >= s.DEFAULT_MAX_FILE_BYTES * (1 + s.SPILL_RATIO)
    # ... and at about 50 bytes an order row, the size limit is about the row limit.
    assert 0.8 <= s.DEFAULT_MAX_FILE_BYTES / 50 / s.DEFAULT_MAX_ROWS <= 1.2
