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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, Final

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

DEFAULT_CHUNK_ROWS = 256_000
_DISTINCT_SAMPLE = 4096  # rows that tell whether a column repeats its values
# A chunk is already bounded: the in-memory engine runs a plan's expressions side by side and
# keeps each column in one piece; the streaming engine would cut them into morsels again.
_ENGINE: Final = "in-memory"
REASONS = "reasons"
_INVALID = "__invalid__"

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
    for chunk in chunks:
        result = judge.judge(chunk)
        if on_chunk is not None:
            on_chunk(result)
    return judge.outcome(name)


def _staged(frame: pl.LazyFrame, stages: list[list[pl.Expr]]) -> pl.LazyFrame:
    for stage in stages:
        frame = frame.with_columns(stage)
    return frame


def _derive(values: pl.Series, name: str, stages: list[list[pl.Expr]]) -> pl.Series:
    """``parsed_col(name)`` for every row, computed once per distinct value when values repeat.

    Dates and statuses repeat (a file spans some days and holds three statuses), and parsing
    a date takes a dozen string and integer passes: on the distinct values and mapped back, a
    million rows cost a few hash lookups each. A column of mostly distinct values (totals)
    is parsed directly, where mapping back would only add work; its first rows tell which.
    """
    head = values.head(_DISTINCT_SAMPLE)
    distinct = None
    if 2 * head.n_unique() <= len(head):
        distinct = values.unique()
        if 2 * len(distinct) > len(values):
            distinct = None
    source = values if distinct is None else distinct
    plan = _staged(source.to_frame().lazy(), stages).select(parsed_col(name))
    parsed = plan.collect(engine=_ENGINE)
    if distinct is None:
        return parsed.to_series()
    mapped = values.replace_strict(distinct, parsed.to_series(), default=None)
    return mapped.alias(parsed_col(name))


def _ascending(values: pl.Series) -> bool:
    """The values (no nulls) already ascend: an export's ids usually do."""
    return len(values) < 2 or bool((values.slice(1) > values.slice(0, len(values) - 1)).all())


