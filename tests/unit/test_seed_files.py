"""The two sample files the old job was given, with their exact outcomes."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core.validation.engine import validate
from core.validation.outcome import ChunkResult

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def run(name: str) -> tuple[object, pl.DataFrame, pl.DataFrame]:
    chunks: list[ChunkResult] = []
    outcome = validate(FIXTURES / name, name, on_chunk=chunks.append)
    return (
        outcome,
        pl.concat([c.valid for c in chunks]),
        pl.concat([c.rejects for c in chunks]),
    )


def test_data1_has_7_valid_of_12() -> None:
    outcome, valid, rejects = run("test_data1.csv")
    assert outcome.to_json_dict() == {  # type: ignore[attr-defined]
        "file": "test_data1.csv",
        "status": "accepted",
        "rows": 12,
        "valid": 7,
        "invalid": 5,
        "reasons": {
            "Customer_Id.required": 4,
            "Order_Date.required": 2,
            "Order_Status.required": 2,
            "Order_Status.allowed": 1,
            "Order_Total.required": 1,
        },
    }
    assert valid["Order_Id"].to_list() == [
        "Ord2301", "Ord2302", "Ord2303", "Ord2304", "Ord2305", "Ord2307", "Ord2308",
    ]  # fmt: skip
    assert valid.row(0) == (1, "Ord2301", "Cust2301", "2023-04-19", "Pending", "1999")
    assert valid.row(6) == (8, "Ord2308", "Cust2306", "2022-08-26", "Completed", "1111")
    assert rejects.select("line", "reasons").rows() == [
        (6, "Customer_Id.required"),
        (9, "Order_Status.required"),
        (10, "Customer_Id.required"),
        (11, "Customer_Id.required;Order_Date.required;Order_Status.required;"
             "Order_Total.required"),
        (12, "Customer_Id.required;Order_Date.required;Order_Status.allowed"),
    ]  # fmt: skip
    # The last line has no line end: still a row, its value intact.
    assert rejects.row(4, named=True)["Order_Total"] == "112"


def test_data2_has_4_valid_of_12_and_no_bom_in_keys() -> None:
    outcome, valid, rejects = run("test_data2.csv")
    assert (outcome.rows, outcome.valid, outcome.invalid) == (12, 4, 8)  # type: ignore[attr-defined]
    assert outcome.reasons == {  # type: ignore[attr-defined]
        "Order_Id.required": 2,
        "Customer_Id.required": 2,
        "Order_Status.required": 4,
        "Order_Total.required": 3,
    }
    first = valid["Order_Id"][0]
    assert first == "Ord2313"
    assert first.encode() == b"Ord2313"  # a BOM must never leak into a key
    assert valid.select("line", "Order_Id", "Order_Date").rows() == [
        (1, "Ord2313", "2023-07-12"),
        (5, "Ord2317", "2022-05-17"),
        (9, "Ord2321", "2023-03-01"),
        (12, "Ord2324", "2023-07-12"),
    ]
    assert rejects["line"].to_list() == [2, 3, 4, 6, 7, 8, 10, 11]
    assert "\ufeff" not in "".join(rejects["Order_Id"].drop_nulls().to_list())


def test_seed_fixtures_are_byte_copies_of_the_samples() -> None:
    # The fixtures are the old job's real inputs: CRLF, no header, a BOM, no final newline.
    data2 = (FIXTURES / "test_data2.csv").read_bytes()
    assert data2.startswith(b"\xef\xbb\xbfOrd2313,")
    assert data2.count(b"\r\n") == 11
    assert not (FIXTURES / "test_data1.csv").read_bytes().endswith(b"\n")
