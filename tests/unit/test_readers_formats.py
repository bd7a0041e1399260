"""Every format reads the same orders alike; content decides the format, the name only helps."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import xlsxwriter

from core.validation.limits import Limits
from core.validation.readers import FIELD_COUNT_OK, LINE, FileRejected, iter_table
from core.validation.readers.sniff import Format, detect_format

COLUMNS = ["Order_Id", "Customer_Id", "Order_Date", "Order_Status", "Order_Total"]
FORMATS = Path(__file__).resolve().parents[2] / "fixtures" / "formats"
TEXT_FILES = [
    "orders.csv",
    "orders.csv.gz",
    "orders_bom_crlf.csv",
    "orders_cr.csv",
    "orders_semicolon_cp1252.csv",
    "orders.tsv",
    "orders_pipe.txt",
    "orders_no_header.csv",
    "orders_quoted_reordered.csv",
    "orders.jsonl",
]
EXPECTED_IDS = [f"Ord100{i}" for i in range(1, 10)]


def read_path(path: Path | str, name: str | None = None, **kw: object) -> pl.DataFrame:
    path = Path(path)
    frames = iter_table(path, name or path.name, COLUMNS, Limits(**kw))  # type: ignore[arg-type]
    return pl.concat(list(frames))


def read_bytes(data: bytes, name: str, **kw: object) -> pl.DataFrame:
    return pl.concat(list(iter_table(data, name, COLUMNS, Limits(**kw))))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", TEXT_FILES)
def test_text_shapes_read_identically(name: str) -> None:
    df = read_path(FORMATS / name)
    reference = read_path(FORMATS / "orders.csv")
    assert df.select(COLUMNS).equals(reference.select(COLUMNS))
    assert df[FIELD_COUNT_OK].all()
    assert df["Customer_Id"][7] == "Café Ünïcode"


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        ("orders.csv", list(range(2, 11))),
        ("orders_no_header.csv", list(range(1, 10))),
        ("orders_quoted_reordered.csv", list(range(3, 12))),  # blank line after the header
        ("orders.jsonl", list(range(1, 10))),
        ("orders.parquet", list(range(1, 10))),
        ("orders.xlsx", [3, 4, 5, 6, 8, 9, 10, 11, 12]),  # sheet rows; row 7 is blank
    ],
)
def test_line_numbers_point_at_the_source(name: str, lines: list[int]) -> None:
    assert read_path(FORMATS / name)[LINE].to_list() == lines


def test_xlsx_cells_keep_their_meaning() -> None:
    df = read_path(FORMATS / "orders.xlsx")
    assert df["Order_Id"].to_list() == EXPECTED_IDS
    # date cells become ISO dates; text cells in the same column stay as typed
    assert df["Order_Date"].to_list() == [
        "2023-04-19",
        "2023-05-11",
        "2023-06-09",
        "26/01/23",
        "2023-04-11",
        "17/05/23",
        "2023-01-06",
        "26/08/22",
        "2023-05-27",
    ]
    # number cells: the shortest exact decimal, never 19.989999...
    assert df["Order_Total"].to_list() == [
        "19.99",
        "1999",
        "0.5",
        "2299",
        "199",
        "1399",
        "2499.5",
        "1111",
        "12",
    ]
    assert df["Customer_Id"][2] is None  # an empty cell is missing


def _xlsx(write: Callable[[Any, Any], None]) -> bytes:
    buffer = io.BytesIO()
    book = xlsxwriter.Workbook(buffer, {"in_memory": True})
    write(book, book.add_worksheet())
    book.close()
    return buffer.getvalue()


def test_xlsx_numbers_text_and_booleans_cell_by_cell() -> None:
    def write(book: xlsxwriter.Workbook, sheet: Any) -> None:
        s = sheet
        s.write_row(0, 0, COLUMNS)
        s.write_string(1, 0, "007")  # text that looks numeric
        s.write_number(1, 1, 5)
        s.write_string(1, 2, "1e5")
        s.write_boolean(1, 3, True)
        s.write_number(1, 4, 0.1 + 0.2)
        s.write_number(2, 0, 123456789012.34)
        s.write_number(2, 4, -19.99)
        s.write_datetime(2, 2, dt.datetime(2024, 2, 29), book.add_format({"num_format": "d/m/yy"}))

    df = read_bytes(_xlsx(write), "book.xlsx")
    assert df.row(0)[1:6] == ("007", "5", "1e5", "true", "0.3")
    assert df.row(1)[1:6] == ("123456789012.34", None, "2024-02-29", None, "-19.99")


def test_xlsx_without_header_is_positional_and_flags_extra_cells() -> None:
    def write(book: xlsxwriter.Workbook, sheet: Any) -> None:
        sheet.write_row(0, 0, ["A", "B", "1/1/23", "Pending", 1])
        sheet.write_row(1, 0, ["C", "D", "1/1/23", "Pending", 2, "surplus"])

    df = read_bytes(_xlsx(write), "book.xlsx")
    assert df[FIELD_COUNT_OK].to_list() == [True, False]
    assert df[LINE].to_list() == [1, 2]


def test_parquet_values_become_text() -> None:
    frame = pl.DataFrame(
        {
            "order_id": [1, 2],
            "CUSTOMER ID": ["c", None],
            "Order-Date": [dt.date(2023, 1, 2), None],
            "Order_Status": ["Pending", "x"],
            "Order_Total": [19.99, 1999.0],
            "ignored": [[1], [2]],
        }
    )
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    df = read_bytes(buffer.getvalue(), "whatever.bin")
    assert df.rows() == [
        (1, "1", "c", "2023-01-02", "Pending", "19.99", True),
        (2, "2", None, None, "x", "1999", True),
    ]


def test_parquet_missing_column_rejects() -> None:
    buffer = io.BytesIO()
    pl.DataFrame({"Order_Id": ["a"], "Order_Total": ["1"]}).write_parquet(buffer)
    with pytest.raises(FileRejected, match="missing required column\\(s\\): Customer_Id"):
        read_bytes(buffer.getvalue(), "o.parquet")


def test_jsonl_bad_lines_are_row_problems_not_file_problems() -> None:
    data = (
        b'{"order id":"A","Customer_Id":"c","Order_Date":"1/2/23","Order_Status":"Pending",'
        b'"Order_Total":19.990}\n'
        b"\n"
        b'{"order id":"B","Order_Total":{"nested":1}}\n'
        b"[1, 2]\n"
        b"not json at all\n"
        b'{"order id":7,"Order_Total":1e5,"Customer_Id":true}\n'
    )
    df = read_bytes(data, "orders.jsonl")
    assert df[LINE].to_list() == [1, 3, 4, 5, 6]
    assert df[FIELD_COUNT_OK].to_list() == [True, True, False, False, True]
    assert df["Order_Total"].to_list() == ["19.99", '{"nested":1}', None, None, "100000"]
    assert df.row(4)[1:3] == ("7", "true")


def test_jsonl_and_polars_paths_agree_on_numbers() -> None:
    good = (
        b'{"Order_Id":"A","Customer_Id":1,"Order_Date":2.50,"Order_Status":-0.0,'
        b'"Order_Total":1.5E-7}\n'
    )
    fast = read_bytes(good, "o.jsonl")
    slow = read_bytes(good + b"[]\n", "o.jsonl")  # one bad line sends the chunk line by line
    assert fast.row(0) == slow.row(0)
    assert fast.row(0)[1:6] == ("A", "1", "2.5", "-0", "0.00000015")


@pytest.mark.parametrize(
    ("head", "name", "expected"),
    [
        (b"\x1f\x8b\x08\x00", "orders.csv", Format.GZIP),
        (b"PK\x03\x04", "orders.csv", Format.XLSX),
        (b"PAR1", "orders.csv", Format.PARQUET),
        (b'{"Order_Id": 1}', "orders.csv", Format.JSONL),
        (b'\xef\xbb\xbf  {"a": 1}', "x", Format.JSONL),
        (b"Order_Id,Customer_Id", "orders.jsonl", Format.JSONL),
        (b"Order_Id,Customer_Id", "orders.dat", Format.TEXT),
    ],
)
def test_content_first_name_second(head: bytes, name: str, expected: Format) -> None:
    assert detect_format(head, name) is expected


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"Order_Id,Customer_Id\n", "orders.xlsx", "corrupt xlsx"),
        (b"Order_Id,Customer_Id\n", "orders.parquet", "corrupt parquet"),
        (b"Order_Id,Customer_Id\n", "orders.csv.gz", "corrupt gzip"),
        (b"PK\x03\x04 not really a zip", "orders.xlsx", "corrupt xlsx"),
        (b"PAR1 truncated", "orders.parquet", "corrupt parquet"),
        (b"\x1f\x8b\x08\x00garbage", "orders.csv.gz", "corrupt gzip"),
        (b"%PDF-1.7\n", "orders.csv", "looks like a PDF"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64, "orders.xls", "legacy Excel"),
    ],
)
def test_unreadable_files_are_rejected_with_a_reason(data: bytes, name: str, message: str) -> None:
    with pytest.raises(FileRejected, match=message):
        read_bytes(data, name)


def test_truncated_gzip_is_corrupt() -> None:
    data = gzip.compress((FORMATS / "orders.csv").read_bytes() * 50)
    with pytest.raises(FileRejected, match="corrupt gzip"):
        read_bytes(data[: len(data) // 2], "orders.csv.gz")


def test_zip_that_is_not_a_workbook() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("orders.csv", (FORMATS / "orders.csv").read_bytes())
    with pytest.raises(FileRejected, match="zip archive that is not an xlsx workbook"):
        read_bytes(buffer.getvalue(), "orders.zip")


def test_concatenated_gzip_members_are_read_whole() -> None:
    text = (FORMATS / "orders.csv").read_bytes()
    header, body = text.split(b"\n", 1)
    data = gzip.compress(header + b"\n") + gzip.compress(body)
    assert read_bytes(data, "orders.csv.gz")["Order_Id"].to_list() == EXPECTED_IDS
