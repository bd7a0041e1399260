"""Finding the header row and the delimiter of a delimited text file.

A first row is a header when one of its cells names a requested column, compared ignoring
case, spaces, ``_`` and ``-`` (``order id``, ``ORDER_ID`` and ``OrderId`` all name Order_Id).
A data row never does: order values are codes, dates and amounts, not column names.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

from core.validation.readers.errors import FileRejected

DELIMITERS = (",", ";", "\t", "|")
_IGNORED = re.compile(r"[\s_\-]+")
_SAMPLE_ROWS = 50


def normalise_name(name: str) -> str:
    return _IGNORED.sub("", name.strip().lstrip("\ufeff")).casefold()


@dataclass(frozen=True)
class Layout:
    """Where each requested column sits in a row, and how wide a correct row is."""

    has_header: bool
    # Index of each requested column among a row's fields, in requested order.
    positions: tuple[int, ...]
    # Number of fields a correct row has.
    width: int


def match_header(cells: Sequence[str], columns: Sequence[str]) -> Layout | None:
    """The layout when ``cells`` is a header, None when it is a data row.

    Raises FileRejected when it is a header that lacks a requested column.
    """
    index: dict[str, int] = {}
    for i, cell in enumerate(cells):
        index.setdefault(normalise_name(cell), i)  # a repeated name: the first one counts
    wanted = [normalise_name(c) for c in columns]
    if not any(w in index for w in wanted):
        return None
    missing = [c for c, w in zip(columns, wanted, strict=True) if w not in index]
    if missing:
        raise FileRejected("missing required column(s): " + ", ".join(missing))
    return Layout(True, tuple(index[w] for w in wanted), len(cells))


@dataclass
class HeaderSeen:
    """What a reader learned about the file's first row, for the engine's file-level rule.

    ``found`` is False when the first row names none of the schema's columns (it is read as
    data); ``first_row`` keeps its cells so a refusal can say what the file holds instead.
    """

    found: bool = True
    first_row: tuple[str, ...] = ()


_SHOWN_CELLS = 8
_SHOWN_CHARS = 40


def not_orders_message(columns: Sequence[str], first_row: Sequence[str]) -> str:
    """The sentence for a file that is not an order file: what was expected, what was found."""
    cells = [" ".join(c.split()) for c in first_row[:_SHOWN_CELLS]]
    cells = [c if len(c) <= _SHOWN_CHARS else c[: _SHOWN_CHARS - 1] + "…" for c in cells]
    more = ", …" if len(first_row) > _SHOWN_CELLS else ""
    found = ", ".join(repr(c) if not c or "," in c else c for c in cells) + more
    return (
        "this does not look like an order file: expected "
        + ", ".join(columns)
        + f"; found {found or 'an empty first row'}"
    )


def check_looks_like_orders(
    rows: Sequence[Sequence[str]], columns: Sequence[str], layout: Layout
) -> None:
    """Refuse a file whose first row names no schema column and whose rows mostly have the
    wrong number of fields: a customer list or source code, not orders with a missing header.

    ``rows`` are the file's first records, the header candidate first. A headerless order file
    (rows as wide as the schema) passes, however many of its values are wrong.
    """
    if layout.has_header or not rows:
        return
    wrong = sum(1 for row in rows if len(row) != len(columns))
    if 2 * wrong > len(rows):
        raise FileRejected(not_orders_message(columns, rows[0]))


def positional(columns: Sequence[str]) -> Layout:
    return Layout(False, tuple(range(len(columns))), len(columns))


def split_rows(text: str, delimiter: str, limit: int = _SAMPLE_ROWS) -> list[list[str]]:
    """The first non-blank records of ``text`` parsed with RFC 4180 quoting."""
    rows: list[list[str]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    try:
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):  # blank lines are not rows
                rows.append(row)
                if len(rows) >= limit:
                    break
    except csv.Error:
        pass  # a sample cut inside a quoted value: what was read so far is enough
    return rows


def detect_delimiter(sample: str, columns: Sequence[str]) -> str:
    """The candidate delimiter that best explains the sample.

    A delimiter that splits the first row into a header naming requested columns wins; then
    the one giving the expected width on most rows; then the one giving the most fields.
    """
    wanted = {normalise_name(c) for c in columns}
    best = ","
    best_score: tuple[int, int, int] = (-1, -1, -1)
    for delimiter in DELIMITERS:
        rows = split_rows(sample, delimiter)
        if not rows:
            continue
        named = sum(1 for cell in rows[0] if normalise_name(cell) in wanted)
        width = len(rows[0]) if named else len(columns)
        consistent = sum(1 for row in rows if len(row) == width)
        score = (named, consistent if len(rows[0]) > 1 else 0, len(rows[0]))
        if score > best_score:
            best, best_score = delimiter, score
    return best
