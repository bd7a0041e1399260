"""The first sheet of an xlsx workbook, each cell turned into the text a person sees.

fastexcel (calamine) does the parsing. It reports one type per column, so each needed column
is loaded twice (as text and as numbers) and every cell is resolved on its own: a number cell
becomes its shortest exact decimal (19.99 stays "19.99", 1999 stays "1999"), a date cell its
ISO date, a text cell its text, so a column mixing dates and text is read cell by cell.

Before calamine sees the file, the zip is checked: member count, and the real (not the
declared) inflated size of every member, so a zip bomb is refused within the limit.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from xml.etree import ElementTree as ET  # parsed only after _refuse_dtd  # nosec B405

import fastexcel
import polars as pl

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

_CELL_REF = re.compile(r"([A-Z]+)(\d+)$")
_PLAIN_DECIMAL = r"^-?(0|[1-9]\d*)(\.\d*[1-9])?$"
_DATETIME_TEXT = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?$"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
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
    source = loaded.path if loaded.path is not None else bytes(loaded.buf[:])
    first_row = _check_workbook(source, limits)
    try:
        reader = fastexcel.read_excel(source)
        if not reader.sheet_names:
            raise FileRejected("corrupt xlsx: the workbook has no sheet")
        text = reader.load_sheet(0, header_row=None, dtypes="string").to_polars()
    except fastexcel.FastExcelError as exc:
        raise FileRejected(f"corrupt xlsx: {_first_line(exc)}") from None
    except BaseException as exc:
        if is_native_panic(exc):
            raise FileRejected(f"corrupt xlsx: {_first_line(exc)}") from None
        raise
    if text.height == 0:
        raise FileRejected("the file is empty (the first sheet has no cells)")
    if text.width > limits.max_columns:
        raise FileRejected(
            f"the first sheet is {text.width:,} columns wide; the limit is {limits.max_columns:,}"
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
    values = _cell_texts(reader, text, layout)
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


def _cell_texts(
    reader: fastexcel.ExcelReader, text: pl.DataFrame, layout: Layout
) -> list[pl.Series]:
    wanted = sorted({p for p in layout.positions if p < text.width})
    try:
        numbers = (
            reader.load_sheet(
                0, header_row=None, use_columns=wanted, dtypes="float", dtype_coercion="coerce"
            ).to_polars()
            if wanted
            else pl.DataFrame()
        )
    except fastexcel.FastExcelError as exc:
        raise FileRejected(f"corrupt xlsx: {_first_line(exc)}") from None
    except BaseException as exc:
        if is_native_panic(exc):
            raise FileRejected(f"corrupt xlsx: {_first_line(exc)}") from None
        raise
    by_pos = {p: i for i, p in enumerate(wanted)}
    out: list[pl.Series] = []
    for pos in layout.positions:
        if pos not in by_pos:
            out.append(pl.Series([None] * text.height, dtype=pl.String))
            continue
        out.append(_resolve(text.to_series(pos), numbers.to_series(by_pos[pos])))
    return out


def _fastexcel_number_text(value: float) -> str:
    # How fastexcel writes a number cell as text: nine decimals, trailing zeros dropped.
    rendered = format(value, ".9f")
    return rendered.rstrip("0").rstrip(".") if "." in rendered else rendered


def _number_cells(text: pl.Series, number: pl.Series) -> pl.Series:
    """Which cells are number cells rather than text that parses as one ("007", "1e5").

    The float load coerces numeric-looking text too, so a cell counts as a number only when
    its text is exactly how fastexcel renders that number; a text cell keeps its own spelling.
    Text in plain decimal form with at most 15 significant digits reads the same either way
    (the number's 15-digit form is that text), so only the other cells are checked one by one.
    """
    parsed = number.is_not_null()
    digits = text.str.replace_all(r"[-.]", "").str.strip_chars_start("0").str.strip_chars_end("0")
    plain = text.str.contains(_PLAIN_DECIMAL) & (digits.str.len_chars() <= _EXCEL_DIGITS)
    unsure = parsed & ~plain.fill_null(False)
    if not unsure.any():
        return parsed
    at = unsure.arg_true()
    rendered = [_fastexcel_number_text(v) for v in number.gather(at).to_list()]
    same = (text.gather(at) == pl.Series(rendered, dtype=pl.String)).fill_null(False)
    return parsed.scatter(at, same)


def _resolve(text: pl.Series, number: pl.Series) -> pl.Series:
    """One column's cells, each by its own type."""
    is_number = _number_cells(text, number)
    s, f, n = pl.col("s"), pl.col("f"), pl.col("n")
    is_date = f.is_null() & s.str.contains(_DATETIME_TEXT)
    rounded = f.round_sig_figs(_EXCEL_DIGITS)
    whole = (rounded == rounded.floor()) & (rounded.abs() < 1e15)
    number_text = (
        pl.when(whole)
        .then(rounded.cast(pl.Int64).cast(pl.String))
        .otherwise(rounded.cast(pl.String))
    )
    midnight = s.str.slice(11).str.contains(r"^00:00:00(\.0+)?$")
    column = (
        pl.DataFrame({"s": text, "f": number, "n": is_number})
        .select(
            pl.when(n)
            .then(number_text)
            .when(is_date & midnight)
            .then(s.str.slice(0, 10))
            .otherwise(s)
            .alias("v")
        )
        .to_series()
    )
    exponent = column.str.contains("e", literal=True) & is_number
    if exponent.any():
        at = exponent.arg_true()
        fixed = [_plain_decimal(v) for v in column.gather(at).to_list()]
        column = column.scatter(at, pl.Series(fixed, dtype=pl.String))
    return column


def _plain_decimal(value: str | None) -> str | None:
    """``"5e-7"`` -> ``"0.0000005"``: a spreadsheet never shows exponent notation by default."""
    if value is None:
        return None
    return format(Decimal(value), "f")


def _field_count_ok(text: pl.DataFrame, layout: Layout, n_columns: int) -> pl.Series:
    # A sheet has no ragged rows; without a header, a value right of the expected columns
    # means the row does not have the expected shape.
    if layout.has_header or text.width <= n_columns:
        return pl.Series([True] * text.height, dtype=pl.Boolean)
    extra = [pl.col(c).is_not_null() for c in text.columns[n_columns:]]
    return text.select(~pl.any_horizontal(extra)).to_series()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _check_workbook(source: Path | bytes, limits: Limits) -> int:
    """Refuse zip bombs and non-workbooks; return the sheet row of the first value."""
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
        sheet = _first_sheet_path(archive, names)
        return _first_value_row(archive, sheet) if sheet else 1


def _inflate_all(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], limit: int) -> None:
    """Inflate every member, counting real bytes: declared sizes can lie."""
    total = 0
    try:
        for member in members:
            with archive.open(member) as part:
                while block := part.read(_INFLATE_BLOCK):
                    total += len(block)
                    if total > limit:
                        raise FileRejected(
                            f"the workbook expands beyond the {human_bytes(limit)} limit"
                        )
    except _ZIP_ERRORS as exc:
        raise FileRejected(f"corrupt xlsx: {exc}") from None


