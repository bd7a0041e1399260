"""Parquet via polars: the needed columns, matched like a header, every value turned into text.

The row count comes from the footer, so an over-limit file is refused before any data page is
read; batches are collected from a lazy scan so memory stays bounded by ``chunk_rows``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import polars as pl

from core.validation.limits import Limits, human_bytes
from core.validation.readers.errors import FileRejected
from core.validation.readers.header import match_header
from core.validation.readers.parquet_footer import FooterError, declared_data_bytes
from core.validation.readers.source import Loaded
from core.validation.readers.text import FIELD_COUNT_OK, LINE, check_cells

_SIGNIFICANT_DIGITS = 15


def iter_parquet(
    loaded: Loaded, columns: Sequence[str], limits: Limits, chunk_rows: int
) -> Iterator[pl.DataFrame]:
    source = loaded.data_or_path()
    try:
        scan = pl.scan_parquet(source)
        schema = scan.collect_schema()
        rows = scan.select(pl.len()).collect().item()
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, ValueError) as exc:
        raise FileRejected(f"corrupt parquet: {_first_line(exc)}") from None
    if len(schema) > limits.max_columns:
        raise FileRejected(
            f"the file has {len(schema):,} columns; the limit is {limits.max_columns:,}"
        )
    names = list(schema.names())
    layout = match_header(names, columns)
    if layout is None:
        raise FileRejected("missing required column(s): " + ", ".join(columns))
    if rows > limits.max_rows:
        raise FileRejected(f"the file has more than {limits.max_rows:,} rows")
    _check_declared_size(loaded, limits)
    if rows == 0:
        raise FileRejected("no data rows")
    nested = [names[p] for p in layout.positions if schema[names[p]].is_nested()]
    if nested:
        raise FileRejected(
            "column(s) " + ", ".join(nested) + " hold nested values (lists or structs), not text"
        )
    selected = [
        as_text(pl.col(names[pos]), schema[names[pos]]).alias(col)
        for col, pos in zip(columns, layout.positions, strict=True)
    ]
    query = scan.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(LINE),
        *selected,
        pl.lit(True).alias(FIELD_COUNT_OK),
    )
    try:
        for batch in query.collect_batches(chunk_size=chunk_rows):
            check_cells(batch, columns, limits)
            yield batch
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException) as exc:
        raise FileRejected(f"corrupt parquet: {_first_line(exc)}") from None


def _check_declared_size(loaded: Loaded, limits: Limits) -> None:
    """Refuse a small file whose row groups declare more data than a plain file may hold."""
    try:
        declared = declared_data_bytes(loaded.buf)
    except FooterError:
        return  # polars read the footer already; let it judge the pages
    if declared > limits.max_decompressed_bytes:
        raise FileRejected(
            f"the Parquet data expands to {human_bytes(declared)};"
            f" the limit is {human_bytes(limits.max_decompressed_bytes)}"
        )


def as_text(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """The text a person would write for a typed value."""
    if dtype == pl.String:
        return value
    if dtype.is_float():
        rounded = value.round_sig_figs(_SIGNIFICANT_DIGITS)
        whole = (rounded == rounded.floor()) & (rounded.abs() < 1e15)
        return (
            pl.when(whole)
            .then(rounded.cast(pl.Int64).cast(pl.String))
            .otherwise(rounded.cast(pl.String))
        )
    if isinstance(dtype, pl.Datetime):
        midnight = value.dt.time() == pl.time(0)
        return (
            pl.when(midnight)
            .then(value.dt.date().cast(pl.String))
            .otherwise(value.dt.to_string("%Y-%m-%dT%H:%M:%S"))
        )
    if dtype == pl.Boolean:
        return pl.when(value).then(pl.lit("true")).when(~value).then(pl.lit("false"))
    # Binary that is not UTF-8 reads as missing rather than as mojibake.
    return value.cast(pl.String, strict=dtype != pl.Binary)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
