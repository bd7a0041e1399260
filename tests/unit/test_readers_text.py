"""Delimited text: header, delimiter, field counts, line numbers, encodings, line ends."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest

from core.validation.limits import Limits
from core.validation.readers import FIELD_COUNT_OK, LINE, FileRejected, iter_table

COLUMNS = ["Order_Id", "Customer_Id", "Order_Date", "Order_Status", "Order_Total"]
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def read(data: bytes, **kw: object) -> pl.DataFrame:
    frames = list(iter_table(data, "orders.csv", COLUMNS, Limits(), **kw))  # type: ignore[arg-type]
    return pl.concat(frames)


def test_frame_shape_and_types() -> None:
    df = read(b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\nA,B,1/2/23,Pending,1\n")
    assert df.columns == [LINE, *COLUMNS, FIELD_COUNT_OK]
    assert df.schema[LINE] == pl.Int64
    assert all(df.schema[c] == pl.String for c in COLUMNS)
    assert df.schema[FIELD_COUNT_OK] == pl.Boolean
    assert df.row(0) == (2, "A", "B", "1/2/23", "Pending", "1", True)


def test_seed_file_without_header_is_positional() -> None:
    df = read((FIXTURES / "test_data1.csv").read_bytes())
    assert df.height == 12
    assert df[LINE].to_list() == list(range(1, 13))
    assert df.row(5) == (6, "Ord2306", "", "17/05/23", "Completed", "1399", True)


def test_bom_never_leaks_into_first_cell() -> None:
    df = read((FIXTURES / "test_data2.csv").read_bytes())
    assert df["Order_Id"][0] == "Ord2313"
    assert df.height == 12


def test_header_matched_loosely_in_any_order_with_extras() -> None:
    data = b"total;STATUS;order id;Extra;customer-id;OrderDate\n5;Pending;A;x;C;1/1/23\n"
    data = data.replace(b"total", b"Order Total").replace(b"STATUS", b"ORDER_STATUS")
    df = read(data)
    assert df.row(0) == (2, "A", "C", "1/1/23", "Pending", "5", True)


def test_missing_required_column_rejects() -> None:
    with pytest.raises(FileRejected, match="missing required column\\(s\\): Order_Date"):
        read(b"Order_Id,Customer_Id,Order_Status,Order_Total\nA,B,Pending,1\n")


def test_field_count_flags_short_long_and_trailing_empty() -> None:
    data = (
        b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
        b"A,B,C,D,E\n"  # 2: exact
        b"A,B,C,D\n"  # 3: one short
        b"A,B,C,D,\n"  # 4: exact, last empty
        b"A,B,C,D,E,\n"  # 5: one extra, empty
        b"A,B,C,D,E,F,G\n"  # 6: two extra
    )
    df = read(data)
    assert df[FIELD_COUNT_OK].to_list() == [True, False, True, False, False]
    assert df.filter(pl.col(LINE) == 3)["Order_Total"].to_list() == [None]
    assert df.filter(pl.col(LINE) == 4)["Order_Total"].to_list() == [""]


def test_blank_lines_skipped_but_counted() -> None:
    header = b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total"
    data = b"\n" + header + b"\n\nA,B,C,D,E\n  \r\nF,G,H,I,J\n\n"
    df = read(data)
    assert df[LINE].to_list() == [4, 6]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_line_ends(eol: bytes) -> None:
    data = eol.join(
        [b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total", b"A,B,C,D,E", b"F,G,H,I,J"]
    )
    df = read(data + eol)
    assert df["Order_Total"].to_list() == ["E", "J"]
    assert df[LINE].to_list() == [2, 3]


@pytest.mark.parametrize("delimiter", [b",", b";", b"\t", b"|"])
def test_delimiters(delimiter: bytes) -> None:
    rows = [b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total", b"A,B,1,5,7.5"]
    data = b"\n".join(r.replace(b",", delimiter) for r in rows)
    assert read(data).row(0)[1:] == ("A", "B", "1", "5", "7.5", True)


def test_rfc4180_quotes_and_multiline_values_keep_line_numbers() -> None:
    data = (
        b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
        b'"A,1","say ""hi""",C,D,E\n'
        b'"multi\nline",B,C,D,E\n'
        b"Z,B,C,D,E\n"
    )
    df = read(data)
    assert df["Order_Id"].to_list() == ["A,1", "multi\nline", "Z"]
    assert df["Customer_Id"][0] == 'say "hi"'
    assert df[LINE].to_list() == [2, 3, 5]
    assert df[FIELD_COUNT_OK].all()


def test_windows_1252_is_decoded() -> None:
    data = "Order_Id;Customer_Id;Order_Date;Order_Status;Order_Total\nCafé–1;B;C;D;E\n"
    df = read(data.encode("cp1252"))
    assert df["Order_Id"][0] == "Café–1"


def test_nul_bytes_mean_binary() -> None:
    with pytest.raises(FileRejected, match="looks binary"):
        read(b"Order_Id,Customer_Id\x00\n")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"\n\n  \n", "blank"),
        (b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n", "no data rows"),
    ],
)
def test_empty_files(data: bytes, message: str) -> None:
    with pytest.raises(FileRejected, match=message):
        read(data)