def _first_sheet_path(archive: zipfile.ZipFile, names: set[str]) -> str | None:
    try:
        workbook = _parse_part(archive.read("xl/workbook.xml"))
        rels = _parse_part(archive.read("xl/_rels/workbook.xml.rels"))
    except (KeyError, ET.ParseError, *_ZIP_ERRORS):
        return None
    sheet = next((e for e in workbook.iter() if e.tag.endswith("}sheet")), None)
    rel_id = sheet.get(f"{{{_REL_NS}}}id") if sheet is not None else None
    for rel in rels.iter():
        if rel.get("Id") == rel_id:
            target = rel.get("Target", "")
            path = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
            return path if path in names else None
    return None


def _refuse_dtd(head: bytes) -> None:
    # OOXML parts never declare a DTD; refusing one rules out entity-expansion attacks before
    # expat sees the part (expat 2.4+ also limits amplification).
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        raise FileRejected("corrupt xlsx: a workbook part declares XML entities")


def _parse_part(data: bytes) -> ET.Element:
    _refuse_dtd(data)
    # Safe to parse: DTDs (so entity expansion) are refused just above.
    return ET.fromstring(data)  # noqa: S314  # nosec B314


def _first_value_row(archive: zipfile.ZipFile, sheet: str) -> int:
    """The row of the first cell holding a value: where calamine's range starts."""
    try:
        with archive.open(sheet) as head:
            _refuse_dtd(head.read(4096))
        with archive.open(sheet) as part:
            row_no = 0
            # Safe to parse: DTDs (so entity expansion) are refused just above.
            for _event, elem in ET.iterparse(part, events=("end",)):  # noqa: S314  # nosec B314
                tag = elem.tag.rsplit("}", 1)[-1]
                if tag == "row":
                    row_no = int(elem.get("r", row_no + 1))
                    elem.clear()
                elif tag == "c" and any(
                    child.tag.rsplit("}", 1)[-1] in ("v", "is") for child in elem
                ):
                    match = _CELL_REF.match(elem.get("r", ""))
                    return int(match.group(2)) if match else row_no + 1
    except (ET.ParseError, *_ZIP_ERRORS):
        return 1
    return 1
