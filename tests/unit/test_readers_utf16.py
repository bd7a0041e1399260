"""UTF-16 files (Excel's "Unicode Text" export, UTF-16 CSVs, LE or BE, with BOM) are read like
any other: same rows, exact line numbers, bounded memory while transcoding."""

from __future__ import annotations

import gzip
import io
import tracemalloc
from pathlib import Path

import polars as pl
import pytest

from core.validation.engine import validate
from core.validation.limits import Limits
from core.validation.readers import FileRejected, encoding, iter_table
from core.validation.readers.source import load

COLUMNS = ["Order_Id", "Customer_Id", "Order_Date", "Order_Status", "Order_Total"]
ROWS = [
    "Order_Id\tCustomer_Id\tOrder_Date\tOrder_Status\tOrder_Total",
    "Ord1\tC1\t19/04/23\tPending\t10.50",
    "",  # a blank line still counts
    "Ord2\tCüstömer 東京 📦\t01/02/2023\tCompleted\t1",
    'Ord3\t"two\r\nlines"\t19/04/23\tPending\t2',
    "Ord4\tC4\t31/02/23\tPending\t3",
]
BOMS = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}


def excel_unicode_text(rows: list[str], codec: str = "utf-16-le", eol: str = "\r\n") -> bytes:
    """What Excel's "Unicode Text" export writes: BOM, UTF-16 LE, tabs, CRLF."""
    return BOMS[codec] + (eol.join(rows) + eol).encode(codec)


def frame(data: bytes, name: str = "orders.txt") -> pl.DataFrame:
    return pl.concat(list(iter_table(data, name, COLUMNS, Limits(), chunk_rows=2)))


@pytest.mark.parametrize("codec", sorted(BOMS))
def test_unicode_text_reads_like_its_utf8_twin_with_exact_lines(codec: str) -> None:
    utf16 = frame(excel_unicode_text(ROWS, codec))
    utf8 = frame(("\r\n".join(ROWS) + "\r\n").encode())
    assert utf16.equals(utf8)
    assert utf16["line"].to_list() == [2, 4, 5, 7]
    assert utf16["Customer_Id"].to_list() == ["C1", "Cüstömer 東京 📦", "two\r\nlines", "C4"]
    assert not utf16["Order_Id"][0].startswith("\ufeff")


@pytest.mark.parametrize("codec", sorted(BOMS))
def test_a_utf16_csv_is_validated_end_to_end(codec: str) -> None:
    rows = [r.replace("\t", ",") for r in ROWS]
    outcome = validate(excel_unicode_text(rows, codec, eol="\n"), "orders.csv")
    assert (outcome.status, outcome.rows, outcome.valid, outcome.invalid) == ("accepted", 4, 3, 1)
    (bad,) = outcome.sample_rejects
    assert (bad.line, bad.reasons) == (7, ("Order_Date.format",))


def test_code_units_and_surrogate_pairs_cut_by_blocks_are_carried_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encoding, "_BLOCK", 7)  # odd: cuts code units and 📦's surrogate pair
    utf16 = frame(excel_unicode_text(ROWS))
    monkeypatch.undo()
    assert utf16.equals(frame(excel_unicode_text(ROWS)))


def test_transcoding_holds_one_block_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoding, "_BLOCK", 1024 * 1024)
    path = tmp_path / "big.txt"
    row = "Ord{}\tCustomer 東京\t19/04/23\tPending\t10.50\r\n"
    with path.open("wb") as out:
        out.write(b"\xff\xfe")
        for start in range(0, 400_000, 50_000):
            out.write("".join(row.format(i) for i in range(start, start + 50_000)).encode(
                "utf-16-le"))  # fmt: skip
    size = path.stat().st_size
    assert size > 30 * 1024 * 1024

    class Counting(io.RawIOBase):
        written = 0

        def write(self, data: object) -> int:
            n = len(data)  # type: ignore[arg-type]
            Counting.written += n
            return n

    with load(path, Limits()) as loaded:
        tracemalloc.start()
        encoding.utf16_to_utf8(loaded.buf, Counting(), Limits())  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert Counting.written > size // 2
    assert peak < 8 * 1024 * 1024, f"peak {peak:,} bytes for a {size:,}-byte file"


def test_gzipped_utf16_is_read() -> None:
    data = gzip.compress(excel_unicode_text(ROWS))
    assert frame(data, "orders.txt.gz").equals(frame(excel_unicode_text(ROWS)))


def test_utf16_json_lines_are_read() -> None:
    line = '{"Order_Id": "O1", "Customer_Id": "C1", "Order_Date": "19/04/23", '
    line += '"Order_Status": "Pending", "Order_Total": "1"}'
    got = frame(b"\xff\xfe" + (line + "\n").encode("utf-16-le"), "orders.jsonl")
    assert got["Order_Id"].to_list() == ["O1"]


def test_an_odd_byte_count_is_refused_with_its_line() -> None:
    data = excel_unicode_text(ROWS)[:-1]
    with pytest.raises(FileRejected, match=r"not readable as UTF-16: truncated data .*line 7"):
        frame(data)


def test_a_lone_surrogate_is_refused_with_its_line() -> None:
    data = excel_unicode_text(ROWS[:2]) + "Ord9\tC".encode("utf-16-le") + b"\x00\xd8A\x00"
    with pytest.raises(FileRejected, match=r"illegal UTF-16 surrogate at byte [0-9,]+ \(line 3\)"):
        frame(data)