class SeenValues:
    """Which values of a unique column already appeared earlier in the file, exactly, and the
    line of each one's first occurrence.

    Each chunk's values are sorted once, with their lines (equal values in line order).
    Repeats within the chunk are neighbours in that order (and are rare, so only their rows are
    looked at again). For earlier chunks, one sorted copy of each is kept with its lines, and a
    new chunk is compared with an earlier one only within the earlier chunk's range of values:
    order ids mostly grow through a file, so few values qualify and each is found by binary
    search; when many do (ids in random order), one vectorised hash probe per earlier chunk.
    Memory: one sorted copy of the ids, about 16-30 bytes each (a string view plus any text
    beyond 12 bytes) and 4 for the line, so about 170 MB for 5M ids.
    """

    # Binary search pays while the candidates are a small share of the earlier chunk.
    _SEARCH_SHARE = 8

    def __init__(self) -> None:
        # each (sorted non-null values, the line of each); equal values in line order
        self._earlier: list[tuple[pl.Series, pl.Series]] = []

    def repeats(self, values: pl.Series) -> pl.Series:
        """Flag each value that appeared before it in the file; then remember the chunk."""
        lines = pl.int_range(1, len(values) + 1, dtype=pl.Int64, eager=True)
        return self.judge(values, lines)[0]

    def judge(self, values: pl.Series, lines: pl.Series) -> tuple[pl.Series, pl.Series]:
        """``(repeat flags, first lines)``: per row, whether its value appeared earlier in the
        file and, for a repeat, the line of the value's first occurrence (else null)."""
        ordered, ordered_lines = values, lines
        if values.has_nulls():
            present = values.is_not_null()
            ordered, ordered_lines = values.filter(present), lines.filter(present)
        if _ascending(ordered):
            ordered = ordered.set_sorted()
        else:
            # By value then line: equal values in line order (and faster than a stable sort)
            frame = pl.DataFrame([ordered.alias("v"), ordered_lines.alias("line")])
            frame = frame.sort(["v", "line"])
            ordered = frame.to_series(0).alias(values.name).set_sorted()
            ordered_lines = frame.to_series(1)
        flags, first = self._repeats_in_chunk(values, lines, ordered)
        found_values, found_lines = self._found_earlier(ordered)
        if not found_values.is_empty():
            earlier = values.is_in(found_values.implode()).fill_null(False)
            at = earlier.arg_true()
            earliest = values.gather(at).replace_strict(
                found_values, found_lines, default=None, return_dtype=pl.Int64
            )
            flags = flags | earlier
            first = first.scatter(at, earliest)
        if not ordered.is_empty():
            # Lines fit 32 bits (a file's line count is below its byte limit): half the memory
            self._earlier.append((ordered, ordered_lines.cast(pl.UInt32)))
        return flags.alias(values.name), first

    @staticmethod
    def _repeats_in_chunk(
        values: pl.Series, lines: pl.Series, ordered: pl.Series
    ) -> tuple[pl.Series, pl.Series]:
        none = pl.repeat(False, len(values), dtype=pl.Boolean, eager=True)
        no_line = pl.repeat(None, len(values), dtype=pl.Int64, eager=True)
        twice = ordered.filter(ordered == ordered.shift(1)).unique()
        if twice.is_empty():
            return none, no_line
        rows = values.is_in(twice.implode()).fill_null(False)
        positions = rows.arg_true()
        frame = pl.DataFrame([values.filter(rows).alias("v"), lines.filter(rows).alias("l")])
        marked = frame.select(
            (~pl.col("v").is_first_distinct()).alias("later"),
            pl.col("l").first().over("v").cast(pl.Int64).alias("first"),
        )
        later = marked.to_series(0)
        return (
            none.scatter(positions.filter(later), True),
            no_line.scatter(positions.filter(later), marked.to_series(1).filter(later)),
        )

    def _found_earlier(self, ordered: pl.Series) -> tuple[pl.Series, pl.Series]:
        """The values of ``ordered`` met in earlier chunks, each once, with its first line."""
        none = ordered.clear(), pl.Series("line", [], dtype=pl.Int64)
        if not self._earlier or ordered.is_empty():
            return none
        # Where each earlier chunk's range of values starts and ends in this one: two
        # vectorised searches for all earlier chunks, not two calls per chunk.
        firsts = pl.Series([earlier[0] for earlier, _ in self._earlier], dtype=ordered.dtype)
        lasts = pl.Series([earlier[-1] for earlier, _ in self._earlier], dtype=ordered.dtype)
        starts = ordered.search_sorted(firsts, side="left").to_list()
        ends = ordered.search_sorted(lasts, side="right").to_list()
        found: list[pl.DataFrame] = []
        for (earlier, lines), start, end in zip(self._earlier, starts, ends, strict=True):
            if end <= start:
                continue
            candidates = ordered.slice(start, end - start)
            if len(candidates) * self._SEARCH_SHARE >= len(earlier):
                candidates = candidates.filter(candidates.is_in(earlier.implode()))
            if candidates.is_empty():
                continue
            # The leftmost equal value is its first occurrence in that chunk (stable order).
            at = earlier.search_sorted(candidates, side="left").clip(upper_bound=len(earlier) - 1)
            hit = earlier.gather(at) == candidates
            found.append(
                pl.DataFrame([candidates.filter(hit).alias("v"), lines.gather(at).filter(hit)])
            )
        if not found:
            return none
        # Earlier chunks come in file order: a value's first chunk holds its first line.
        first = pl.concat(found).unique(subset="v", keep="first", maintain_order=True)
        return first.to_series(0).alias(ordered.name), first.to_series(1).cast(pl.Int64)


class ChunkJudge:
    """Applies one schema's rules chunk by chunk and keeps the running counts."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._trim = trimmed_values(schema)
        self._derived = derived_values(schema)
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
        names = self.schema.column_names
        # One chunk per column: on a frame whose columns are cut differently (the CSV reader
        # makes several pieces, the line numbers one) every later step realigns them first.
        frame = _staged(chunk.rechunk().lazy(), self._trim).collect(engine=_ENGINE)
        aligned = bool(frame[FIELD_COUNT_OK].all())
        for column in self._unique:
            frame = frame.with_columns(*self._repeats(frame, column, aligned=aligned))
        frame = frame.with_columns(
            [
                _derive(frame.get_column(value_col(name)), name, stages)
                for name, stages in self._derived.items()
            ]
        )
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
