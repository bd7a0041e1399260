"""Each row rule of the default schema, with good and bad values, on in-memory chunks."""

from __future__ import annotations

import polars as pl
import pytest

from core.validation.engine import validate_chunks
from core.validation.schema import Schema, default_schema

SCHEMA = default_schema()
GOOD = {
    "Order_Id": "Ord1",
    "Customer_Id": "Cust1",
    "Order_Date": "19/04/23",
    "Order_Status": "Pending",
    "Order_Total": "19.99",
}


def chunk(rows: list[dict[str, str | None]], *, aligned: list[bool] | None = None) -> pl.DataFrame:
    data: dict[str, list[object]] = {"line": list(range(2, len(rows) + 2))}
    for name in SCHEMA.column_names:
        data[name] = [row.get(name) for row in rows]
    data["field_count_ok"] = aligned or [True] * len(rows)
    return pl.DataFrame(
        data,
        schema={"line": pl.Int64, **dict.fromkeys(SCHEMA.column_names, pl.String),
                "field_count_ok": pl.Boolean},
    )  # fmt: skip


def judge_one(schema: Schema = SCHEMA, **values: str | None) -> tuple[list[str], dict[str, object]]:
    """Reasons for one row built from GOOD with ``values`` replaced, and its valid form."""
    row = {**GOOD, **values}
    valid: list[pl.DataFrame] = []
    rejects: list[pl.DataFrame] = []

    def collect(result: object) -> None:
        valid.append(result.valid)  # type: ignore[attr-defined]
        rejects.append(result.rejects)  # type: ignore[attr-defined]

    outcome = validate_chunks([chunk([row])], "t.csv", schema, on_chunk=collect)
    assert outcome.rows == 1
    if outcome.valid:
        return [], valid[0].row(0, named=True)
    return str(rejects[0]["reasons"][0]).split(";"), {}


def test_good_row_is_valid_and_normalised() -> None:
    reasons, stored = judge_one()
    assert reasons == []
    assert stored == {"line": 2, **GOOD, "Order_Date": "2023-04-19"}


@pytest.mark.parametrize("column", SCHEMA.column_names)
@pytest.mark.parametrize("missing", [None, "", "   ", "\t"])
def test_every_column_is_required(column: str, missing: str | None) -> None:
    reasons, _ = judge_one(**{column: missing})
    assert reasons == [f"{column}.required"]


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("19/04/23", "2023-04-19"),
        ("1/2/23", "2023-02-01"),
        ("01/02/2023", "2023-02-01"),
        ("9/12/1999", "1999-12-09"),
        ("29/02/24", "2024-02-29"),
        ("29/02/2000", "2000-02-29"),
        ("2023-04-19", "2023-04-19"),
        ("2024-02-29", "2024-02-29"),
        (" 31/12/23 ", "2023-12-31"),
        ("1/1/23", "2023-01-01"),
    ],
)
def test_date_formats_normalise_to_iso(raw: str, iso: str) -> None:
    reasons, stored = judge_one(Order_Date=raw)
    assert reasons == []
    assert stored["Order_Date"] == iso


@pytest.mark.parametrize(
    "raw",
    [
        "31/04/23",  # April has 30 days
        "29/02/23",  # 2023 is not a leap year
        "29/02/1900",  # centuries are leap only every 400 years
        "32/01/23",
        "0/01/23",
        "12/13/23",
        "12/0/23",
        "04/19/23x",
        "2023/04/19",
        "19-04-23",
        "2023-4-19",  # ISO needs two-digit month and day
        "19/04/023",
        "19.04.23",
        "yesterday",
        "45000",  # a spreadsheet serial is not a date here
        "0000-01-01",
        "\u0661/\u0662/\u0662\u0663",  # digits of another script
    ],
)
def test_bad_dates_fail_format(raw: str) -> None:
    assert judge_one(Order_Date=raw)[0] == ["Order_Date.format"]


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("Pending", "Pending"),
        ("pending", "Pending"),
        ("COMPLETED", "Completed"),
        ("InProgress", "Inprogress"),
        (" inprogress ", "Inprogress"),
    ],
)
def test_status_is_matched_ignoring_case(raw: str, canonical: str) -> None:
    reasons, stored = judge_one(Order_Status=raw)
    assert reasons == []
    assert stored["Order_Status"] == canonical


@pytest.mark.parametrize("raw", ["End", "In progress", "Done", "Pending.", "Cancelled"])
def test_status_outside_the_list_fails_allowed(raw: str) -> None:
    assert judge_one(Order_Status=raw)[0] == ["Order_Status.allowed"]


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("1999", "1999"),
        ("19.99", "19.99"),
        ("19.9", "19.9"),
        ("0", "0"),
        ("0.00", "0.00"),
        ("-0", "0"),
        ("-0.00", "0.00"),
        ("007.50", "007.50"),
        (" 12.30 ", "12.30"),
        ("123456789012345678901234567890.12", "123456789012345678901234567890.12"),
        ("9" * 36 + ".99", "9" * 36 + ".99"),  # 38 significant digits: DynamoDB's most
        ("0" * 50 + "1", "0" * 50 + "1"),
    ],
)
def test_totals_stay_exact_text(raw: str, stored: str) -> None:
    reasons, row = judge_one(Order_Total=raw)
    assert reasons == []
    assert row["Order_Total"] == stored


