"""JSON Lines: one object per line, keys matched like a header, every value turned into text.

Byte ranges ending on a newline are parsed by polars (a JSON string cannot hold a raw newline,
so a line is always a record). A range polars refuses (a line that is not an object, a nested
value, broken JSON) is read line by line with the json module instead, and only the bad lines
are marked: their field count is wrong, so they fail ``row.field_count`` and the rest of the
file is still read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import polars as pl

from core.validation.limits import Limits
from core.validation.readers.encoding import ChunkDecoder, check_is_text
from core.validation.readers.errors import FileRejected
from core.validation.readers.header import normalise_name
from core.validation.readers.source import Loaded, release
from core.validation.readers.text import FIELD_COUNT_OK, LINE, check_cells, check_line_lengths
from core.validation.readers.text_buffer import Buffer

_RAW = "__raw"
_SAMPLE_LINES = 200
_BOM = b"\xef\xbb\xbf"


def iter_jsonl(
    loaded: Loaded, columns: Sequence[str], limits: Limits, chunk_rows: int
) -> Iterator[pl.DataFrame]:
    buf = loaded.buf
    check_is_text(buf)
    start = len(_BOM) if buf[:3] == _BOM else 0
    check_line_lengths(buf, start, limits)
    keys = _match_keys(buf, start, columns, limits)
    size = len(buf)
    target = max(64 * 1024, chunk_rows * _average_line_bytes(buf, start))
    pos, line, decode = start, 1, ChunkDecoder()
    while pos < size:
        cut = buf.find(b"\n", min(size, pos + target)) if pos + target < size else -1
        end = size if cut == -1 else cut + 1
        frame, lines = _parse_range(decode(buf[pos:end]), line, keys, columns, limits)
        release(buf, pos, end)
        if frame.height:
            yield frame
        line += lines
        pos = end


def _average_line_bytes(buf: Buffer, pos: int) -> int:
    sample = buf[pos : pos + 64 * 1024]
    return max(1, len(sample) // max(1, sample.count(b"\n")))


def _match_keys(buf: Buffer, start: int, columns: Sequence[str], limits: Limits) -> list[str]:
    """The key each column is read from, found in the first objects of the file."""
    sample = buf[start : start + max(64 * 1024, 2 * limits.max_line_bytes)]
    seen: dict[str, str] = {}
    parsed = 0
    for raw in sample.split(b"\n")[:-1] or [sample]:
        if not raw.strip():
            continue
        value = _loads(raw)
        parsed += 1
        if isinstance(value, dict):
            for key in value:
                seen.setdefault(normalise_name(key), key)
        if parsed >= _SAMPLE_LINES:
            break
    if not parsed:
        raise FileRejected("the file holds only blank lines")
    missing = [c for c in columns if normalise_name(c) not in seen]
    if len(missing) == len(columns):
        raise FileRejected(
            "not a readable order file: no line starts a JSON object with order fields"
            if not seen
            else "missing required column(s): " + ", ".join(missing)
        )
    if missing:
        raise FileRejected("missing required column(s): " + ", ".join(missing))
    return [seen[normalise_name(c)] for c in columns]


def _parse_range(
    chunk: bytes, first_line: int, keys: list[str], columns: Sequence[str], limits: Limits
) -> tuple[pl.DataFrame, int]:
    raw = pl.read_csv(
        chunk,
        has_header=False,
        separator="\x00",
        quote_char=None,
        schema={_RAW: pl.String},
        empty_string_is_null=False,
        raise_if_empty=False,
    ).to_series()
    total_lines = raw.len()
    line_no = pl.int_range(first_line, first_line + total_lines, dtype=pl.Int64, eager=True)
    content = raw.str.strip_chars().str.len_bytes() > 0
    line_no, raw = line_no.filter(content), raw.filter(content)
    schema = dict.fromkeys(keys, pl.String)
    try:
        parsed = pl.read_ndjson(chunk, schema=schema)
        if parsed.height != raw.len():
            raise ValueError("polars and the line split disagree")
        values = [parsed.get_column(key).alias(col) for key, col in zip(keys, columns, strict=True)]
        ok = pl.Series(FIELD_COUNT_OK, [True] * raw.len(), dtype=pl.Boolean)
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, ValueError):
        values, ok = _parse_lines(raw, keys, columns)
    frame = pl.DataFrame([line_no.alias(LINE), *values, ok.alias(FIELD_COUNT_OK)])
    check_cells(frame, columns, limits)
    return frame, total_lines


def _parse_lines(
    raw: pl.Series, keys: list[str], columns: Sequence[str]
) -> tuple[list[pl.Series], pl.Series]:
    """Line by line: a line that is not a JSON object keeps its place with no values."""
    values: list[list[str | None]] = [[] for _ in columns]
    ok: list[bool] = []
    for text in raw.to_list():
        obj = _loads(text.encode("utf-8"))
        is_object = isinstance(obj, dict)
        ok.append(is_object)
        for slot, key in zip(values, keys, strict=True):
            slot.append(_as_text(obj.get(key)) if is_object else None)
    series = [pl.Series(col, v, dtype=pl.String) for col, v in zip(columns, values, strict=True)]
    return series, pl.Series(FIELD_COUNT_OK, ok, dtype=pl.Boolean)


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=str)
    except (ValueError, RecursionError):
        return None


def _number_text(value: int | Decimal) -> str:
    # The text polars gives a JSON number: integers as written, floats in their shortest
    # form without exponent or trailing ".0" (19.990 -> "19.99", 1e5 -> "100000").
    if isinstance(value, int):
        return str(value)
    try:
        text = format(Decimal(repr(float(value))), "f")
    except (InvalidOperation, ValueError, OverflowError):
        return str(value)
    return text.rstrip("0").rstrip(".") if "." in text else text


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(type(value).__name__)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal):
        return _number_text(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)