def test_sources_path_stream_and_bytes_agree(tmp_path: Path) -> None:
    data = (FIXTURES / "test_data1.csv").read_bytes()
    path = tmp_path / "orders.csv"
    path.write_bytes(data)
    a = read(data)
    b = pl.concat(iter_table(path, "orders.csv", COLUMNS, Limits()))
    c = pl.concat(iter_table(io.BytesIO(data), "orders.csv", COLUMNS, Limits()))
    assert a.equals(b)
    assert a.equals(c)


def test_chunks_are_bounded_and_line_numbers_continue() -> None:
    header = b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
    body = b"".join(b"O%d,C,1/1/23,Pending,1\n" % i for i in range(20_000))
    frames = list(iter_table(header + body, "x.csv", COLUMNS, Limits(), chunk_rows=1000))
    assert len(frames) > 3
    assert all(f.height <= 1000 for f in frames)
    df = pl.concat(frames)
    assert df[LINE].to_list() == list(range(2, 20_002))
    assert df["Order_Id"][-1] == "O19999"


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # one row short and one with a trailing empty field: separator totals balance out
        ([b"A,B,C,D", b"A,B,C,D,E,"], [False, False]),
        ([b"A,B,C,D,E", b"A,B,C,D,E,,"], [True, False]),
        ([b"A,B,C,D,E", b"A,B,C,D,E"], [True, True]),
        ([b"A,B,C,D,E", b",,,,"], [True, True]),
        ([b"A,B,C,D,E", b",,,"], [True, False]),
    ],
)
def test_field_counts_exact_when_ragged_rows_balance(
    rows: list[bytes], expected: list[bool]
) -> None:
    header = b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total"
    df = read(b"\n".join([header, *rows]) + b"\n")
    assert df[FIELD_COUNT_OK].to_list() == expected


def test_uniform_and_ragged_chunks_in_one_file() -> None:
    header = b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
    uniform = b"".join(b"O%d,C,1/1/23,Pending,1\n" % i for i in range(5000))
    ragged = b"R1,C,1/1/23\nR2,C,1/1/23,Pending,1,extra\n\n"
    df = read(header + uniform + ragged + uniform, chunk_rows=1000)
    bad = df.filter(~pl.col(FIELD_COUNT_OK))
    assert bad[LINE].to_list() == [5002, 5003]
    assert df.height == 10_002
    assert df[LINE][-1] == 10_004  # the blank line (5004) still counts


def test_a_range_opening_on_a_too_long_row_stays_columnar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from core.validation.readers import text

    def row_by_row(*args: object) -> None:
        raise AssertionError("fell back to the csv module")

    monkeypatch.setattr(text, "_parse_with_csv_module", row_by_row)
    header = b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
    long_row = b"L1,C,1/1/23,Pending,1,extra\n"
    data = header + long_row + b"".join(b"O%d,C,1/1/23,Pending,1\n" % i for i in range(99))
    df = read(data)
    assert df.row(0) == (2, "L1", "C", "1/1/23", "Pending", "1", False)
    assert df[FIELD_COUNT_OK].sum() == 99
    assert df[LINE][-1] == 101


def test_long_value_in_a_uniform_file_is_rejected() -> None:
    header = b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
    data = header + b"A,B,C,D,E\n" + b"X" * 70_000 + b",B,C,D,E\n"
    with pytest.raises(FileRejected, match=r"line 3 holds a value of 68\.4 KB; the limit is 64 KB"):
        read(data)


def test_quote_inside_an_unquoted_field_is_a_character() -> None:
    header = b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total"
    rows = [b'A,12" pizza,C,D,E', b'"a,b",C,D,E,F', b'"x","y","z","w"', b'A,5",6",D,E']
    df = read(b"\n".join([header, *rows]) + b"\n")
    assert df["Customer_Id"].to_list() == ['12" pizza', "C", "y", '5"']
    assert df[FIELD_COUNT_OK].to_list() == [True, True, False, True]


def test_many_leading_blank_lines_before_the_header() -> None:
    header = b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
    df = read(b"\n  \r\n" * 100_000 + header + b"A,B,C,D,E\n")
    assert df[LINE].to_list() == [200_002]
    assert df["Order_Id"].to_list() == ["A"]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([b'"A","B","C","D","E"', b'"A,1","B;2","C","D","E"'], [True, True]),
        ([b'"A","B","C","D","E"', b'"A,1","B","C","D"'], [True, False]),  # short, quoted comma
        ([b'"A","B","C","D","E"', b'"A","B","C","D","E",""'], [True, False]),
        ([b'"A","B","C","D,",""', b'"A""x","B","C","D","E"'], [True, True]),
    ],
)
def test_field_counts_exact_in_quoted_rows(rows: list[bytes], expected: list[bool]) -> None:
    header = b'"Order_Id","Customer_Id","Order_Date","Order_Status","Order_Total"'
    df = read(b"\r\n".join([header, *rows]) + b"\r\n")
    assert df[FIELD_COUNT_OK].to_list() == expected
    assert df[LINE].to_list() == [2, 3]
