"""The order-file schema: which columns a file has and the rules each value must pass.

A schema is a JSON document (the default ships as ``core/validation/schemas/orders.json``;
``--schema FILE`` loads another). Reason codes are ``<Column>.<rule>`` built from it, so a
renamed column or rule renames its codes everywhere: counts, rejects CSV, emails.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, Literal

ColumnType = Literal["string", "date", "decimal"]
COLUMN_TYPES: tuple[ColumnType, ...] = ("string", "date", "decimal")

# Rule names, as they appear in reason codes.
REQUIRED = "required"
UNIQUE = "unique"
FORMAT = "format"
ALLOWED = "allowed"
RANGE = "range"
FIELD_COUNT_CODE = "row.field_count"

DEFAULT_SCHEMA_RESOURCE = "orders.json"

# Date format tokens a schema may use, with the digits each accepts.
_DATE_TOKENS = {
    "yyyy": "[0-9]{4}", "yy": "[0-9]{2}",
    "mm": "[0-9]{2}", "m": "[0-9]{1,2}",
    "dd": "[0-9]{2}", "d": "[0-9]{1,2}",
}  # fmt: skip
_FIXED_WIDTH = {"yyyy": 4, "yy": 2, "mm": 2, "dd": 2}
_TOKEN_RE = re.compile(r"yyyy|yy|mm|m|dd|d")
_TOKEN_PART = {"yyyy": "year", "yy": "year", "mm": "month", "m": "month", "dd": "day", "d": "day"}


class SchemaError(ValueError):
    """The schema file is unusable; the message says what is wrong in one line."""


@dataclass(frozen=True)
class DateFormat:
    """One accepted date spelling, e.g. ``d/m/yy`` (two-digit years are 20yy)."""

    spec: str
    pattern: str  # anchored regex with named groups day, month, year
    match_pattern: str  # the same without groups: matching alone is much faster than capturing
    order: tuple[str, ...]  # "day", "month", "year" in the order they are written
    separator: str | None  # the one literal between the parts, when the spelling has one
    two_digit_year: bool
    # (part, offset, length) when every part has a fixed width (yyyy-mm-dd): cut by position
    slices: tuple[tuple[str, int, int], ...] | None = None

    @classmethod
    def parse(cls, spec: str) -> DateFormat:
        pattern, plain, literals, pos = "", "", [], 0
        order: list[str] = []
        slices: list[tuple[str, int, int]] | None = []
        for match in _TOKEN_RE.finditer(spec):
            literal = spec[pos : match.start()]
            literals.append(literal)
            pattern += re.escape(literal)
            plain += re.escape(literal)
            piece = match.group()
            part = _TOKEN_PART[piece]
            order.append(part)
            if slices is not None and piece in _FIXED_WIDTH:
                # Every part so far is as wide in the value as in the spelling.
                slices.append((part, match.start(), _FIXED_WIDTH[piece]))
            else:
                slices = None
            pattern += f"(?P<{part}>{_DATE_TOKENS[piece]})"
            plain += f"(?:{_DATE_TOKENS[piece]})"
            pos = match.end()
        literals.append(spec[pos:])
        pattern += re.escape(spec[pos:])
        plain += re.escape(spec[pos:])
        if sorted(order) != ["day", "month", "year"]:
            raise SchemaError(
                f"date format {spec!r} must name day (d/dd), month (m/mm) and year "
                "(yy/yyyy) exactly once each"
            )
        if any(ch.isalnum() for ch in _TOKEN_RE.sub("", spec)):
            raise SchemaError(f"date format {spec!r}: only d, dd, m, mm, yy, yyyy and separators")
        inner = literals[1:-1]
        uniform = not literals[0] and not literals[-1] and len(set(inner)) == 1 and inner[0]
        return cls(
            spec=spec,
            pattern=f"^{pattern}$",
            match_pattern=f"^{plain}$",
            order=tuple(order),
            separator=inner[0] if uniform else None,
            two_digit_year="yy" in _TOKEN_RE.findall(spec),
            slices=tuple(slices) if slices else None,
        )


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType = "string"
    required: bool = True
    unique: bool = False
    allowed: tuple[str, ...] = ()
    case_sensitive: bool = True
    date_formats: tuple[DateFormat, ...] = ()
    scale: int = 2  # decimal: most digits after the point
    decimal_mark: str = "."  # decimal: "." or "," (European exports write 10,50)
    minimum: Decimal | None = None
    maximum: Decimal | None = None

    def rules(self) -> tuple[str, ...]:
        """The rule names this column checks, in the order reasons are reported."""
        names = [REQUIRED] if self.required else []
        if self.unique:
            names.append(UNIQUE)
        if self.type in ("date", "decimal"):
            names.append(FORMAT)
        if self.allowed:
            names.append(ALLOWED)
        if self.minimum is not None or self.maximum is not None:
            names.append(RANGE)
        return tuple(names)

    def code(self, rule: str) -> str:
        return f"{self.name}.{rule}"


@dataclass(frozen=True)
class Schema:
    name: str
    columns: tuple[Column, ...]
    description: str = ""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def reason_codes(self) -> tuple[str, ...]:
        """Every code a row can carry, in report order (field count first)."""
        return (FIELD_COUNT_CODE, *(c.code(r) for c in self.columns for r in c.rules()))

    @classmethod
    def from_dict(cls, doc: Any) -> Schema:
        if not isinstance(doc, dict):
            raise SchemaError("schema must be a JSON object with a 'columns' list")
        raw_columns = doc.get("columns")
        if not isinstance(raw_columns, list) or not raw_columns:
            raise SchemaError("schema needs a non-empty 'columns' list")
        columns = tuple(_column(raw) for raw in raw_columns)
        names = [c.name for c in columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaError(f"schema names column(s) twice: {', '.join(dupes)}")
        return cls(
            name=str(doc.get("name", "custom")),
            columns=columns,
            description=str(doc.get("description", "")),
        )

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SchemaError(f"cannot read schema {path}: {_reason(exc)}") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"schema {path} is not JSON: {exc.msg} (line {exc.lineno})") from None
        return cls.from_dict(doc)


def default_schema() -> Schema:
    """The shipped order-file contract."""
    text = (
        resources.files("core.validation.schemas")
        .joinpath(DEFAULT_SCHEMA_RESOURCE)
        .read_text("utf-8")
    )
    return Schema.from_dict(json.loads(text))


_COLUMN_KEYS = {
    "name", "type", "required", "unique", "allowed", "case_sensitive", "formats", "scale",
    "minimum", "maximum", "description", "decimal_mark",
}  # fmt: skip
DECIMAL_MARKS = (".", ",")


def _column(raw: Any) -> Column:
    if not isinstance(raw, dict):
        raise SchemaError("each column must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SchemaError("each column needs a non-empty 'name'")
    unknown = sorted(set(raw) - _COLUMN_KEYS)
    if unknown:
        raise SchemaError(f"column {name}: unknown key(s) {', '.join(unknown)}")
    ctype = raw.get("type", "string")
    if ctype not in COLUMN_TYPES:
        raise SchemaError(f"column {name}: type must be one of {', '.join(COLUMN_TYPES)}")
    allowed = raw.get("allowed", [])
    if not isinstance(allowed, list) or not all(isinstance(v, str) for v in allowed):
        raise SchemaError(f"column {name}: 'allowed' must be a list of strings")
    formats = raw.get("formats", [])
    if ctype == "date" and not formats:
        raise SchemaError(f"column {name}: a date column needs 'formats'")
    if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
        raise SchemaError(f"column {name}: 'formats' must be a list of strings")
    scale = raw.get("scale", 2)
    if not isinstance(scale, int) or isinstance(scale, bool) or not 0 <= scale <= 18:
        raise SchemaError(f"column {name}: 'scale' must be a whole number from 0 to 18")
    for flag in ("required", "unique", "case_sensitive"):
        if flag in raw and not isinstance(raw[flag], bool):
            raise SchemaError(f"column {name}: '{flag}' must be true or false")
    if ctype != "decimal" and ("minimum" in raw or "maximum" in raw):
        raise SchemaError(f"column {name}: minimum/maximum apply to decimal columns only")
    mark = raw.get("decimal_mark", ".")
    if ctype != "decimal" and "decimal_mark" in raw:
        raise SchemaError(f"column {name}: 'decimal_mark' applies to decimal columns only")
    if mark not in DECIMAL_MARKS:
        raise SchemaError(f'column {name}: \'decimal_mark\' must be "." or ","')
    return Column(
        name=name,
        type=ctype,
        required=raw.get("required", True),
        unique=raw.get("unique", False),
        allowed=tuple(allowed),
        case_sensitive=raw.get("case_sensitive", True),
        date_formats=tuple(DateFormat.parse(f) for f in formats),
        scale=scale,
        decimal_mark=mark,
        minimum=_decimal(name, "minimum", raw.get("minimum")),
        maximum=_decimal(name, "maximum", raw.get("maximum")),
    )


def _decimal(column: str, key: str, value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SchemaError(f"column {column}: '{key}' must be a number written as a string")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise SchemaError(f"column {column}: '{key}' is not a number: {value!r}") from None
    if not number.is_finite():
        raise SchemaError(f"column {column}: '{key}' must be finite")
    return number


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)
