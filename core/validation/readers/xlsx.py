"""The first sheet of an xlsx workbook, each cell turned into the text a person sees.

python-calamine does the parsing and reports every cell with its own type, so a number cell
becomes its shortest exact decimal at Excel's 15 digits (19.99 stays "19.99", 1999 stays
"1999"), a date cell its ISO date, a text cell its text ("007" stays "007"), and a column mixing
dates and text is read cell by cell.

Before calamine sees the file, the zip is checked: member count, the real (not the declared)
inflated size of every member, so a zip bomb is refused within the limit, and no XML part may
declare a DTD (entity expansion).
"""

from __future__ import annotations

import datetime as dt
import io
import math
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import python_calamine

from core.validation.limits import Limits, human_bytes
from core.validation.readers.errors import FileRejected, is_native_panic
from core.validation.readers.header import (
    HeaderSeen,
    Layout,
    check_looks_like_orders,
    match_header,
    positional,
)
from core.validation.readers.source import Loaded
from core.validation.readers.text import FIELD_COUNT_OK, LINE, check_cells

_INFLATE_BLOCK = 1024 * 1024
# What zipfile raises on damaged archives (unsupported versions and methods included).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)
# Excel shows 15 significant digits; a stored 0.30000000000000004 is the 0.3 a person typed.
_EXCEL_DIGITS = 15
_SAMPLE_ROWS = 50


def iter_xlsx(
    loaded: Loaded,
    columns: Sequence[str],
    limits: Limits,
    chunk_rows: int,
    seen: HeaderSeen | None = None,
) -> Iterator[pl.DataFrame]:
    source = loaded.data_or_path()
    _check_workbook(source, limits)
    try:
        book = (
            python_calamine.CalamineWorkbook.from_path(str(source))
            if isinstance(source, Path)
            else python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(source))
        )
        if not book.sheet_names:
            raise FileRejected("corrupt xlsx: the workbook has no sheet")
        sheet = book.get_sheet_by_index(0)
        cells = sheet.to_python()
        start = sheet.start
    except python_calamine.CalamineError as exc:
        raise FileRejected(f"corrupt xlsx: {_first_line(exc)}") from None
    except BaseException as exc:
        if is_native_panic(exc):
            raise FileRejected(f"corrupt xlsx: {_first_line(exc)}") from None
        raise
    first_row = 1 + (start[0] if start else 0)  # calamine's range starts at the first value
    width = max((len(row) for row in cells), default=0)
    if not cells or width == 0:
        raise FileRejected("the file is empty (the first sheet has no cells)")
    if width > limits.max_columns:
        raise FileRejected(
            f"the first sheet is {width:,} columns wide; the limit is {limits.max_columns:,}"
        )
    text = pl.DataFrame(
        [[_cell_text(row[i]) if i < len(row) else None for row in cells] for i in range(width)],
        schema=[f"c{i}" for i in range(width)],
        orient="col",
    )
    blank = text.select(pl.all_horizontal(pl.all().is_null())).to_series()
    if blank.all():
        raise FileRejected("the file is empty (the first sheet has no values)")
    first = int(blank.arg_min() or 0)
    header = ["" if v is None else str(v) for v in text.row(first)]
    layout = match_header(header, columns) or positional(columns)
    if seen is not None:
        seen.found, seen.first_row = layout.has_header, tuple(header)
    check_looks_like_orders(_sample_rows(text, blank, first), columns, layout)
    values = [
        text.to_series(p) if p < width else pl.Series([None] * text.height, dtype=pl.String)
        for p in layout.positions
    ]
    ok = _field_count_ok(text, layout, len(columns))
    frame = pl.DataFrame(
        [
            pl.int_range(first_row, first_row + text.height, dtype=pl.Int64, eager=True),
            *values,
            ok,
        ],
        schema=[LINE, *columns, FIELD_COUNT_OK],
    )
    skip = blank
    if layout.has_header:
        skip = skip | (pl.int_range(0, text.height, eager=True) == first)
    frame = frame.filter(~skip)
    if frame.height > limits.max_rows:
        raise FileRejected(f"the file has more than {limits.max_rows:,} rows")
    check_cells(frame, columns, limits)
    for lo in range(0, frame.height, chunk_rows):
        yield frame.slice(lo, chunk_rows)


