"""Delimited text (UTF-8, LF or CRLF) into bounded frames, parsed by polars.

Hand-written around polars because no CSV library reports each bad row's source line and field
count exactly while staying columnar.

The buffer is cut into byte ranges that end on a record boundary (a newline outside quotes:
quote parity is a C-speed ``count``), and polars parses each range, with no Python pass over
the rows:

- an unquoted range whose rows all have the header's width (the usual case) takes one read:
  polars refuses rows that are too long, and the separator total proves none is too short;
- any other range takes two: the fields (longer rows truncated to the header's width) and the
  raw lines (one column, no quoting, separated on NUL, which a text file never holds), whose
  byte lengths give the field count of an unquoted row (length - sum of field lengths + 1:
  exact up to the width, above it for a longer row) and tell blank lines apart from rows of
  empty fields.

A range where a quoted value spans lines (the two reads disagree on the row count), or that
polars refuses, is read by Python's csv module instead, which follows physical lines exactly.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import polars as pl

from core.validation.limits import Limits, human_bytes
from core.validation.readers.encoding import ChunkDecoder
from core.validation.readers.errors import FileRejected
from core.validation.readers.header import (
    DELIMITERS,
    HeaderSeen,
    Layout,
    check_looks_like_orders,
    detect_delimiter,
    match_header,
    positional,
    split_rows,
)
from core.validation.readers.source import release
from core.validation.readers.text_buffer import Buffer

LINE = "line"
FIELD_COUNT_OK = "field_count_ok"
_RAW = "__raw"
_NFIELDS = "__nfields"
_LONGEST = "__longest"
_RELEASE_EVERY = 64 * 1024 * 1024
_SAMPLE_BYTES = 64 * 1024
# A quoted field: opens right after a separator (or at the start), "" escapes a quote.
_QUOTED_FIELD = '(^|{sep})"(?:[^"]|"")*"'


@dataclass(frozen=True)
class _Plan:
    delimiter: str
    layout: Layout
    body_start: int  # byte offset of the first line after the header
    body_line: int  # 1-based line number at body_start


def iter_text(
    buf: Buffer,
    columns: Sequence[str],
    limits: Limits,
    chunk_rows: int,
    seen: HeaderSeen | None = None,
) -> Iterator[pl.DataFrame]:
    start = 3 if buf[:3] == b"\xef\xbb\xbf" else 0  # a BOM never reaches the first cell
    check_line_lengths(buf, start, limits)
    plan = _plan(buf, start, columns, limits, seen or HeaderSeen())
    yield from _iter_ranges(buf, plan, columns, limits, chunk_rows)


def check_line_lengths(buf: Buffer, start: int, limits: Limits) -> None:
    """Reject a line longer than the limit without scanning line by line.

    Any run of more than ``limit`` bytes without a newline covers a whole aligned window of
    ``limit // 2`` bytes, so only windows with no newline need a closer look.
    """
    limit = limits.max_line_bytes
    window = max(1, limit // 2)
    size = len(buf)
    released = start
    for lo in range(start, size, window):
        hi = min(size, lo + window)
        if hi - released >= _RELEASE_EVERY:
            release(buf, released, lo)  # scanned pages need not stay resident
            released = lo
        if hi - lo < window or buf.find(b"\n", lo, hi) != -1:
            continue
        line_start = max(start, buf.rfind(b"\n", start, lo) + 1)
        # Look no further than the limit: a 1 GB line is judged from its first megabyte.
        stop = min(size, line_start + limit + 1)
        line_end = buf.find(b"\n", lo, stop)
        line_end = stop if line_end == -1 else line_end
        if line_end - line_start > limit:
            line_no = buf.count(b"\n", 0, line_start) + 1
            raise FileRejected(
                f"line {line_no} is longer than the {human_bytes(limit)} line limit"
                " (an order line is usually under 200 bytes)"
            )
    # The kernel maps pages around each one touched: without this, about half the file would
    # stay resident until the ranges reach it.
    release(buf, released, size)


def _plan(
    buf: Buffer, start: int, columns: Sequence[str], limits: Limits, seen: HeaderSeen
) -> _Plan:
    first_line = _first_content_line(buf, start)
    if first_line >= len(buf):
        raise FileRejected("the file holds only blank lines")
    # The first rows decide the delimiter and the header: 64 KB holds them unless lines are
    # very long; only then is the sample widened to two of the longest lines allowed.
    sample_end = min(len(buf), first_line + _SAMPLE_BYTES)
    if buf.count(b"\n", first_line, sample_end) < 2:
        sample_end = min(len(buf), first_line + max(_SAMPLE_BYTES, 2 * limits.max_line_bytes))
    raw = buf[first_line:sample_end]
    if sample_end < len(buf):
        cut = raw.rfind(b"\n")
        raw = raw[: cut + 1] if cut > 0 else raw
    sample = raw.decode("utf-8", errors="replace")
    if not sample.strip():
        raise FileRejected("the file is empty" if not sample else "the file holds only blank lines")
    _check_width(sample, limits)
    delimiter = detect_delimiter(sample, columns)
    rows = split_rows(sample, delimiter)
    first = rows[0] if rows else []
    if len(first) > limits.max_columns:
        raise FileRejected(
            f"the first row has {len(first):,} fields; the limit is {limits.max_columns:,}"
        )
    layout = match_header(first, columns) or positional(columns)
    seen.found, seen.first_row = layout.has_header, tuple(first)
    check_looks_like_orders(rows, columns, layout)
    if not layout.has_header:
        return _Plan(delimiter, layout, start, 1)
    # The header is the first non-blank record; it may be preceded by blank lines.
    header_end = _boundary(buf, first_line, first_line, limits.max_line_bytes)
    return _Plan(delimiter, layout, header_end, buf.count(b"\n", 0, header_end) + 1)


def _check_width(sample: str, limits: Limits) -> None:
    """Refuse an absurdly wide first row before any parser splits it into a million cells."""
    first = next((line for line in sample.split("\n", 64) if line.strip()), "")
    widest = max(first.count(d) for d in DELIMITERS) + 1
    if widest > limits.max_columns:
        raise FileRejected(
            f"the first row has {widest:,} fields; the limit is {limits.max_columns:,}"
        )


def _first_content_line(buf: Buffer, start: int) -> int:
    """Offset of the first line holding more than whitespace (``len(buf)`` if none does)."""
    for lo in range(start, len(buf), _SAMPLE_BYTES):
        block = buf[lo : lo + _SAMPLE_BYTES]
        content = block.lstrip()
        if content:
            at = lo + len(block) - len(content)
            return max(start, buf.rfind(b"\n", start, at) + 1)
    return len(buf)


def _boundary(buf: Buffer, pos: int, at: int, max_span: int) -> int:
    """Offset just after the first newline at or after ``at`` that ends a record begun at ``pos``.

    A newline ends a record only when the quotes before it (from ``pos``) are balanced; an
    escaped quote ``""`` counts twice, so parity still holds. Parity is carried from newline
    to newline, so the search is linear. A quote left open for more than ``max_span`` bytes is
    a stray quote, not a value: the range is cut there anyway and the overlong value it
    produces is rejected by the value-size check.
    """
    end = buf.find(b"\n", at)
    if end == -1:
        return len(buf)
    if buf.find(b'"', pos, end) == -1:
        return end + 1  # no quote at all (a memchr, not a count): the usual case
    odd = buf.count(b'"', pos, end) % 2
    while odd:
        following = buf.find(b"\n", end + 1)
        if following == -1:
            return len(buf)
        if following - at > max_span:
            break
        odd ^= buf.count(b'"', end, following) % 2
        end = following
    return end + 1


def _iter_ranges(
    buf: Buffer, plan: _Plan, columns: Sequence[str], limits: Limits, chunk_rows: int
) -> Iterator[pl.DataFrame]:
    size = len(buf)
    pos, line = plan.body_start, plan.body_line
    target = max(64 * 1024, chunk_rows * _average_line_bytes(buf, pos))
    decode = ChunkDecoder()
    # After a range with ragged rows the next one likely has some too: go straight to the
    # row-by-row reads until a range comes out clean again.
    try_uniform = True
    while pos < size:
        end = (
            _boundary(buf, pos, pos + target, limits.max_line_bytes)
            if pos + target < size
            else size
        )
        chunk = decode(buf[pos:end])
        try:
            frame, lines = _parse_range(chunk, line, plan, columns, limits, try_uniform=try_uniform)
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException):
            # Quoting polars will not accept (a stray quote in a field): the csv module is
            # lenient, exact about lines, and only this range pays for it.
            frame, lines = _parse_with_csv_module(chunk, line, plan, columns, limits)
        release(buf, pos, end)
        try_uniform = frame.height == lines and bool(frame.get_column(FIELD_COUNT_OK).all())
        if frame.height:
            yield frame
        line += lines
        pos = end


def _average_line_bytes(buf: Buffer, pos: int) -> int:
    sample = buf[pos : pos + _SAMPLE_BYTES]
    return max(1, len(sample) // max(1, sample.count(b"\n")))


def _field_names(width: int) -> list[str]:
    return [f"__f{i}" for i in range(width)]


def _read_fields(
    chunk: bytes, delimiter: str, names: list[str], *, quoted: bool, ragged: bool = False
) -> pl.DataFrame:
    """Every field as text, empty fields as "" (a missing one is null). A range without quotes
    parses faster with quoting off; ``ragged`` truncates over-long rows instead of failing."""
    return pl.read_csv(
        chunk,
        has_header=False,
        separator=delimiter,
        quote_char='"' if quoted else None,
        schema=dict.fromkeys(names, pl.String),
        missing_columns="insert",
        truncate_ragged_lines=ragged,
        # Without it a range whose first row is too long is refused outright (polars sizes
        # the row from it) and falls to the slow row-by-row read.
        extra_columns="ignore" if ragged else "raise",
        empty_string_is_null=False,
        raise_if_empty=False,
    )


def _parse_range(
    chunk: bytes,
    first_line: int,
    plan: _Plan,
    columns: Sequence[str],
    limits: Limits,
    *,
    try_uniform: bool = True,
) -> tuple[pl.DataFrame, int]:
    """The rows of one range, and how many physical lines it spans."""
    uniform = _parse_uniform(chunk, first_line, plan, columns, limits) if try_uniform else None
    if uniform is not None:
        return uniform
    # Exactly the header's width, longer rows truncated: their extra fields still show in
    # the byte count below (line length - field lengths + 1 comes out above the width).
    names = _field_names(plan.layout.width)
    quoted = b'"' in chunk
    fields = _read_fields(chunk, plan.delimiter, names, quoted=quoted, ragged=True)
    lines = pl.read_csv(
        chunk,
        has_header=False,
        separator="\x00",
        quote_char=None,
        schema={_RAW: pl.String},
        empty_string_is_null=False,
        raise_if_empty=False,
    )
    if fields.height != lines.height:
        return _parse_with_csv_module(chunk, first_line, plan, columns, limits)
    raw = lines.to_series()
    line_bytes = pl.col(_RAW).str.len_bytes()
    value_bytes = pl.sum_horizontal(pl.col(n).str.len_bytes() for n in names)
    # Unquoted row: its separators are exactly the bytes that are not field text.
    measured = fields.with_columns(raw).select(
        (line_bytes.cast(pl.Int64) - value_bytes.cast(pl.Int64) + 1).alias(_NFIELDS),
        line_bytes.max().alias(_LONGEST),
    )
    nfields = measured.to_series(0)
    longest = int(measured[_LONGEST][0] or 0) if measured.height else 0
    if quoted:
        nfields = _count_quoted_fields(raw, nfields, plan.delimiter)
    out = pl.DataFrame(
        [
            pl.int_range(first_line, first_line + fields.height, dtype=pl.Int64, eager=True),
            *_values(fields, nfields, plan.layout, columns),
            nfields == plan.layout.width,
        ],
        schema=[LINE, *columns, FIELD_COUNT_OK],
    )
    blank = _blank_lines(raw, nfields)
    if blank is not None:
        out = out.filter(~blank)
    if longest > limits.max_cell_bytes:
        check_cells(out, columns, limits)
    return out.rechunk(), lines.height


def _values(
    fields: pl.DataFrame, nfields: pl.Series, layout: Layout, columns: Sequence[str]
) -> list[pl.Series]:
    values = [fields.to_series(pos) for pos in layout.positions]
    shortest = nfields.min()
    if shortest is None or int(shortest) >= layout.width:  # type: ignore[arg-type]
        return values
    # a missing field reads as "", but the contract says null: the row has no such field
    none = pl.lit(None, dtype=pl.String)
    return [
        pl.select(pl.when(nfields > pos).then(value).otherwise(none)).to_series()
        for value, pos in zip(values, layout.positions, strict=True)
    ]


def _parse_uniform(
    chunk: bytes, first_line: int, plan: _Plan, columns: Sequence[str], limits: Limits
) -> tuple[pl.DataFrame, int] | None:
    """The common case in one read: a range whose every row has the right width.

    Read with exactly ``width`` columns and ragged lines refused, polars fails on any row
    with too many fields. If it succeeds, no row has more than ``width`` fields, so the
    range's separator count equals ``(width - 1) * rows`` only when every row has exactly
    ``width`` (a short row or a blank line would bring it below). Separators inside quoted
    values are counted in the values and taken off; a value spanning lines sends the range
    to the row-by-row path (line numbers would drift). Otherwise: None, and the range is
    measured row by row.
    """
    width = plan.layout.width
    if width < 2:
        return None  # one column: a blank line would pass for a row
    quoted = b'"' in chunk
    try:
        fields = _read_fields(chunk, plan.delimiter, _field_names(width), quoted=quoted)
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException):
        return None
    rows = fields.height
    if rows == 0:
        return None
    separators = chunk.count(plan.delimiter.encode())
    if quoted:
        if chunk.count(b"\n") != rows - (not chunk.endswith(b"\n")):
            return None  # a quoted value spans lines
        in_values = fields.select(
            pl.sum_horizontal(pl.all().str.count_matches(plan.delimiter, literal=True)).sum()
        ).item()
        separators -= int(in_values or 0)
    if separators != (width - 1) * rows:
        return None
    out = pl.DataFrame(
        [
            pl.int_range(first_line, first_line + rows, dtype=pl.Int64, eager=True),
            *(fields.to_series(pos) for pos in plan.layout.positions),
            pl.repeat(True, rows, dtype=pl.Boolean, eager=True),
        ],
        schema=[LINE, *columns, FIELD_COUNT_OK],
    )
    if _may_hold_line_over(chunk, limits.max_cell_bytes):
        check_cells(out, columns, limits)
    return out.rechunk(), rows


def _may_hold_line_over(chunk: bytes, limit: int) -> bool:
    """False when no line of ``chunk`` can be longer than ``limit`` (so neither can a value).

    A longer line covers a whole aligned window of ``limit // 2`` bytes with no newline; a
    find per window stops at the first newline, a few dozen bytes in.
    """
    window = max(1, limit // 2)
    size = len(chunk)
    return any(
        chunk.find(b"\n", lo, lo + window) == -1 for lo in range(0, size - window + 1, window)
    )


def _count_quoted_fields(raw: pl.Series, nfields: pl.Series, delimiter: str) -> pl.Series:
    """Field counts of rows holding quotes: separators left once quoted sections are cut out."""
    quoted_rows = raw.str.contains('"', literal=True)
    if not quoted_rows.any():
        return nfields
    at = quoted_rows.arg_true()
    # Quoted fields shrink to nothing (their separators with them); a quote inside an
    # unquoted field (12" pizza) is only a character, as polars reads it.
    pattern = _QUOTED_FIELD.format(sep=re.escape(delimiter))
    counts = (
        raw.gather(at)
        .str.replace_all(pattern, "${1}")
        .str.count_matches(delimiter, literal=True)
        .cast(pl.Int64)
    )
    return nfields.scatter(at, counts + 1)


def _blank_lines(raw: pl.Series, nfields: pl.Series) -> pl.Series | None:
    """Mask of empty or whitespace-only lines, or None when there is none (the usual case)."""
    single = nfields == 1
    if not single.any():
        return None
    blank = single & (raw.str.strip_chars().str.len_bytes() == 0)
    return blank if blank.any() else None


def check_cells(frame: pl.DataFrame, columns: Sequence[str], limits: Limits) -> None:
    if not frame.height:
        return
    longest = frame.select(
        pl.max_horizontal(pl.col(c).str.len_bytes().max() for c in columns)
    ).item()
    if longest is not None and longest > limits.max_cell_bytes:
        offender = frame.filter(
            pl.max_horizontal(pl.col(c).str.len_bytes() for c in columns) > limits.max_cell_bytes
        )
        line = offender[LINE][0]
        raise FileRejected(
            f"line {line} holds a value of {human_bytes(int(longest))};"
            f" the limit is {human_bytes(limits.max_cell_bytes)}"
        )


def _parse_with_csv_module(
    chunk: bytes, first_line: int, plan: _Plan, columns: Sequence[str], limits: Limits
) -> tuple[pl.DataFrame, int]:
    """Exact physical line numbers when quoted values span lines (rare; Python speed).

    Returns the rows and the number of physical lines the range spans.
    """
    # A process-wide setting, so only ever raised; values are held to our own limit below.
    field_limit = max(csv.field_size_limit(), limits.max_line_bytes + 1)
    csv.field_size_limit(field_limit)
    text = chunk.decode("utf-8", errors="replace")
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=plan.delimiter,
        quoting=csv.QUOTE_MINIMAL if b'"' in chunk else csv.QUOTE_NONE,
        strict=False,
    )
    lines: list[int] = []
    counts: list[int] = []
    values: list[list[str | None]] = [[] for _ in columns]
    consumed = 0
    try:
        for row in reader:
            start_line = first_line + consumed
            consumed = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            lines.append(start_line)
            counts.append(len(row))
            for slot, pos in zip(values, plan.layout.positions, strict=True):
                slot.append(row[pos] if pos < len(row) else None)
    except csv.Error as exc:
        line = first_line + consumed  # the record being read when it failed
        if "field limit" in str(exc):
            raise FileRejected(
                f"line {line} holds a value of more than {human_bytes(field_limit - 1)};"
                f" the limit is {human_bytes(limits.max_cell_bytes)}"
            ) from None
        raise FileRejected(f"line {line} cannot be read as delimited text: {exc}") from None
    frame = pl.DataFrame(
        {
            LINE: pl.Series(lines, dtype=pl.Int64),
            **{c: pl.Series(v, dtype=pl.String) for c, v in zip(columns, values, strict=True)},
            FIELD_COUNT_OK: pl.Series([n == plan.layout.width for n in counts], dtype=pl.Boolean),
        }
    )
    check_cells(frame, columns, limits)
    return frame, chunk.count(b"\n") + (not chunk.endswith(b"\n"))
