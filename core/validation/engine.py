"""Validate one order file: stream it in bounded chunks, split each into valid and rejected rows.

``validate(source, name)`` is the one entry point: bytes, a binary stream or a path in, an
``Outcome`` out. With ``on_chunk`` the caller receives every chunk's two frames as they are
produced, so a 5 GB file never has to fit in memory:

- ``valid``: ``line`` (Int64) then the schema columns normalised as text (dates ISO, statuses
  in their allowed spelling, totals as exact decimal text);
- ``rejects``: ``line``, the schema columns' original text (null when the row had no such
  field) and ``reasons``, the broken rules' codes joined by ``;``.

A file can still be rejected after some chunks were delivered (a row limit reached, a corrupt
block further down); callers that store rows must treat the returned status as final. No AWS
here: the Lambda hands in an S3 body, the CLI a path.

``on_chunk`` runs on the calling thread, in file order; the next chunk is read and prepared on
a second thread meanwhile, which ends before ``validate`` returns.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, Final, Generic, TypeVar, cast

import polars as pl

from core.validation.limits import Limits
from core.validation.outcome import (
    ACCEPTED,
    FIRST_ON_LINE,
    SAMPLE_REJECTS,
    ChunkResult,
    Outcome,
    RejectedRow,
)
from core.validation.readers.header import not_orders_message
from core.validation.rules import (
    FIELD_COUNT_OK,
    LINE,
    derived_values,
    first_line_col,
    normalised_values,
    parsed_col,
    row_rules,
    seen_col,
    trimmed_values,
    value_col,
)
from core.validation.schema import UNIQUE, Schema, default_schema

DEFAULT_CHUNK_ROWS = 32_000
SCATTERED_BATCH_ROWS = 128_000  # rows judged at once while the ids come in random order
_DISTINCT_SAMPLE = 4096  # rows that tell whether a column repeats its values
# A chunk is already bounded: the in-memory engine runs a plan's expressions side by side and
# keeps each column in one piece; the streaming engine would cut them into morsels again.
_ENGINE: Final = "in-memory"
REASONS = "reasons"
_INVALID = "__invalid__"

T = TypeVar("T")
U = TypeVar("U")

Source = bytes | BinaryIO | os.PathLike[str]
ChunkCallback = Callable[[ChunkResult], None]


def validate(
    source: Source,
    name: str,
    *,
    schema: Schema | None = None,
    limits: Limits | None = None,
    on_chunk: ChunkCallback | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Outcome:
    """Read ``source`` (named ``name`` for format sniffing and messages) and judge every row."""
    from core.validation.readers import FileRejected, HeaderSeen, iter_table

    schema = schema or default_schema()
    limits = limits or Limits()
    seen = HeaderSeen()
    try:
        chunks = _read_guarded(
            iter_table(source, name, schema.column_names, limits, chunk_rows, seen=seen)
        )
        outcome = validate_chunks(chunks, name, schema, on_chunk=on_chunk)
    except FileRejected as exc:
        return Outcome.rejected(name, str(exc))
    if not seen.found and outcome.valid == 0:
        # No header and not one row that passes: nothing says this is an order file.
        return Outcome.rejected(name, not_orders_message(schema.column_names, seen.first_row))
    return outcome


def _read_guarded(chunks: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The readers turn every known bad shape into FileRejected; this safety net keeps an
    unforeseen polars error *while reading* an outcome rather than a crash. Errors in the rules
    are not caught here: they are bugs and must show."""
    from core.validation.readers import FileRejected

    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except pl.exceptions.PolarsError as exc:
            text = str(exc).strip()
            first_line = text.splitlines()[0] if text else type(exc).__name__
            raise FileRejected(f"not a readable order file: {first_line}") from None
        yield chunk


def validate_chunks(
    chunks: Iterable[pl.DataFrame],
    name: str,
    schema: Schema,
    *,
    on_chunk: ChunkCallback | None = None,
) -> Outcome:
    """Judge already-read chunks (``line``, the schema columns as text, ``field_count_ok``)."""
    judge = ChunkJudge(schema)
    with _Ahead(chunks, judge.prepare) as prepared:
        for frame in _batched(prepared, judge):
            result = judge.judge_prepared(frame)
            if on_chunk is not None:
                on_chunk(result)
    return judge.outcome(name)


