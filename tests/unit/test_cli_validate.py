"""``orderpipe validate``: the JSON contract, --out files, exit codes, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from core.cli import cli

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
HEADER = "Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"


def invoke(*args: str, columns: int = 200) -> Result:
    runner = CliRunner(env={"COLUMNS": str(columns)})
    return runner.invoke(cli, ["validate", *args], catch_exceptions=False)


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def json_lines(result: Result) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_clean_file_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, "good.csv", HEADER + "O1,C1,1/1/23,Pending,10\n")
    result = invoke("--json", str(path))
    assert result.exit_code == 0
    assert json_lines(result) == [
        {"file": str(path), "status": "accepted", "rows": 1, "valid": 1, "invalid": 0,
         "reasons": {}, "outcome": "SUCCEEDED"},
    ]  # fmt: skip


def test_json_one_object_per_file_and_exit_1_on_invalid_rows() -> None:
    result = invoke("--json", str(FIXTURES / "test_data1.csv"), str(FIXTURES / "test_data2.csv"))
    assert result.exit_code == 1
    first, second = json_lines(result)
    assert set(first) == {"file", "status", "outcome", "rows", "valid", "invalid", "reasons"}
    assert (first["status"], first["outcome"]) == ("accepted", "PARTIAL")
    assert (first["rows"], first["valid"], first["invalid"]) == (12, 7, 5)
    assert (second["rows"], second["valid"], second["invalid"]) == (12, 4, 8)
    assert second["reasons"] == {
        "Order_Id.required": 2,
        "Customer_Id.required": 2,
        "Order_Status.required": 4,
        "Order_Total.required": 3,
    }


def test_rejected_file_has_error_and_exit_1(tmp_path: Path) -> None:
    empty = write(tmp_path, "empty.csv", b"")
    good = write(tmp_path, "good.csv", HEADER + "O1,C1,1/1/23,Pending,10\n")
    result = invoke("--json", str(empty), str(good))
    assert result.exit_code == 1
    rejected, accepted = json_lines(result)
    assert rejected["status"] == "rejected"
    assert "empty" in str(rejected["error"])
    assert (rejected["rows"], rejected["valid"], rejected["invalid"]) == (0, 0, 0)
    assert accepted["status"] == "accepted"
    assert "error" not in accepted


def test_hostile_content_is_an_outcome_not_a_traceback(tmp_path: Path) -> None:
    junk = write(tmp_path, "orders.xlsx", b"PK\x03\x04" + bytes(range(256)) * 8)
    result = CliRunner().invoke(cli, ["validate", str(junk)])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "rejected" in result.output


def test_directory_means_its_files(tmp_path: Path) -> None:
    write(tmp_path, "a.csv", HEADER + "O1,C1,1/1/23,Pending,10\n")
    write(tmp_path, "b.csv", HEADER + "O2,C1,1/1/23,Pending,10\n")
    write(tmp_path, ".hidden", b"junk")
    result = invoke("--json", str(tmp_path))
    assert [Path(str(o["file"])).name for o in json_lines(result)] == ["a.csv", "b.csv"]
    assert result.exit_code == 0


def test_out_writes_valid_and_rejects_csv(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("--out", str(out), str(FIXTURES / "test_data2.csv"))
    assert result.exit_code == 1
    valid = (out / "test_data2.csv.valid.csv").read_text().splitlines()
    assert valid == [
        "Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total",
        "Ord2313,Cust2308,2023-07-12,Inprogress,249",
        "Ord2317,Cust2309,2022-05-17,Completed,1999",
        "Ord2321,Cust2308,2023-03-01,Pending,3213",
        "Ord2324,Cust2302,2023-07-12,Inprogress,211",
    ]
    rejects = (out / "test_data2.csv.rejects.csv").read_text().splitlines()
    assert rejects[0] == "line,Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total,reasons"
    assert rejects[1] == "2,Ord2314,Cust2309,13/06/23,,213,Order_Status.required"
    assert rejects[3] == "4,,Cust2311,15/07/23,,222,Order_Id.required;Order_Status.required"
    assert len(rejects) == 9


def test_out_leaves_nothing_for_a_rejected_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.csv", b"")
    out = tmp_path / "out"
    assert invoke("--out", str(out), str(bad)).exit_code == 1
    assert list(out.iterdir()) == []


def test_custom_schema_names_the_codes(tmp_path: Path) -> None:
    schema = write(tmp_path, "s.json", json.dumps({"columns": [
        {"name": "Sku", "unique": True},
        {"name": "Qty", "type": "decimal", "scale": 0, "minimum": "1"},
    ]}))  # fmt: skip
    data = write(tmp_path, "d.csv", "sku,qty\nA,1\nA,2\nB,0\nC,1.5\n")
    result = invoke("--json", "--schema", str(schema), str(data))
    assert result.exit_code == 1
    assert json_lines(result)[0]["reasons"] == {"Sku.unique": 1, "Qty.format": 1, "Qty.range": 1}


def test_human_output_shows_counts_reasons_and_rejected_lines() -> None:
    result = invoke(str(FIXTURES / "test_data1.csv"))
    assert result.exit_code == 1
    out = result.stdout
    assert "test_data1.csv: partly accepted, 5 of 12 rows rejected, 7 valid" in out
    assert "Customer_Id.required ×4" in out
    assert "Ord2306" in out
    assert "Order_Status.allowed" in out
    assert "rejected rows:" in out


def test_human_output_at_80_columns_keeps_every_reason_and_whole_values(
    tmp_path: Path,
) -> None:
    rows = "".join(f"Ord2{i:03d}-with-a-long-id,C1,1/1/23,Nope,{i}\n" for i in range(3))
    path = write(tmp_path, "wide.csv", HEADER + rows + "Ord9, C2 ,,Pending,x\n")
    result = invoke(str(path), columns=80)
    out = result.stdout
    assert "rejected, 4 of 4 rows rejected, no valid row: nothing would be stored" in out
    assert "…" not in out
    assert all(len(line) <= 80 for line in out.splitlines()[1:]), out  # [0]: the long tmp path
    for code in ("Order_Status.allowed", "Order_Total.format", "Order_Date.required"):
        assert code in out
    assert "Ord2002-with-a-long-id" in out  # whole, never "Ord2…"
    assert 'Customer_Id=" C2 "' in out  # the spaces around a value stay visible


def test_every_verdict_has_its_word(tmp_path: Path) -> None:
    clean = write(tmp_path, "clean.csv", HEADER + "O1,C1,1/1/23,Pending,10\n")
    empty = write(tmp_path, "empty.csv", b"")
    out = invoke(str(clean), str(empty)).stdout
    assert "clean.csv: accepted, all 1 row valid" in out
    assert "empty.csv: rejected, nothing would be stored" in out


def test_markup_in_values_is_printed_literally(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", HEADER + "[bold]x[/bold],C1,1/1/23,Nope,1\n")
    result = invoke(str(path))
    assert "[bold]x[/bold]" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Missing argument"),
        (["/no/such/file.csv"], "does not exist"),
        (["--bogus", "x"], "No such option"),
        (["--chunk-rows", "10", str(FIXTURES / "test_data1.csv")], "not in the range x>=1000"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["validate", *args])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(
    ("schema_text", "message"),
    [
        ("{not json", "not JSON"),
        ('{"columns": []}', "non-empty 'columns'"),
        ('{"columns": [{"name": "A", "type": "money"}]}', "type must be one of"),
        ('{"columns": [{"name": "D", "type": "date", "formats": ["yy/qq"]}]}', "day"),
        ('{"columns": [{"name": "A"}, {"name": "A"}]}', "twice"),
    ],
)
def test_bad_schema_is_a_usage_error(tmp_path: Path, schema_text: str, message: str) -> None:
    schema = write(tmp_path, "s.json", schema_text)
    result = CliRunner().invoke(
        cli, ["validate", "--schema", str(schema), str(FIXTURES / "test_data1.csv")]
    )
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_smaller_chunks_give_the_same_outcome_and_files(tmp_path: Path) -> None:
    """Repeats, reasons and line numbers hold across chunk edges, whatever the chunk size."""
    rows = [f"O{i % 2_600},C{i % 7},{1 + i % 28}/02/24,{'Pending' if i % 9 else 'x'},{i}.5"
            for i in range(5_000)]  # fmt: skip
    path = write(tmp_path, "orders.csv", HEADER + "\n".join(rows) + "\n")
    results = {}
    for size in ("1000", "256000"):
        out = tmp_path / size
        result = invoke("--json", "--chunk-rows", size, "--out", str(out), str(path))
        assert result.exit_code == 1
        files = [(out / f"orders.csv.{kind}.csv").read_bytes() for kind in ("valid", "rejects")]
        results[size] = (json_lines(result), files)
    assert results["1000"] == results["256000"]
    ((outcome,), _) = results["1000"]
    assert outcome["reasons"] == {"Order_Id.unique": 2_400, "Order_Status.allowed": 556}


def test_help() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "--schema" in result.output
    assert "--out" in result.output


def test_a_file_with_rows_but_none_valid_is_rejected_with_its_rows_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "none.csv", HEADER + "O1,C1,1/1/23,Nope,1\nO2,C2,,Pending,2\n")
    some = write(tmp_path, "some.csv", HEADER + "O1,C1,1/1/23,Nope,1\nO2,C2,1/1/23,Pending,2\n")
    result = invoke("--json", "--out", str(tmp_path / "out"), str(path), str(some))
    assert result.exit_code == 1
    none_valid, partly = json_lines(result)
    assert none_valid["outcome"] == "REJECTED"
    assert (none_valid["rows"], none_valid["valid"], none_valid["invalid"]) == (2, 0, 2)
    assert "error" not in none_valid  # rejected for its rows, not refused as a file
    assert partly["outcome"] == "PARTIAL"
    rejects = (tmp_path / "out" / "none.csv.rejects.csv").read_text().splitlines()
    assert len(rejects) == 3  # header and both rows, each with its line and reasons
    human = invoke(str(path)).stdout
    assert "none.csv: rejected, 2 of 2 rows rejected, no valid row: nothing would be stored" in (
        human
    )
    assert "line 2:" in human
    assert "line 3:" in human