def _sample_rows(text: pl.DataFrame, blank: pl.Series, first: int) -> list[list[str]]:
    """The first non-blank rows, each cut after its last non-empty cell (a sheet is as wide
    as its widest row, so a short row's width is where its values end)."""
    rows = []
    for row in text.filter(~blank).head(_SAMPLE_ROWS).iter_rows():
        cells = ["" if v is None else str(v) for v in row]
        while cells and not cells[-1].strip():
            cells.pop()
        rows.append(cells)
    return rows


def _cell_text(value: Any) -> str | None:
    """One cell as a person sees it; an empty cell is missing."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def _number_text(value: float) -> str:
    """Excel's 15 significant digits, written plainly: never 1e-07 or 19.989999..."""
    if not math.isfinite(value):  # not in a real workbook; kept as written
        return str(value)
    rounded = float(f"{value:.{_EXCEL_DIGITS}g}")
    if rounded.is_integer() and abs(rounded) < 1e15:
        return str(int(rounded))
    return format(Decimal(repr(rounded)), "f")


def _field_count_ok(text: pl.DataFrame, layout: Layout, n_columns: int) -> pl.Series:
    # A sheet has no ragged rows; without a header, a value right of the expected columns
    # means the row does not have the expected shape.
    if layout.has_header or text.width <= n_columns:
        return pl.Series([True] * text.height, dtype=pl.Boolean)
    extra = [pl.col(c).is_not_null() for c in text.columns[n_columns:]]
    return text.select(~pl.any_horizontal(extra)).to_series()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _check_workbook(source: Path | bytes, limits: Limits) -> None:
    """Refuse zip bombs, entity declarations and archives that are not workbooks."""
    try:
        archive = zipfile.ZipFile(source if isinstance(source, Path) else io.BytesIO(source))
    except _ZIP_ERRORS as exc:
        raise FileRejected(f"corrupt xlsx: not a readable zip archive ({exc})") from None
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_xlsx_members:
            raise FileRejected(
                f"corrupt xlsx: {len(members):,} parts in the archive; the limit is "
                f"{limits.max_xlsx_members:,}"
            )
        names = {m.filename for m in members}
        if "[Content_Types].xml" not in names or not any(n.startswith("xl/") for n in names):
            raise FileRejected(
                "not a readable order file: a zip archive that is not an xlsx workbook"
            )
        declared = sum(m.file_size for m in members)
        limit = limits.max_xlsx_uncompressed
        if declared > limit:
            raise FileRejected(
                f"the workbook expands to {human_bytes(declared)};"
                f" the limit is {human_bytes(limit)}"
            )
        _inflate_all(archive, members, limit)


def _inflate_all(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], limit: int) -> None:
    """Inflate every member, counting real bytes: declared sizes can lie. OOXML parts never
    declare a DTD, so one that does (entity expansion) is refused before calamine reads it."""
    total = 0
    try:
        for member in members:
            with archive.open(member) as part:
                head = True
                while block := part.read(_INFLATE_BLOCK):
                    total += len(block)
                    if total > limit:
                        raise FileRejected(
                            f"the workbook expands beyond the {human_bytes(limit)} limit"
                        )
                    if head and (b"<!DOCTYPE" in block[:4096] or b"<!ENTITY" in block[:4096]):
                        raise FileRejected("corrupt xlsx: a workbook part declares XML entities")
                    head = False
    except _ZIP_ERRORS as exc:
        raise FileRejected(f"corrupt xlsx: {exc}") from None