@pytest.mark.parametrize(
    "raw",
    ["19.999", "1,999", "1 999", "$19.99", "19.99€", "+19.99", "1e3", "19.", ".5", "abc", "--1",
     "19.9.9", "NaN", "inf", "0x10", "\u0661\u0662", "\uff11\uff12", "1" * 37],
)  # fmt: skip
def test_malformed_totals_fail_format(raw: str) -> None:
    assert judge_one(Order_Total=raw)[0] == ["Order_Total.format"]


@pytest.mark.parametrize("raw", ["-1", "-0.01", "-19.99"])
def test_negative_totals_fail_range(raw: str) -> None:
    assert judge_one(Order_Total=raw)[0] == ["Order_Total.range"]


def test_a_row_reports_every_rule_it_breaks_in_schema_order() -> None:
    reasons, _ = judge_one(Customer_Id="", Order_Date="31/04/23", Order_Status="x",
                           Order_Total="-5")  # fmt: skip
    assert reasons == [
        "Customer_Id.required",
        "Order_Date.format",
        "Order_Status.allowed",
        "Order_Total.range",
    ]


def test_bad_field_count_fails_that_rule_alone() -> None:
    row = {**GOOD, "Order_Date": "nonsense", "Order_Total": None}
    seen: list[pl.DataFrame] = []
    outcome = validate_chunks(
        [chunk([row], aligned=[False])],
        "t.csv",
        SCHEMA,
        on_chunk=lambda r: seen.append(r.rejects),
    )
    assert outcome.reasons == {"row.field_count": 1}
    assert seen[0]["reasons"].to_list() == ["row.field_count"]
    assert seen[0]["Order_Total"].to_list() == [None]  # original: the row had no such field


def test_repeat_order_id_fails_unique_first_stays_valid() -> None:
    rows = [GOOD, {**GOOD, "Order_Id": " Ord1 "}, {**GOOD, "Order_Id": "Ord2"}]
    rejects: list[pl.DataFrame] = []
    outcome = validate_chunks([chunk(rows)], "t.csv", SCHEMA,
                              on_chunk=lambda r: rejects.append(r.rejects))  # fmt: skip
    assert (outcome.valid, outcome.invalid) == (2, 1)
    assert rejects[0]["line"].to_list() == [3]
    assert rejects[0]["reasons"].to_list() == ["Order_Id.unique (first on line 2)"]


def test_order_id_case_matters_for_uniqueness() -> None:
    outcome = validate_chunks([chunk([GOOD, {**GOOD, "Order_Id": "ORD1"}])], "t.csv", SCHEMA)
    assert outcome.invalid == 0


def custom_schema(**total: object) -> Schema:
    doc = {
        "name": "prices",
        "columns": [
            {"name": "Sku", "unique": True},
            {"name": "Price", "type": "decimal", "scale": 3, **total},
            {"name": "Since", "type": "date", "formats": ["yyyy/mm/dd", "dd.mm.yyyy"],
             "required": False},
            {"name": "Kind", "allowed": ["a", "B"]},
        ],
    }  # fmt: skip
    return Schema.from_dict(doc)


def test_custom_schema_codes_and_rules_come_from_the_file() -> None:
    schema = custom_schema(minimum="1.5", maximum="10")
    frame = pl.DataFrame(
        {
            "line": [2, 3, 4, 5, 6],
            "Sku": ["s1", "s2", "s3", "s1", "s5"],
            "Price": ["1.500", "1.499", "10.001", "2", "2"],
            "Since": ["2024/02/29", None, "29.02.2023", "01.01.2024", "2024-01-01"],
            "Kind": ["a", "A", "B", "a", "a"],
            "field_count_ok": [True] * 5,
        },
        schema_overrides={"line": pl.Int64},
    )
    rejects: list[pl.DataFrame] = []
    outcome = validate_chunks(
        [frame], "p.csv", schema, on_chunk=lambda r: rejects.append(r.rejects)
    )
    assert rejects[0].select("line", "reasons").rows() == [
        (3, "Price.range;Kind.allowed"),
        (4, "Price.range;Since.format"),
        (5, "Sku.unique (first on line 2)"),
        (6, "Since.format"),
    ]
    assert outcome.valid == 1


@pytest.mark.parametrize("year", [2023, 2024, 2100, 2000])
@pytest.mark.parametrize("month", range(1, 13))
def test_every_month_ends_on_its_real_last_day(year: int, month: int) -> None:
    import calendar

    last = calendar.monthrange(year, month)[1]
    reasons, stored = judge_one(Order_Date=f"{last}/{month}/{year}")
    assert reasons == []
    assert stored["Order_Date"] == f"{year}-{month:02d}-{last:02d}"
    assert judge_one(Order_Date=f"{last + 1}/{month}/{year}")[0] == ["Order_Date.format"]
