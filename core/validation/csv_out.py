"""CSV files of a validated file's valid rows and rejected rows, written chunk by chunk.

The same writers serve ``orderpipe validate --out`` and ingest's ``rejects/<key>.csv``, so a
person sees one layout everywhere:

- valid: a header, then the schema columns normalised (no line column);
- rejects: ``line``, the schema columns' original text, ``reasons`` (codes joined by ``;``).

The header is written even when no row follows, so an empty result is still a readable file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

import polars as pl

from core.validation.engine import REASONS
from core.validation.rules import LINE


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
            pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) if frame.schema[c] == pl.String
            else pl.col(c)
            for c in self.columns
        )  # fmt: skip
        blanked.write_csv(self._stream, include_header=False)
        self.rows += frame.height


class ValidCsv(_ChunkedCsv):
    """``<file>.valid.csv``: the normalised schema columns."""

    def __init__(self, stream: BinaryIO, schema_columns: Sequence[str]) -> None:
        super().__init__(stream, schema_columns)


class RejectsCsv(_ChunkedCsv):
    """``<file>.rejects.csv``: line, original values, reasons."""

    def __init__(self, stream: BinaryIO, schema_columns: Sequence[str]) -> None:
        super().__init__(stream, [LINE, *schema_columns, REASONS])
