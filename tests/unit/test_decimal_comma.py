"""European exports: ';' delimiter, a decimal comma (10,50) and day.month.year dates, read with
a schema whose decimal column says ``"decimal_mark": ","``; totals are stored exactly as with a
point."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import polars as pl
import pytest

from core.pipeline.email_report import describe_reasons
from core.validation.engine import validate
from core.validation.outcome import ChunkResult
from core.validation.schema import Schema, SchemaError, default_schema

EU = Schema.from_dict(
    json.loads(resources.files("core.validation.schemas").joinpath("orders_eu.json").read_text())
)
HEADER = "Order_Id;Customer_Id;Order_Date;Order_Status;Order_Total\n"


def run(text: str, schema: Schema) -> tuple[object, pl.DataFrame, pl.DataFrame]:
    chunks: list[ChunkResult] = []
    outcome = validate(text.encode(), "eu.csv", schema=schema, on_chunk=chunks.append)
    valid = pl.concat([c.valid for c in chunks])
    rejects = pl.concat([c.rejects for c in chunks])
    return outcome, valid, rejects


def test_a_european_export_is_stored_as_the_same_exact_totals_as_with_a_point() -> None:
    eu = (
        HEADER
        + "O1;C1;01.02.2023;Pending;10,50\nO2;C2;1.2.23;Completed;0,5\nO3;C3;9.12.2024;pending;7\n"
    )
    point = eu.replace(";", ",").replace("10,50", "10.50").replace("0,5", "0.5")
    point = point.replace("01.02.2023", "01/02/2023").replace("1.2.23", "1/2/23")
    point = point.replace("9.12.2024", "9/12/2024")
    _, valid_eu, _ = run(eu, EU)
    _, valid_point, _ = run(point, default_schema())
    assert valid_eu.equals(valid_point)
    assert valid_eu.rows() == [
        (2, "O1", "C1", "2023-02-01", "Pending", "10.50"),
        (3, "O2", "C2", "2023-02-01", "Completed", "0.5"),
        (4, "O3", "C3", "2024-12-09", "Pending", "7"),
    ]


def test_a_point_or_a_thousands_separator_fails_under_the_comma_schema() -> None:
    text = HEADER + (
        "O1;C1;31.02.2023;Pending;1.000\n"  # not a date; a point is a thousands separator here
        "O2;C2;01.02.2023;Pending;1.000,50\n"
        "O3;C3;01.02.2023;Pending;-1,00\n"
        "O4;C4;01.02.2023;Pending;1,505\n"
        "O5;C5;01.02.2023;Pending;-0,00\n"
    )
    _, valid, rejects = run(text, EU)
    assert rejects.select("line", "reasons").rows() == [
        (2, "Order_Date.format;Order_Total.format"),
        (3, "Order_Total.format"),
        (4, "Order_Total.range"),
        (5, "Order_Total.format"),
    ]
    assert valid.rows() == [(6, "O5", "C5", "2023-02-01", "Pending", "0.00")]
    assert rejects["Order_Total"].to_list() == ["1.000", "1.000,50", "-1,00", "1,505"]


def test_the_default_schema_still_refuses_a_decimal_comma() -> None:
    text = (
        'Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\nO1,C1,1/2/23,Pending,"10,50"\n'
    )
    _, _, rejects = run(text, default_schema())
    assert rejects["reasons"].to_list() == ["Order_Total.format"]


def test_a_headerless_semicolon_file_is_found_by_its_width() -> None:
    _, valid, _ = run("O1;C1;01.02.2023;Pending;10,50\nO2;C2;02.02.2023;Pending;3,25\n", EU)
    assert valid["Order_Total"].to_list() == ["10.50", "3.25"]


def test_the_reason_sentence_names_the_decimal_comma() -> None:
    text = describe_reasons(EU)["Order_Total.format"]
    assert text == "Order_Total is not a number with at most 2 decimals after a decimal comma"


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ({"name": "T", "type": "decimal", "decimal_mark": ";"}, 'must be "." or ","'),
        ({"name": "T", "type": "string", "decimal_mark": ","}, "decimal columns only"),
    ],
)
def test_a_bad_decimal_mark_is_a_schema_error(column: dict[str, str], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        Schema.from_dict({"columns": [column]})


def test_validate_takes_the_shipped_european_schema(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from core.cli import cli

    source = tmp_path / "eu.csv"
    source.write_text(HEADER + "O1;C1;01.02.2023;Pending;10,50\n", encoding="utf-8")
    schema = resources.files("core.validation.schemas").joinpath("orders_eu.json")
    result = CliRunner().invoke(cli, ["validate", "--json", "--schema", str(schema), str(source)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[0])["valid"] == 1
