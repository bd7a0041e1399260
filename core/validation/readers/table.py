"""``iter_table``: from bytes, a binary stream or a path to bounded frames of text columns."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath
from typing import BinaryIO

import polars as pl

from core.validation.limits import Limits
from core.validation.readers.encoding import (
    check_is_text,
    is_cr_only,
    spool_cr_to_lf,
    utf16_to_utf8,
)
from core.validation.readers.errors import FileRejected
from core.validation.readers.header import HeaderSeen
from core.validation.readers.jsonl import iter_jsonl
from core.validation.readers.parquet import iter_parquet
from core.validation.readers.sniff import Format, detect_format
from core.validation.readers.source import Loaded, gunzip, load, spooled
from core.validation.readers.text import FIELD_COUNT_OK, LINE, iter_text
from core.validation.readers.xlsx import iter_xlsx

__all__ = ["FIELD_COUNT_OK", "LINE", "HeaderSeen", "iter_table"]

_SNIFF_BYTES = 8192


def iter_table(
    source: bytes | BinaryIO | os.PathLike[str],
    name: str,
    columns: Sequence[str],
    limits: Limits | None = None,
    chunk_rows: int = 256_000,
    *,
    seen: HeaderSeen | None = None,
) -> Iterator[pl.DataFrame]:
    """Yield the rows of an order file in frames of at most about ``chunk_rows`` rows.

    Raises FileRejected when the file cannot be read as orders. Most problems are found
    before the first frame; a few (the row limit, an oversized value deep in the file) only
    as the reading reaches them, after some frames were yielded. ``seen`` learns whether the
    first row was a header (delimited text and xlsx; other formats are matched by name).
    """
    limits = limits or Limits()
    seen = seen or HeaderSeen()
    if not columns:
        raise ValueError("iter_table needs at least one column")
    chunk_rows = max(1, chunk_rows)
    with load(source, limits) as loaded:
        rows = 0
        for frame in _read(loaded, name, columns, limits, chunk_rows, seen=seen, nested=False):
            # Readers cut on bytes; slices (zero-copy) keep every frame within chunk_rows.
            for lo in range(0, frame.height, chunk_rows):
                piece = frame.slice(lo, chunk_rows)
                rows += piece.height
                if rows > limits.max_rows:
                    raise FileRejected(f"the file has more than {limits.max_rows:,} rows")
                yield piece
        if rows == 0:
            raise FileRejected("no data rows")


def _read(
    loaded: Loaded,
    name: str,
    columns: Sequence[str],
    limits: Limits,
    chunk_rows: int,
    *,
    seen: HeaderSeen,
    nested: bool,
) -> Iterator[pl.DataFrame]:
    buf = loaded.buf
    if len(buf) == 0:
        raise FileRejected("the file is empty")
    kind = detect_format(buf[:_SNIFF_BYTES], name)
    if kind is Format.GZIP:
        if nested:
            raise FileRejected("not a readable order file: gzip inside gzip")
        with spooled(lambda out: gunzip(buf, out, limits)) as inner:
            inner_name = str(PurePosixPath(name).with_suffix("")) if name else name
            yield from _read(inner, inner_name, columns, limits, chunk_rows, seen=seen, nested=True)
        return
    if kind is Format.UTF16:
        # As UTF-8 the text is read like any other (delimited text or JSON Lines).
        with spooled(lambda out: utf16_to_utf8(buf, out, limits)) as utf8:
            yield from _read(utf8, name, columns, limits, chunk_rows, seen=seen, nested=nested)
        return
    if kind is Format.XLSX:
        yield from iter_xlsx(loaded, columns, limits, chunk_rows, seen)
    elif kind is Format.PARQUET:
        yield from iter_parquet(loaded, columns, limits, chunk_rows)
    elif kind is Format.JSONL:
        yield from iter_jsonl(loaded, columns, limits, chunk_rows)
    else:
        yield from _read_text(loaded, columns, limits, chunk_rows, seen)


def _read_text(
    loaded: Loaded, columns: Sequence[str], limits: Limits, chunk_rows: int, seen: HeaderSeen
) -> Iterator[pl.DataFrame]:
    check_is_text(loaded.buf)
    if is_cr_only(loaded.buf):
        with spooled(lambda out: spool_cr_to_lf(loaded.buf, out)) as converted:
            yield from iter_text(converted.buf, columns, limits, chunk_rows, seen)
    else:
        yield from iter_text(loaded.buf, columns, limits, chunk_rows, seen)
