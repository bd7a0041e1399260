"""The schema's row rules as named polars expressions.

Every rule is ``code -> boolean expression that is true when the row breaks it``. They run on a
chunk prepared in two steps: ``trimmed_values`` adds, per schema column, a trimmed value column
(``value_col(name)``: stripped, empty -> null) beside the reader's original text, then
``derived_values`` adds what several rules and the normalised output share (a date column's
parsed date, a status's allowed spelling), once per chunk, or once per distinct value when a
column repeats its values (dates and statuses do). Casts use ``strict=False`` so a value that
does not convert becomes null and fails its rule; nothing loops over rows in Python.

A row whose field count is wrong fails ``row.field_count`` alone: its values are misaligned, so
judging them would only add noise.
"""

from __future__ import annotations

import re
from decimal import Decimal

import polars as pl

from core.validation.schema import (
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


def parsed_col(name: str) -> str:
    """Name of the derived column: the value in its accepted form, null when it has none (a
    date's ISO text, an allowed value's canonical spelling, a well-formed decimal's text)."""
    return f"__parsed__{name}"


def seen_col(name: str) -> str:
    """Name of the flag the engine sets on a unique column's repeats: the value appeared in an
    earlier row of the file (this chunk or an earlier one). Only aligned rows claim a value."""
    return f"__seen__{name}"


def first_line_col(name: str) -> str:
    """Name of the line, set on a unique column's repeats, where the value first appeared."""
    return f"__first__{name}"


def trimmed_values(schema: Schema) -> list[list[pl.Expr]]:
    """Trimmed values: surrounding whitespace removed. An empty value (``""`` or null) is
    missing: rules test ``len > 0`` rather than turning ``""`` into null, which would copy
    every value of every column once more."""
    return [[pl.col(c.name).str.strip_chars().alias(value_col(c.name)) for c in schema.columns]]


def present(name: str) -> pl.Expr:
    """The column has a value in this row (not null, not empty after trimming)."""
    return pl.col(value_col(name)).str.len_bytes().fill_null(0) > 0


def derived_values(schema: Schema) -> dict[str, list[list[pl.Expr]]]:
    """Per column that needs one, the stages of ``with_columns`` that derive ``parsed_col``
    from its trimmed value alone: a date's ISO text, an allowed value's canonical spelling,
    a decimal's text when it is well formed.

    Each column's stages read only that column's value and what its earlier stages made, so
    the engine may run them on the column's distinct values rather than on every row.
    """
    derived: dict[str, list[list[pl.Expr]]] = {}
    for column in schema.columns:
        if column.type == "date":
            derived[column.name] = [stage for stage in _parsed_date(column) if stage]
        elif column.allowed:
            derived[column.name] = [[_canonical(column).alias(parsed_col(column.name))]]
        elif column.type == "decimal":
            derived[column.name] = [[_formed_decimal(column).alias(parsed_col(column.name))]]
    return derived


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
    has_value = present(column.name)
    rules: dict[str, pl.Expr] = {}
    for rule in column.rules():
        if rule == REQUIRED:
            rules[rule] = ~has_value
        elif rule == UNIQUE:
            rules[rule] = has_value & pl.col(seen_col(column.name))
        elif rule == FORMAT:
            rules[rule] = has_value & ~_well_formed(column)
        elif rule == ALLOWED:
            rules[rule] = has_value & pl.col(parsed_col(column.name)).is_null()
        elif rule == RANGE:
            rules[rule] = has_value & _well_formed(column) & ~_in_range(column)
    return rules


# --- formats -----------------------------------------------------------------------------


def _well_formed(column: Column) -> pl.Expr:
    if column.type == "date" or _derives_decimal(column):
        return pl.col(parsed_col(column.name)).is_not_null()
    if column.type == "decimal":
        return _decimal_text(column).is_not_null()
    return pl.lit(True)


def _derives_decimal(column: Column) -> bool:
    # An allowed column's derived value is its canonical spelling; a decimal one with allowed
    # values (an odd schema) checks its format from the value itself.
    return column.type == "decimal" and not column.allowed


def _formed_decimal(column: Column) -> pl.Expr:
    """The trimmed value when it is a plain decimal, else null: judged once, read by the
    format and range rules and the normalised output. A decimal comma becomes a point here,
    so everything after (range, the stored value) sees one spelling."""
    value = pl.col(value_col(column.name))
    formed = value.str.contains(_decimal_pattern(column.scale, column.decimal_mark))
    if column.decimal_mark != ".":
        value = value.str.replace(column.decimal_mark, ".", literal=True)
    return pl.when(formed).then(value)


def _decimal_text(column: Column) -> pl.Expr:
    return pl.col(parsed_col(column.name)) if _derives_decimal(column) else _formed_decimal(column)


def _decimal_pattern(scale: int, mark: str = ".") -> str:
    # Plain decimal text: no sign but a leading minus, no separators, currency or exponent,
    # ASCII digits only (a regex \d would also take other scripts' digits); the schema's one
    # decimal mark (a point, or a comma for European exports; never both, since each is the
    # other's thousands separator). At most 38 significant digits, what DynamoDB stores
    # exactly; leading zeros are free.
    fraction = rf"(?:{re.escape(mark)}[0-9]{{1,{scale}}})?" if scale else ""
    return rf"^-?0*[0-9]{{1,{_DECIMAL_PRECISION - scale}}}{fraction}$"


def _parsed_date(column: Column) -> list[list[pl.Expr]]:
    """The ISO text (yyyy-mm-dd) of a real calendar date in an accepted format, else null.

    Capturing regex groups is slow (seconds per million values), so formats are matched
    without captures and cut apart cheaply: by position when every part has a fixed width
    (yyyy-mm-dd), else by one literal split per separator (d/m/yy); only an unusual format (no
    or mixed separators with variable widths) is captured. The first format that matches
    wins. Stages: split, parts as integers, the first match's parts, the calendar check.
    """
    value = pl.col(value_col(column.name))
    tmp = f"__date__{column.name}"
    splits: list[pl.Expr] = []
    parts_stage: list[pl.Expr] = []
    split_names: dict[str, str] = {}

    def part_col(name: str, expr: pl.Expr) -> pl.Expr:
        parts_stage.append(expr.cast(pl.Int32, strict=False).alias(name))
        return pl.col(name)

    years, months, days = [], [], []
    for i, fmt in enumerate(column.date_formats):
        matched = pl.col(f"{tmp}_match{i}")
        if fmt.slices is not None:
            parts = {
                part: part_col(f"{tmp}_{i}{part}", value.str.slice(offset, length))
                for part, offset, length in fmt.slices
            }
            parts_stage.append(
                value.str.contains(fmt.match_pattern).alias(matched.meta.output_name())
            )
        elif fmt.separator is not None:
            if fmt.separator not in split_names:
                split_names[fmt.separator] = f"{tmp}_split{len(split_names)}"
                splits.append(
                    value.str.split_exact(fmt.separator, 2).alias(split_names[fmt.separator])
                )
            split = pl.col(split_names[fmt.separator])
            parts = {
                part: part_col(f"{tmp}_{i}{part}", split.struct.field(f"field_{k}"))
                for k, part in enumerate(fmt.order)
            }
            parts_stage.append(
                value.str.contains(fmt.match_pattern).alias(matched.meta.output_name())
            )
        else:
            groups = value.str.extract_groups(fmt.pattern)
            parts = {
                part: part_col(f"{tmp}_{i}{part}", groups.struct.field(part)) for part in fmt.order
            }
            parts_stage.append(
                value.str.contains(fmt.match_pattern).alias(matched.meta.output_name())
            )
        year = parts["year"] + 2000 if fmt.two_digit_year else parts["year"]
        years.append(pl.when(matched).then(year))
        months.append(pl.when(matched).then(parts["month"]))
        days.append(pl.when(matched).then(parts["day"]))
    first_match = [
        pl.coalesce(years).alias(f"{tmp}_y"),
        pl.coalesce(months).alias(f"{tmp}_m"),
        pl.coalesce(days).alias(f"{tmp}_d"),
    ]
    y, m, d = pl.col(f"{tmp}_y"), pl.col(f"{tmp}_m"), pl.col(f"{tmp}_d")
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    # 31 for Jan, Mar, May, Jul, Aug, Oct, Dec and 30 for the rest (parity flips at August);
    # February 28 or 29. Integer arithmetic: cheaper than a chain of conditions.
    long_month = (m + m // 8) % 2
    month_days = pl.when(m == 2).then(28 + leap.cast(pl.Int32)).otherwise(30 + long_month)
    real = (y >= 1) & (m >= 1) & (m <= 12) & (d >= 1) & (d <= month_days)
    iso = pl.when(real).then(_days_since_epoch(y, m, d)).cast(pl.Date).cast(pl.String)
    return [splits, parts_stage, first_match, [iso.alias(parsed_col(column.name))]]


def _days_since_epoch(y: pl.Expr, m: pl.Expr, d: pl.Expr) -> pl.Expr:
    """Civil date to days since 1970-01-01 in integer arithmetic (valid for any y >= 1).

    pl.date() raises on an impossible date anywhere in the column, even under a when(); plain
    arithmetic has no such trap and is cheaper.
    """
    y = y.cast(pl.Int64) - (m <= 2).cast(pl.Int64)
    era = y // 400
    year_of_era = y - era * 400
    day_of_year = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _in_range(column: Column) -> pl.Expr:
    value = _decimal_text(column)
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
        return pl.col(parsed_col(column.name))  # ISO yyyy-mm-dd
    if column.type == "decimal":
        value = _decimal_text(column)
        # "-0" and "-0.00" are zero: store them without the sign. When negatives cannot be
        # valid, a valid value with a minus is such a zero, and no digit needs looking at.
        if column.minimum is not None and column.minimum >= 0:
            return value.str.strip_prefix("-")
        return (
            pl.when(value.str.starts_with("-") & ~value.str.contains("[1-9]"))
            .then(value.str.strip_prefix("-"))
            .otherwise(value)
        )
    if column.allowed:
        return pl.col(parsed_col(column.name))
    if column.required:
        return value  # a valid row has it
    return pl.when(present(column.name)).then(value)
