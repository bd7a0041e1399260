"""CSV files of a validated file's valid rows and rejected rows, written chunk by chunk.

The same writers serve ``orderpipe validate --out`` and ingest's ``rejects/<key>.csv``, so a
person sees one layout everywhere:

- valid: a header, then the schema columns normalised (no line column);
- rejects: ``line``, the schema columns' original text, ``reasons`` (codes joined by ``;``).

The header is written even when no row follows, so an empty result is still a readable file.

Every text cell goes through ``neutralise_formulas`` first (OWASP "CSV injection"): these files
come from people outside the team and are opened in spreadsheets inside it, where a cell
starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return runs as a formula. Such a cell
gets a leading ``'`` unless it is a plain number (``-15.00`` stays a number); a cell that
already starts with quotes before one of those characters gets one more, so removing one
leading ``'`` from every cell matching ``^'+[=+\\-@\t\r]`` gives back exactly what was read
(``restore_formulas``). Only the files are changed: valid rows are stored as read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import BinaryIO

import polars as pl

from core.validation.engine import REASONS
from core.validation.rules import LINE

# A cell a spreadsheet would evaluate: its first character after any quotes we added before.
_TRIGGER = r"^'*[=+\-@\t\r]"
# A plain number, which a spreadsheet shows as a number, not a formula (decimal point or comma).
_PLAIN_NUMBER = r"^[+-]?[0-9]+(?:[.,][0-9]+)?$"
_RESTORE = r"^'(?:'*[=+\-@\t\r])"


def neutralise_formula(value: pl.Expr) -> pl.Expr:
    """``value`` (text) with a ``'`` before any cell a spreadsheet would run as a formula."""
    risky = value.str.contains(_TRIGGER) & ~value.str.contains(_PLAIN_NUMBER)
    return pl.when(risky).then(pl.lit("'") + value).otherwise(value)


def neutralise_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """Every text column of ``frame`` neutralised; other columns as they are. The one function
    every CSV orderpipe writes for people goes through (rejects, ``validate --out``, exports)."""
    return frame.with_columns(
        neutralise_formula(pl.col(name)).alias(name)
        for name, dtype in frame.schema.items()
        if dtype == pl.String
    )


def restore_formula(cell: str) -> str:
    """The value as it was read, from a cell ``neutralise_formula`` wrote."""
    return cell[1:] if re.match(_RESTORE, cell) else cell


class _ChunkedCsv:
    def __init__(self, stream: BinaryIO, columns: Sequence[str]) -> None:
        self._stream = stream
        self.columns = list(columns)
        self.rows = 0
        # Header through polars too, so quoting of odd column names matches the rows.
        pl.DataFrame(schema=dict.fromkeys(self.columns, pl.String)).write_csv(stream)

    def write(self, frame: pl.DataFrame) -> None:
        if frame.is_empty():
            return
        # polars quotes an empty string to tell it from a missing field; a person reading
        # the file needs no such distinction, so both are written as an empty cell.
        blanked = frame.select(
            pl.when(pl.col(c) != "").then(pl.col(c)).alias(c)
            if frame.schema[c] == pl.String
            else pl.col(c)
            for c in self.columns
        )  # fmt: skip
        neutralise_formulas(blanked).write_csv(self._stream, include_header=False)
        self.rows += frame.height


class ValidCsv(_ChunkedCsv):
    """``<file>.valid.csv``: the normalised schema columns."""

    def __init__(self, stream: BinaryIO, schema_columns: Sequence[str]) -> None:
        super().__init__(stream, schema_columns)


class RejectsCsv(_ChunkedCsv):
    """``<file>.rejects.csv``: line, original values, reasons."""

    def __init__(self, stream: BinaryIO, schema_columns: Sequence[str]) -> None:
        super().__init__(stream, [LINE, *schema_columns, REASONS])
