"""Files that are not order files are rejected whole, with what was expected and found;
order files with a missing or misspelt header are still judged row by row."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import xlsxwriter

from core.validation.engine import validate

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = "expected Order_Id, Customer_Id, Order_Date, Order_Status, Order_Total"
ROW = "Ord{n},Cust{n},19/04/23,Completed,10.50\n"


def test_the_demo_customer_list_is_rejected_whole_with_its_columns() -> None:
    outcome = validate(ROOT / "fixtures/demo/customers.csv", "customers.csv")
    assert outcome.status == "rejected"
    assert outcome.rows == 0
    assert outcome.error == (
        f"this does not look like an order file: {EXPECTED}; found name, email, city"
    )


def test_source_code_is_rejected_whole() -> None:
    outcome = validate(ROOT / "core/validation/engine.py", "engine.py")
    assert outcome.status == "rejected"
    assert outcome.error is not None
    assert outcome.error.startswith(f"this does not look like an order file: {EXPECTED}; found ")


def test_five_columns_of_something_else_with_no_valid_row_are_rejected_whole() -> None:
    data = b"sku,name,colour,size,price\n" + b"".join(
        f"S{n},Shirt,red,M,EUR {n}\n".encode() for n in range(20)
    )
    outcome = validate(data, "products.csv")
    assert outcome.status == "rejected"
    assert outcome.error == (
        f"this does not look like an order file: {EXPECTED}; found sku, name, colour, size, price"
    )


def test_a_wide_first_row_is_shown_cut() -> None:
    data = ",".join(f"col{i}" for i in range(20)).encode() + b"\n1,2\n"
    outcome = validate(data, "wide.csv")
    assert outcome.error is not None
    assert outcome.error.endswith("found col0, col1, col2, col3, col4, col5, col6, col7, …")


def test_order_file_without_header_is_still_read_by_position() -> None:
    data = "".join(ROW.format(n=n) for n in range(10)).encode()
    outcome = validate(data, "orders.csv")
    assert (outcome.status, outcome.valid, outcome.invalid) == ("accepted", 10, 0)


def test_misspelt_header_is_a_rejected_row_and_the_rest_still_count() -> None:
    header = "Ordr_No,Custmer,Date of order,State,Amount\n"
    data = (header + "".join(ROW.format(n=n) for n in range(10))).encode()
    outcome = validate(data, "orders.csv")
    assert (outcome.status, outcome.valid, outcome.invalid) == ("accepted", 10, 1)
    assert outcome.sample_rejects[0].line == 1


def test_headerless_order_file_with_some_ragged_rows_is_judged_row_by_row() -> None:
    rows = [ROW.format(n=n) for n in range(10)]
    rows[3] = "Ord3,Cust3,19/04/23\n"
    rows[7] = "Ord7,Cust7,19/04/23,Completed,10.50,extra\n"
    outcome = validate("".join(rows).encode(), "orders.csv")
    assert (outcome.status, outcome.valid, outcome.invalid) == ("accepted", 8, 2)
    assert outcome.reasons == {"row.field_count": 2}


def test_header_with_typos_in_some_columns_is_still_a_missing_column() -> None:
    data = b"Order_Id,Customer,Order_Date,Order_Status,Order_Total\nO1,C1,19/04/23,Pending,1\n"
    outcome = validate(data, "orders.csv")
    assert outcome.error == "missing required column(s): Customer_Id"


def test_a_customer_workbook_is_rejected_whole() -> None:
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    sheet = book.add_worksheet()
    for r, row in enumerate([["name", "email", "city"], ["Ada", "ada@example.com", "London"]]):
        sheet.write_row(r, 0, row)
    book.close()
    outcome = validate(out.getvalue(), "customers.xlsx")
    assert outcome.error == (
        f"this does not look like an order file: {EXPECTED}; found name, email, city"
    )


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_the_rule_holds_for_every_delimiter(sep: str) -> None:
    data = sep.join(["name", "email", "city"]) + "\n" + sep.join(["Ada", "a@x", "Rome"]) + "\n"
    assert validate(data.encode(), "c.csv").status == "rejected"
