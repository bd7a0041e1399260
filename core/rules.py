"""The schema's row rules as named polars expressions.

Every rule is ``code -> boolean expression that is true when the row breaks it``. They run on a
chunk that carries, per schema column, the reader's original text and a trimmed value column
(``value_col(name)``: stripped, empty -> null). Casts use ``strict=False`` so a value that does
not convert becomes null and fails its rule; nothing loops over rows in Python.

A row whose field count is wrong fails ``row.field_count`` alone: its values are misaligned, so
judging them would only add noise.
"""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from core.schema import (
    ALLOWED,
    FIELD_COUNT_CODE,
    FORMAT,
    RANGE,
    REQUIRED,
    UNIQUE,
    Column,
    Schema,
)

FIELD_COUNT_OK = "field_count_ok"
LINE = "line"
_DECIMAL_PRECISION = 38  # DynamoDB numbers keep 38 significant digits


def value_col(name: str) -> str:
    """Name of the trimmed value column for a schema column."""
    return f"__value__{name}"


def seen_col(name: str) -> str:
    """Name of the flag an engine sets when a unique column's value appeared in an earlier chunk."""
    return f"__seen__{name}"


def trimmed_values(schema: Schema) -> list[pl.Expr]:
    """Trimmed values: surrounding whitespace removed, empty means missing."""
    exprs = []
    for column in schema.columns:
        stripped = pl.col(column.name).str.strip_chars()
        exprs.append(
            pl.when(stripped.str.len_bytes() > 0).then(stripped).alias(value_col(column.name))
        )
    return exprs


def row_rules(schema: Schema) -> dict[str, pl.Expr]:
    """Every reason code with its failing condition, in report order."""
    aligned = pl.col(FIELD_COUNT_OK)
    rules: dict[str, pl.Expr] = {FIELD_COUNT_CODE: ~aligned}
    for column in schema.columns:
        for rule, broken in _column_rules(column).items():
            rules[column.code(rule)] = (aligned & broken).fill_null(False)
    return rules


def normalised_values(schema: Schema) -> dict[str, pl.Expr]:
    """Each column's value as a valid row stores it (only meaningful where the row passed)."""
    return {column.name: _normalised(column).alias(column.name) for column in schema.columns}


def _column_rules(column: Column) -> dict[str, pl.Expr]:
    value = pl.col(value_col(column.name))
    present = value.is_not_null()
    rules: dict[str, pl.Expr] = {}
    for rule in column.rules():
        if rule == REQUIRED:
            rules[rule] = ~present
        elif rule == UNIQUE:
            rules[rule] = present & _is_repeat(column)
        elif rule == FORMAT:
            rules[rule] = present & ~_well_formed(column)
        elif rule == ALLOWED:
            rules[rule] = present & _canonical(column).is_null()
        elif rule == RANGE:
            rules[rule] = present & _well_formed(column) & ~_in_range(column)
    return rules


def _is_repeat(column: Column) -> pl.Expr:
    # Only aligned rows claim a value: a misaligned row's "id" is some other field.
    key = pl.when(pl.col(FIELD_COUNT_OK)).then(pl.col(value_col(column.name)))
    return ~key.is_first_distinct() | pl.col(seen_col(column.name))


# --- formats -----------------------------------------------------------------------------


def _well_formed(column: Column) -> pl.Expr:
    if column.type == "date":
        return _iso_date(column).is_not_null()
    if column.type == "decimal":
        return pl.col(value_col(column.name)).str.contains(_decimal_pattern(column.scale))
    return pl.lit(True)


def _decimal_pattern(scale: int) -> str:
    # Plain decimal text: no sign but a leading minus, no separators, currency or exponent.
    fraction = rf"(?:\.\d{{1,{scale}}})?" if scale else ""
    return rf"^-?\d+{fraction}$"


def _date_parts(column: Column) -> tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr]:
    """Year, month, day digits (as text, year widened to four digits) and the parsed ints.

    All formats are tried in one regex pass; the first that matches supplies all three parts.
    Returns (year_text, month_text, day_text, valid_calendar_date).
    """
    alternatives = []
    for i, fmt in enumerate(column.date_formats):
        alternatives.append(
            fmt.pattern[1:-1]
            .replace("?P<day>", f"?P<d{i}>")
            .replace("?P<month>", f"?P<m{i}>")
            .replace("?P<year>", f"?P<y{i}>")
        )
    groups = pl.col(value_col(column.name)).str.extract_groups(
        "^(?:" + "|".join(alternatives) + ")$"
    )
    years, months, days = [], [], []
    for i, fmt in enumerate(column.date_formats):
        year = groups.struct.field(f"y{i}")
        years.append(pl.lit("20") + year if fmt.two_digit_year else year)
        months.append(groups.struct.field(f"m{i}"))
        days.append(groups.struct.field(f"d{i}"))
    year_text, month_text, day_text = pl.coalesce(years), pl.coalesce(months), pl.coalesce(days)
    y = year_text.cast(pl.Int32, strict=False)
    m = month_text.cast(pl.Int32, strict=False)
    d = day_text.cast(pl.Int32, strict=False)
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    month_days = (
        pl.when(m == 2)
        .then(pl.when(leap).then(29).otherwise(28))
        .when(m.is_in([4, 6, 9, 11]))
        .then(30)
        .otherwise(31)
    )
    real = (y >= 1) & (m >= 1) & (m <= 12) & (d >= 1) & (d <= month_days)
    return year_text, month_text, day_text, real


def _iso_date(column: Column) -> pl.Expr:
    """ISO ``yyyy-mm-dd`` text for a real calendar date in an accepted format, else null."""
    year, month, day, real = _date_parts(column)
    iso = pl.concat_str([year, month.str.zfill(2), day.str.zfill(2)], separator="-")
    return pl.when(real).then(iso)


def _in_range(column: Column) -> pl.Expr:
    value = pl.col(value_col(column.name))
    if column.minimum == 0 and column.maximum is None:
        # The common case needs no decimal cast: negative means a minus and a non-zero digit.
        return ~(value.str.starts_with("-") & value.str.contains("[1-9]"))
    number = value.cast(pl.Decimal(_DECIMAL_PRECISION, column.scale), strict=False)
    ok = number.is_not_null()
    if column.minimum is not None:
        ok = ok & (number >= _decimal_lit(column.minimum, column.scale))
    if column.maximum is not None:
        ok = ok & (number <= _decimal_lit(column.maximum, column.scale))
    return ok


def _decimal_lit(value: Decimal, scale: int) -> pl.Expr:
    return pl.lit(value, dtype=pl.Decimal(_DECIMAL_PRECISION, scale))


# --- normalisation -----------------------------------------------------------------------


def _canonical(column: Column) -> pl.Expr:
    """The allowed spelling of a value, or null when it is not allowed."""
    value = pl.col(value_col(column.name))
    if column.case_sensitive:
        return pl.when(value.is_in(list(column.allowed))).then(value)
    mapping = {v.lower(): v for v in column.allowed}
    return value.str.to_lowercase().replace_strict(mapping, default=None, return_dtype=pl.String)


def _normalised(column: Column) -> pl.Expr:
    value = pl.col(value_col(column.name))
    if column.type == "date":
        return _iso_date(column)
    if column.type == "decimal":
        # "-0" and "-0.00" are zero: store them without the sign.
        return (
            pl.when(value.str.starts_with("-") & ~value.str.contains("[1-9]"))
            .then(value.str.strip_prefix("-"))
            .otherwise(value)
        )
    if column.allowed:
        return _canonical(column)
    return value