def _batched(frames: Iterable[pl.DataFrame], judge: ChunkJudge) -> Iterator[pl.DataFrame]:
    """Prepared chunks one by one; while the ids are scattered (in random order, when the id
    check costs about the same per chunk whatever its size), several at once, up to
    ``SCATTERED_BATCH_ROWS`` rows: such files get the CPU of large chunks and their memory."""
    batch: list[pl.DataFrame] = []
    rows = 0
    for frame in frames:
        batch.append(frame)
        rows += frame.height
        if judge.scattered and rows < SCATTERED_BATCH_ROWS:
            continue
        yield batch[0] if len(batch) == 1 else pl.concat(batch, rechunk=True)
        batch, rows = [], 0
    if batch:
        yield batch[0] if len(batch) == 1 else pl.concat(batch, rechunk=True)


class _Ahead(Generic[T, U]):
    """``prepare(item)`` for each item, run one item ahead on a second thread.

    polars lets go of the GIL while it computes, so reading and preparing the next chunk runs
    beside the judging of this one: with chunks small enough that one operation rarely fills
    both cores, that is what keeps both busy. The next item is prepared only once this one
    was taken, so two chunks at most are in memory. An error on the second thread is raised
    here, where its item would have come; leaving early (an error while judging) stops the
    thread and closes the items before returning.
    """

    _DONE: Final = object()

    def __init__(self, items: Iterable[T], prepare: Callable[[T], U]) -> None:
        self._items, self._prepare = items, prepare
        self._ready: queue.SimpleQueue[tuple[object, BaseException | None]] = queue.SimpleQueue()
        self._taken = threading.Semaphore(1)  # the second thread's turn to prepare one
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="orderpipe-read", daemon=True)

    def __enter__(self) -> Iterator[U]:
        self._thread.start()
        return self._consume()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _produce(self) -> None:
        items = iter(self._items)
        try:
            while self._turn():
                item = next(items, self._DONE)
                if item is self._DONE:
                    self._ready.put((self._DONE, None))
                    return
                self._ready.put((self._prepare(cast(T, item)), None))
        except BaseException as exc:  # handed to the consuming thread, raised there
            self._ready.put((None, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _turn(self) -> bool:
        while not self._stop.is_set():
            if self._taken.acquire(timeout=0.05):
                return True
        return False

    def _consume(self) -> Iterator[U]:
        while True:
            item, error = self._ready.get()
            self._taken.release()
            if error is not None:
                raise error
            if item is self._DONE:
                return
            yield cast(U, item)


def _staged(frame: pl.LazyFrame, stages: list[list[pl.Expr]]) -> pl.LazyFrame:
    for stage in stages:
        frame = frame.with_columns(stage)
    return frame


class _Derived:
    """One column's ``parsed_col`` for every row, computed once per distinct value when values
    repeat, and remembered from chunk to chunk.

    Dates and statuses repeat (a file spans some days and holds three statuses), and parsing
    a date takes a dozen string and integer passes: on the distinct values and mapped back, a
    million rows cost a few hash lookups each, and a chunk parses only the values no earlier
    chunk held (after the first chunks, none). A column of mostly distinct values (totals)
    is parsed directly, where mapping back would only add work; its first rows tell which.
    """

    _REMEMBERED = 65_536  # distinct values kept from chunk to chunk, at most

    def __init__(self, name: str, stages: list[list[pl.Expr]]) -> None:
        self._name = parsed_col(name)
        self._stages = stages
        self._known: pl.DataFrame | None = None  # value, parsed value

    def __call__(self, values: pl.Series) -> pl.Series:
        head = values.head(_DISTINCT_SAMPLE)
        if 2 * head.n_unique() > len(head):
            return self._parsed(values)
        distinct = values.unique()
        if 2 * len(distinct) > len(values):
            return self._parsed(values)
        known = self._known
        if known is not None and len(known) + len(distinct) > self._REMEMBERED:
            known = None  # a column of ever new values: forget rather than grow
        if known is None:
            known = pl.DataFrame([distinct, self._parsed(distinct)])
        else:
            new = distinct.filter(~distinct.is_in(known.to_series(0).implode()))
            if not new.is_empty():
                known = pl.concat([known, pl.DataFrame([new, self._parsed(new)])])
        self._known = known
        mapped = values.replace_strict(known.to_series(0), known.to_series(1), default=None)
        return mapped.alias(self._name)

    def _parsed(self, values: pl.Series) -> pl.Series:
        plan = _staged(values.to_frame().lazy(), self._stages).select(self._name)
        return plan.collect(engine=_ENGINE).to_series()


def _ascending(values: pl.Series) -> bool:
    """The values (no nulls) already ascend: an export's ids usually do."""
    return len(values) < 2 or bool((values.slice(1) > values.slice(0, len(values) - 1)).all())


class _Run:
    """Sorted distinct values with the line of each one's first occurrence, and their range."""

    __slots__ = ("high", "lines", "low", "values")

    def __init__(self, values: pl.Series, lines: pl.Series) -> None:
        self.values, self.lines = values, lines
        self.low, self.high = values[0], values[-1]

    def __len__(self) -> int:
        return len(self.values)


class SeenValues:
    """Which values of a unique column already appeared earlier in the file, exactly, and the
    line of each one's first occurrence.

    Each chunk's values are sorted once, with their rows and lines (equal values in line
    order), so every repeat within the chunk follows its first occurrence. What earlier chunks
    held is kept as a few sorted runs of distinct values, each with the line of its first
    occurrence; no value is in two runs. The chunk's distinct values are binary-searched in
    each run, only within the run's range of values (order ids mostly grow through a file, so
    few qualify), and the values met for the first time become a new run. Runs are merged as
    they pile up, so each is at least twice the size of the next and a file of ``n`` chunks
    keeps about log2(n) of them: the cost of a chunk does not grow with the number of earlier
    chunks, so small chunks cost nothing extra. Runs whose ranges do not overlap (growing ids)
    are merged by appending, without comparing a value.
    Memory: one sorted copy of the distinct ids, about 16-30 bytes each (a string view plus any
    text beyond 12 bytes) and 4 for the line, so about 100 MB for 5M ids.
    """

    def __init__(self) -> None:
        self._runs: list[_Run] = []  # largest first
        # The last chunk's ids mostly fell within earlier runs' ranges (ids in random order):
        # then every id is searched in every run, a cost per chunk, whatever its size.
        self.scattered = False

    def repeats(self, values: pl.Series) -> pl.Series:
        """Flag each value that appeared before it in the file; then remember the chunk."""
        lines = pl.int_range(1, len(values) + 1, dtype=pl.Int64, eager=True)
        return self.judge(values, lines)[0]

    def judge(self, values: pl.Series, lines: pl.Series) -> tuple[pl.Series, pl.Series]:
        """``(repeat flags, first lines)``: per row, whether its value appeared earlier in the
        file and, for a repeat, the line of the value's first occurrence (else null)."""
        rows = len(values)
        frame = pl.DataFrame(
            [
                pl.int_range(0, rows, dtype=pl.UInt32, eager=True).alias("row"),
                values.alias("v"),
                lines.cast(pl.Int64).alias("line"),
            ]
        )
        moved = values.has_nulls()
        if moved:
            frame = frame.filter(pl.col("v").is_not_null())
        if not _ascending(frame.get_column("v")):
            # Stable: equal values stay in line order (and faster than sorting on the lines too)
            frame = frame.sort("v", maintain_order=True)
            moved = True
        value = pl.col("v")
        opens = value.ne_missing(value.shift(1))  # the value's first row in this chunk
        frame = frame.with_columns(
            opens.alias("opens"),
            pl.when(opens).then(pl.col("line")).forward_fill().alias("first"),
        )
        distinct = frame.filter(pl.col("opens"))
        met = self._met_earlier(distinct.get_column("v").set_sorted())
        found = met.null_count() < len(met)
        if found:
            # A value met in an earlier chunk: every row of it repeats that first line.
            group = frame.get_column("opens").cast(pl.UInt32).cum_sum() - 1
            frame = frame.with_columns(met.gather(group).alias("met"))
            first = pl.coalesce("met", pl.when(~pl.col("opens")).then(pl.col("first")))
            distinct = distinct.filter(met.is_null())
        else:
            first = pl.when(~pl.col("opens")).then(pl.col("first"))
        first_lines = frame.select(first.alias(values.name)).to_series()
        if moved:
            nowhere = pl.repeat(None, rows, dtype=pl.Int64, eager=True)
            first_lines = nowhere.scatter(frame.get_column("row"), first_lines)
        self._remember(distinct.get_column("v"), distinct.get_column("line"))
        return first_lines.is_not_null().alias(values.name), first_lines

    def _met_earlier(self, distinct: pl.Series) -> pl.Series:
        """Per value of ``distinct`` (sorted, each once): the line where an earlier chunk first
        held it, or null."""
        met = pl.repeat(None, len(distinct), dtype=pl.Int64, eager=True)
        if distinct.is_empty():
            return met
        low, high = distinct[0], distinct[-1]
        searched = 0
        for run in self._runs:
            if run.high < low or run.low > high:
                continue
            # Only the run's range of values can be in it: where it starts and ends here.
            bounds = (
                distinct.search_sorted(pl.Series([run.low]), side="left"),
                (distinct.search_sorted(pl.Series([run.high]), side="right")),
            )
            start, end = int(bounds[0][0]), int(bounds[1][0])
            if end <= start:
                continue
            candidates = distinct.slice(start, end - start)
            searched += end - start
            at = run.values.search_sorted(candidates, side="left").clip(upper_bound=len(run) - 1)
            hit = run.values.gather(at) == candidates
            if not hit.any():
                continue
            lines = run.lines.gather(at.filter(hit)).cast(pl.Int64)
            met = met.scatter(hit.arg_true() + start, lines)
        self.scattered = 2 * searched > len(distinct)
        return met

    def _remember(self, values: pl.Series, lines: pl.Series) -> None:
        """Keep the chunk's new values as a run, then merge runs until each is at least twice
        the size of the next (about log2(chunks) runs in all)."""
        if values.is_empty():
            return
        # Lines fit 32 bits (a file's line count is below its byte limit): half the memory
        runs = self._runs
        runs.append(_Run(values.set_sorted(), lines.cast(pl.UInt32)))
        while len(runs) > 1 and len(runs[-2]) < 2 * len(runs[-1]):
            newer, older = runs.pop(), runs.pop()
            runs.append(_merged(older, newer))


def _merged(a: _Run, b: _Run) -> _Run:
    """One sorted run from two with no value in common. When their ranges do not overlap
    (growing ids), one follows the other: appended, no value compared."""
    if a.high < b.low or b.high < a.low:
        first, second = (a, b) if a.high < b.low else (b, a)
        values = pl.concat([first.values, second.values], rechunk=False)
        return _Run(values.set_sorted(), pl.concat([first.lines, second.lines], rechunk=False))
    merged = pl.DataFrame([a.values.alias("v"), a.lines.alias("line")]).merge_sorted(
        pl.DataFrame([b.values.alias("v"), b.lines.alias("line")]), key="v"
    )
    return _Run(merged.get_column("v").set_sorted(), merged.get_column("line"))


class ChunkJudge:
    """Applies one schema's rules chunk by chunk and keeps the running counts."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._trim = trimmed_values(schema)
        self._derived = {
            name: _Derived(name, stages) for name, stages in derived_values(schema).items()
        }
        self._rules = row_rules(schema)
        self._normalised = normalised_values(schema)
        self._unique = [c.name for c in schema.columns if c.unique]
        self._seen = {name: SeenValues() for name in self._unique}
        self._unique_codes = {c.code(UNIQUE): c.name for c in schema.columns if c.unique}
        self.rows = 0
        self.valid = 0
        self._reason_counts = dict.fromkeys(self._rules, 0)
        self._sample: list[RejectedRow] = []

    def judge(self, chunk: pl.DataFrame) -> ChunkResult:
        return self.judge_prepared(self.prepare(chunk))

    def prepare(self, chunk: pl.DataFrame) -> pl.DataFrame:
        """The chunk with its trimmed and derived values. Nothing here depends on the chunks
        before (the derived values' memory only saves work), so it may run ahead of
        ``judge_prepared``, on another thread; but one thread at a time, in file order."""
        # One chunk per column: on a frame whose columns are cut differently (the CSV reader
        # makes several pieces, the line numbers one) every later step realigns them first.
        frame = _staged(chunk.rechunk().lazy(), self._trim).collect(engine=_ENGINE)
        frame = self._share_untrimmed(frame)
        return frame.with_columns(
            [derive(frame.get_column(value_col(name))) for name, derive in self._derived.items()]
        )

    @property
    def scattered(self) -> bool:
        """A unique column's ids came in random order in the last chunk judged."""
        return any(seen.scattered for seen in self._seen.values())

    def _share_untrimmed(self, frame: pl.DataFrame) -> pl.DataFrame:
        """A column that trimming left as it was (the usual case) keeps one copy of its text:
        its value column becomes the original, shared, and the trimmed copy is let go.
        Trimming only removes bytes, so equal byte totals mean every value is unchanged."""
        names = self.schema.column_names
        same = frame.select(
            (pl.col(n).str.len_bytes().sum() == pl.col(value_col(n)).str.len_bytes().sum())
            .fill_null(True)
            .alias(n)
            for n in names
        ).row(0)
        shared = [pl.col(n).alias(value_col(n)) for n, ok in zip(names, same, strict=True) if ok]
        return frame.with_columns(shared) if shared else frame

    def judge_prepared(self, frame: pl.DataFrame) -> ChunkResult:
        """Judge a prepared chunk; chunks must come in file order."""
        names = self.schema.column_names
        aligned = bool(frame[FIELD_COUNT_OK].all())
        for column in self._unique:
            frame = frame.with_columns(*self._repeats(frame, column, aligned=aligned))
        judged = (
            frame.lazy()
            .with_columns(**self._rules)
            .with_columns(pl.any_horizontal(list(self._rules)).alias(_INVALID))
            .collect(engine=_ENGINE)
        )
        counts = judged.select(pl.col(list(self._rules)).sum()).row(0, named=True)
        for code, count in counts.items():
            self._reason_counts[code] += int(count)
        valid = (
            judged.lazy()
            .filter(~pl.col(_INVALID))
            .select(pl.col(LINE), *self._normalised.values())
            .collect(engine=_ENGINE)
        )
        reasons = pl.concat_str(
            [pl.when(pl.col(code)).then(self._reason(code)) for code in self._rules],
            separator=";",
            ignore_nulls=True,
        )
        rejects = (
            judged.lazy()
            .filter(pl.col(_INVALID))
            .select(pl.col(LINE), *(pl.col(n) for n in names), reasons.alias(REASONS))
            .collect(engine=_ENGINE)
        )
        self.rows += judged.height
        self.valid += valid.height
        self._keep_sample(rejects)
        return ChunkResult(valid=valid, rejects=rejects)

    def _repeats(
        self, frame: pl.DataFrame, column: str, *, aligned: bool
    ) -> tuple[pl.Series, pl.Series]:
        """Rows whose value appeared earlier in the file (the first occurrence is no repeat),
        and the line of that first occurrence."""
        key = frame[value_col(column)]
        if not aligned:
            # A misaligned row's value is not really this column's: it claims nothing.
            key = frame.select(pl.when(pl.col(FIELD_COUNT_OK)).then(key)).to_series()
        flags, first = self._seen[column].judge(key, frame[LINE])
        return flags.alias(seen_col(column)), first.alias(first_line_col(column))

    def _reason(self, code: str) -> pl.Expr:
        """A broken rule as the rejects show it: its code, and for a repeat where the value
        first appeared (``Order_Id.unique (first on line 2)``)."""
        column = self._unique_codes.get(code)
        if column is None:
            return pl.lit(code)
        line = pl.col(first_line_col(column)).cast(pl.String)
        return pl.concat_str(pl.lit(code), pl.lit(f" ({FIRST_ON_LINE} "), line, pl.lit(")"))

    def _keep_sample(self, rejects: pl.DataFrame) -> None:
        room = SAMPLE_REJECTS - len(self._sample)
        if room <= 0 or rejects.is_empty():
            return
        names = self.schema.column_names
        for row in rejects.head(room).iter_rows(named=True):
            self._sample.append(
                RejectedRow(
                    line=int(row[LINE]),
                    values={n: row[n] for n in names},
                    reasons=tuple(str(row[REASONS]).split(";")),
                )
            )

    def outcome(self, name: str) -> Outcome:
        return Outcome(
            file=name,
            status=ACCEPTED,
            rows=self.rows,
            valid=self.valid,
            invalid=self.rows - self.valid,
            reasons={code: n for code, n in self._reason_counts.items() if n},
            sample_rejects=tuple(self._sample),
        )
