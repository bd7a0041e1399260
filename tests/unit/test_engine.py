"""The engine end to end: chunking, cross-chunk uniqueness, counts, streaming, never crashing."""

from __future__ import annotations

import io
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.validation.engine import SeenValues, validate, validate_chunks
from core.validation.limits import Limits
from core.validation.outcome import SAMPLE_REJECTS, ChunkResult, reason_code
from core.validation.schema import default_schema

SCHEMA = default_schema()
HEADER = "Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"


def csv(*lines: str, header: bool = True) -> bytes:
    return ((HEADER if header else "") + "".join(line + "\n" for line in lines)).encode()


def run(data: bytes, chunk_rows: int = 256_000) -> tuple[object, list[ChunkResult]]:
    """Through the real reader (which sizes chunks itself, 64 KB at least)."""
    chunks: list[ChunkResult] = []
    outcome = validate(data, "orders.csv", on_chunk=chunks.append, chunk_rows=chunk_rows)
    return outcome, chunks


def run_split(lines: list[str], size: int) -> tuple[object, list[ChunkResult]]:
    """Header-less comma lines cut into frames of ``size`` rows, so boundaries are exact."""
    table = [line.split(",") for line in lines]
    frames = []
    for start in range(0, len(table), size):
        part = table[start : start + size]
        data: dict[str, list[object]] = {"line": list(range(start + 2, start + 2 + len(part)))}
        for i, name in enumerate(SCHEMA.column_names):
            data[name] = [cells[i] if i < len(cells) else None for cells in part]
        data["field_count_ok"] = [len(cells) == len(SCHEMA.columns) for cells in part]
        frames.append(
            pl.DataFrame(
                data,
                schema={
                    "line": pl.Int64,
                    **dict.fromkeys(SCHEMA.column_names, pl.String),
                    "field_count_ok": pl.Boolean,
                },
            )
        )
    chunks: list[ChunkResult] = []
    outcome = validate_chunks(frames, "split.csv", SCHEMA, on_chunk=chunks.append)
    return outcome, chunks


def test_repeats_are_found_across_chunk_boundaries() -> None:
    lines = [f"O{i},C1,1/1/23,Pending,1" for i in range(10)] + ["O3,C1,1/1/23,Pending,1"]
    outcome, chunks = run_split(lines, 4)
    assert len(chunks) == 3  # the repeat lives two chunks after its first occurrence
    assert (outcome.rows, outcome.valid, outcome.invalid) == (11, 10, 1)  # type: ignore[attr-defined]
    rejects = pl.concat([c.rejects for c in chunks])
    assert rejects.select("line", "Order_Id", "reasons").rows() == [
        (12, "O3", "Order_Id.unique (first on line 5)")
    ]


def test_padded_values_are_trimmed_beside_columns_that_need_no_trimming() -> None:
    lines = ["O1, C1 ,1/1/23,Pending,1", "O2,C2,2/1/23, pending ,2", "O3,C3,3/1/23,Pending, 3 "]
    _, chunks = run_split(lines, 3)
    valid = pl.concat([c.valid for c in chunks])
    assert valid.select("Customer_Id", "Order_Status", "Order_Total").rows() == [
        ("C1", "Pending", "1"),
        ("C2", "Pending", "2"),
        ("C3", "Pending", "3"),
    ]
    _, chunks = run_split(["O1, ,1/1/23,Pending,1", " O1 ,C1,1/1/23,Pending,1"], 2)
    rejects = pl.concat([c.rejects for c in chunks])
    assert rejects.select("line", "Customer_Id", "Order_Id", "reasons").rows() == [
        (2, " ", "O1", "Customer_Id.required"),  # rejects keep the original text
        (3, "C1", " O1 ", "Order_Id.unique (first on line 2)"),
    ]


def test_chunks_keep_source_line_numbers_and_order() -> None:
    lines = [f"O{i},C1,1/1/23,Pending,{i}" for i in range(9)]
    lines[6] = "O6,C1,1/1/23,Pending,-1"
    _, chunks = run_split(lines, 3)
    valid = pl.concat([c.valid for c in chunks])
    assert valid["line"].to_list() == [2, 3, 4, 5, 6, 7, 9, 10]
    assert valid.columns == ["line", *SCHEMA.column_names]
    assert pl.concat([c.rejects for c in chunks])["line"].to_list() == [8]


def test_valid_frame_is_normalised_text() -> None:
    _, chunks = run(csv(" Ord1 ,Cust1, 2024-02-29 ,completed,  007.10 "))
    assert chunks[0].valid.row(0, named=True) == {
        "line": 2,
        "Order_Id": "Ord1",
        "Customer_Id": "Cust1",
        "Order_Date": "2024-02-29",
        "Order_Status": "Completed",
        "Order_Total": "007.10",
    }
    assert all(dtype == pl.String for dtype in chunks[0].valid.drop("line").dtypes)


def test_rejects_keep_the_original_untrimmed_text() -> None:
    _, chunks = run(csv(" Ord1 , ,31/04/23, Done ,1"))
    assert chunks[0].rejects.row(0, named=True) == {
        "line": 2,
        "Order_Id": " Ord1 ",
        "Customer_Id": " ",
        "Order_Date": "31/04/23",
        "Order_Status": " Done ",
        "Order_Total": "1",
        "reasons": "Customer_Id.required;Order_Date.format;Order_Status.allowed",
    }


def test_rows_with_wrong_field_count_fail_that_alone() -> None:
    outcome, chunks = run(csv("O1,C1,1/1/23,Pending,1,extra", "O2,C1", "O3,C1,1/1/23,Pending,1"))
    assert outcome.reasons == {"row.field_count": 2}  # type: ignore[attr-defined]
    assert chunks[0].rejects["line"].to_list() == [2, 3]


def test_sample_of_rejects_is_bounded_and_first_in_file() -> None:
    lines = [f"O{i},,1/1/23,Pending,1" for i in range(SAMPLE_REJECTS + 15)]
    outcome, _ = run_split(lines, 7)
    sample = outcome.sample_rejects  # type: ignore[attr-defined]
    assert len(sample) == SAMPLE_REJECTS
    assert [r.line for r in sample] == list(range(2, SAMPLE_REJECTS + 2))
    assert sample[0].values["Order_Id"] == "O0"
    assert sample[0].reasons == ("Customer_Id.required",)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "empty"),
        (HEADER.encode(), "no data rows"),
        (b"Order_Id,Customer_Id\nO1,C1\n", "Order_Date"),
        (b"\x00\x01\x02binary\x00" * 20, "not"),
    ],
)
def test_file_problems_become_rejected_outcomes(data: bytes, error: str) -> None:
    outcome, chunks = run(data)
    assert outcome.status == "rejected"  # type: ignore[attr-defined]
    assert error in (outcome.error or "")  # type: ignore[attr-defined]
    assert outcome.to_json_dict()["error"] == outcome.error  # type: ignore[attr-defined]
    assert (outcome.rows, outcome.valid, outcome.invalid) == (0, 0, 0)  # type: ignore[attr-defined]
    assert chunks == []


def test_row_limit_rejects_the_file() -> None:
    lines = [f"O{i},C1,1/1/23,Pending,1" for i in range(50)]
    outcome = validate(csv(*lines), "big.csv", limits=Limits(max_rows=10), chunk_rows=8)
    assert outcome.status == "rejected"
    assert outcome.error


def test_streams_and_paths_give_the_same_outcome(tmp_path: object) -> None:
    data = csv("O1,C1,1/1/23,Pending,1", "O1,C1,1/1/23,Pending,1")
    path = tmp_path / "o.csv"  # type: ignore[operator]
    path.write_bytes(data)
    by_bytes = validate(data, "o.csv")
    assert validate(io.BytesIO(data), "o.csv") == by_bytes
    assert validate(path, "o.csv") == by_bytes
    assert by_bytes.to_json_dict() == {
        "file": "o.csv",
        "status": "accepted",
        "rows": 2,
        "valid": 1,
        "invalid": 1,
        "reasons": {"Order_Id.unique": 1},
    }


def test_validate_chunks_needs_no_reader() -> None:
    frame = pl.DataFrame(
        {"line": [5], **{c: ["x"] for c in SCHEMA.column_names}, "field_count_ok": [True]},
        schema_overrides={"line": pl.Int64},
    )
    outcome = validate_chunks([frame], "mem", SCHEMA)
    assert outcome.reasons == {"Order_Date.format": 1, "Order_Status.allowed": 1,
                               "Order_Total.format": 1}  # fmt: skip


# --- properties ----------------------------------------------------------------------------

ids = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=1, max_size=12)
dates = st.dates().filter(lambda d: d.year >= 1)
statuses = st.sampled_from(["Pending", "Completed", "Inprogress", "pending", "COMPLETED"])
totals = st.decimals(min_value=0, max_value=10**12, places=2, allow_nan=False,
                     allow_infinity=False)  # fmt: skip


def date_text(day: object, style: int) -> str:
    d = day  # datetime.date
    if style == 0 or not 2000 <= d.year <= 2099:  # type: ignore[attr-defined]
        return d.isoformat()  # type: ignore[attr-defined]
    if style == 1:
        return f"{d.day}/{d.month}/{d.year % 100:02d}"  # type: ignore[attr-defined]
    return f"{d.day:02d}/{d.month:02d}/{d.year}"  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(ids, ids, dates, st.integers(0, 2), statuses, totals),
        min_size=1,
        max_size=40,
        unique_by=lambda r: r[0],
    ),
    st.integers(1, 9),
)
def test_generated_valid_rows_always_validate(rows: list[tuple], chunk_rows: int) -> None:  # type: ignore[type-arg]
    lines = [
        f"{oid},{cust},{date_text(day, style)},{status},{total}"
        for oid, cust, day, style, status, total in rows
    ]
    outcome, chunks = run_split(lines, chunk_rows)
    assert outcome.status == "accepted", outcome.error  # type: ignore[attr-defined]
    assert (outcome.valid, outcome.invalid) == (len(rows), 0)  # type: ignore[attr-defined]
    valid = pl.concat([c.valid for c in chunks])
    assert valid["Order_Date"].to_list() == [r[2].isoformat() for r in rows]
    assert [Decimal(t) for t in valid["Order_Total"]] == [r[5] for r in rows]


cell = st.one_of(
    st.sampled_from(["", " ", "O1", "O2", "1/1/23", "31/04/23", "Pending", "x", "-1", "1.99"]),
    st.text(alphabet=st.characters(blacklist_characters=",\n\r\"", blacklist_categories=["Cs"]),
            max_size=6),
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(cell, min_size=1, max_size=7), min_size=1, max_size=30), st.integers(1, 8))
def test_counts_always_add_up(table: list[list[str]], chunk_rows: int) -> None:
    outcome, chunks = run_split([",".join(cells) for cells in table], chunk_rows)
    valid = sum(c.valid.height for c in chunks)
    rejects = pl.concat([c.rejects for c in chunks])
    assert outcome.rows == outcome.valid + outcome.invalid  # type: ignore[attr-defined]
    assert (valid, rejects.height) == (outcome.valid, outcome.invalid)  # type: ignore[attr-defined]
    per_code: dict[str, int] = {}
    for reasons in rejects["reasons"]:
        assert reasons
        for reason in reasons.split(";"):
            code = reason_code(reason)
            per_code[code] = per_code.get(code, 0) + 1
    assert per_code == outcome.reasons  # type: ignore[attr-defined]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.sampled_from(["x.csv", "x.xlsx", "x.parquet", "x.gz", "x"]))
def test_any_bytes_give_an_outcome(data: bytes, name: str) -> None:
    outcome = validate(data, name, chunk_rows=5)
    assert outcome.status in ("accepted", "rejected")
    assert outcome.rows == outcome.valid + outcome.invalid


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.text(alphabet="AB01", max_size=4)), max_size=60),
    st.integers(1, 12),
)
def test_seen_values_flags_exactly_the_values_met_earlier_in_the_file(
    values: list[str | None], size: int
) -> None:
    seen = SeenValues()
    earlier: dict[str, int] = {}
    for start in range(0, len(values), size):
        part = values[start : start + size]
        lines = list(range(start + 2, start + 2 + len(part)))
        flags, first = seen.judge(
            pl.Series("v", part, dtype=pl.String), pl.Series("line", lines, dtype=pl.Int64)
        )
        expected, expected_first = [], []
        for v, line in zip(part, lines, strict=True):
            repeat = v is not None and v in earlier
            expected.append(repeat)
            expected_first.append(earlier[v] if repeat and v is not None else None)
            if v is not None:
                earlier.setdefault(v, line)
        assert flags.to_list() == expected
        assert first.to_list() == expected_first


def test_seen_values_finds_an_early_id_repeated_late_in_growing_ids() -> None:
    seen = SeenValues()
    chunks = [[f"ORD{i:06d}" for i in range(k, k + 1000)] for k in range(0, 5000, 1000)]
    chunks[3][500] = "ORD000007"
    chunks[4][10] = chunks[4][900]  # a repeat inside one chunk: the later row is the repeat
    flagged = [seen.repeats(pl.Series("v", c)).to_list() for c in chunks]
    assert [sum(f) for f in flagged] == [0, 0, 0, 1, 1]
    assert flagged[3][500]
    assert flagged[4][900]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.sampled_from(["1/2/23", "31/4/23", "2024-02-29", " 3/3/23", "x"])),
        max_size=80,
    ),
    st.integers(1, 15),
    st.integers(1, 6),
)
def test_derived_values_remembered_across_chunks_match_a_direct_parse(
    values: list[str | None], size: int, remembered: int
) -> None:
    from core.validation.engine import _Derived, _staged
    from core.validation.rules import derived_values, parsed_col, value_col

    stages = derived_values(SCHEMA)["Order_Date"]
    derive = _Derived("Order_Date", stages)
    derive._REMEMBERED = remembered  # small: some chunks must forget and start again
    for start in range(0, len(values), size):
        part = pl.Series(value_col("Order_Date"), values[start : start + size], dtype=pl.String)
        part = part.str.strip_chars()
        direct = _staged(part.to_frame().lazy(), stages).select(parsed_col("Order_Date"))
        assert derive(part).to_list() == direct.collect().to_series().to_list()


def test_every_reason_fixture_has_its_exact_outcome() -> None:
    path = Path(__file__).resolve().parents[2] / "fixtures" / "rules_every_reason.csv"
    chunks: list[ChunkResult] = []
    outcome = validate(path, path.name, on_chunk=chunks.append)
    rejects = pl.concat([c.rejects for c in chunks])
    assert rejects.select("line", "reasons").rows() == [
        (5, "Order_Id.required"),
        (6, "Customer_Id.required"),
        (7, "Order_Date.required"),
        (8, "Order_Status.required"),
        (9, "Order_Total.required"),
        (10, "Order_Id.unique (first on line 2)"),
        (11, "Order_Date.format"),
        (12, "Order_Date.format"),
        (13, "Order_Status.allowed"),
        (14, "Order_Total.format"),
        (15, "Order_Total.format"),
        (16, "Order_Total.range"),
        (17, "row.field_count"),
        (18, "row.field_count"),
    ]
    valid = pl.concat([c.valid for c in chunks])
    assert valid.rows() == [
        (2, "R1", "C1", "2023-04-19", "Pending", "19.99"),
        (3, "R2", "C1", "2024-02-01", "Completed", "0"),
        (4, "R3", "C2", "2024-02-29", "Inprogress", "1999"),
        (20, "R18", "C5", "2024-02-29", "Pending", "0.00"),  # line 19 is blank
    ]
    assert (outcome.rows, outcome.valid, outcome.invalid) == (18, 4, 14)


def test_a_polars_error_while_reading_is_a_rejection_not_a_crash() -> None:
    from core.validation.engine import _read_guarded
    from core.validation.readers import FileRejected

    def broken_reader() -> Iterator[pl.DataFrame]:
        yield pl.DataFrame({"line": [1]})
        raise pl.exceptions.ComputeError("could not parse 'x' as the row count\nmore detail")

    chunks = _read_guarded(broken_reader())
    assert next(chunks).height == 1
    with pytest.raises(FileRejected, match="not a readable order file: could not parse 'x'"):
        next(chunks)


def test_a_bug_in_the_rules_is_not_disguised_as_a_bad_file() -> None:
    frame = pl.DataFrame({"line": [1], "field_count_ok": [True]})  # no schema columns at all
    with pytest.raises(pl.exceptions.PolarsError):
        validate_chunks([frame], "mem", SCHEMA)


DATE_CASES = ["5/3/23", " 05/03/2023 ", "2023-03-05", "31/04/23", "29/02/24", "29/02/23",
              "2023/13/01", "", "  ", "5-3-23", "1/1/1"]  # fmt: skip
STATUS_CASES = ["Pending", " completed", "INPROGRESS", "Shipped", "", "pending "]


def _judged(lines: list[str]) -> list[tuple[object, ...]]:
    outcome, chunks = run_split(lines, len(lines))
    valid = pl.concat([c.valid for c in chunks]).rows()
    rejects = pl.concat([c.rejects for c in chunks]).select("line", "reasons").rows()
    return [outcome.reasons, sorted(valid), sorted(rejects)]  # type: ignore[attr-defined]


def test_repeated_dates_and_statuses_are_judged_as_when_each_is_distinct() -> None:
    """A chunk whose dates and statuses repeat is parsed per distinct value and mapped back;
    the same rows with every value told apart (parsed row by row) must give the same verdicts."""
    rows = [
        (DATE_CASES[i % len(DATE_CASES)], STATUS_CASES[i % len(STATUS_CASES)]) for i in range(66)
    ]
    repeated = [f"ID{i},C{i},{d},{s},1.00" for i, (d, s) in enumerate(rows)]
    result = _judged(repeated)
    assert result[0]["Order_Date.format"] == 30  # type: ignore[index]  # 5 bad of 11, 6 times
    assert result[0]["Order_Status.allowed"] == 11  # type: ignore[index]  # 1 of 6, 11 times
    # The same judgements row by row (a chunk of one row has only distinct values); each
    # one-row chunk calls its row line 2, so rows are compared without their line.
    one_by_one = [_judged([line]) for line in repeated]
    assert [r[1][0][1:] for r in one_by_one if r[1]] == [v[1:] for v in sorted(result[1])]
    assert [r[2][0][1] for r in one_by_one if r[2]] == [reason for _, reason in result[2]]


def test_a_repeat_names_the_line_of_the_first_occurrence_whatever_the_order() -> None:
    ids = [f"ORD{i:05d}" for i in range(3000)]
    ids = ids[1500:] + ids[:1500]  # not ascending: the sorted path
    ids[2990] = ids[7]  # across chunks
    ids[20] = ids[10]  # within a chunk
    data = "".join(f"{i},C1,19/04/23,Pending,1\n" for i in ids).encode()
    chunks: list[ChunkResult] = []
    validate(HEADER.encode() + data, "o.csv", on_chunk=chunks.append, chunk_rows=1000)
    rejects = pl.concat([c.rejects for c in chunks]).select("line", "reasons").rows()
    assert rejects == [
        (22, "Order_Id.unique (first on line 12)"),
        (2992, "Order_Id.unique (first on line 9)"),
    ]


def test_chunks_prepared_ahead_arrive_in_order_and_errors_arrive_where_they_happened() -> None:
    from core.validation.engine import _Ahead

    def items() -> Iterator[int]:
        yield from range(5)
        raise ValueError("corrupt block after five items")

    got: list[int] = []

    def consume() -> None:
        with _Ahead(items(), lambda i: i * 10) as out:
            got.extend(out)

    with pytest.raises(ValueError, match="corrupt block"):
        consume()
    assert got == [0, 10, 20, 30, 40]


def test_leaving_early_stops_the_reading_thread_and_closes_the_source() -> None:
    import threading

    from core.validation.engine import _Ahead

    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    def consume() -> None:
        with _Ahead(endless(), str) as out:
            for item in out:
                if item == "3":
                    raise RuntimeError("judging failed")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="judging failed"):
        consume()
    assert closed.is_set()
    assert threading.active_count() == before


def test_ids_in_random_order_are_judged_in_larger_batches_with_the_same_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import random

    from core.validation import engine

    ids = [f"R{n:05d}" for n in range(3000)]
    random.Random(5).shuffle(ids)
    ids[2500] = ids[10]  # a repeat far from its first line
    lines = [f"{i},C1,1/1/23,Pending,1" for i in ids]
    _, whole = run_split(lines, 3000)
    monkeypatch.setattr(engine, "SCATTERED_BATCH_ROWS", 1000)
    outcome, batched = run_split(lines, 100)
    assert max(c.valid.height + c.rejects.height for c in batched) >= 1000  # batches grew
    assert len(batched) < 30
    assert pl.concat([c.valid for c in batched]).equals(whole[0].valid)
    assert pl.concat([c.rejects for c in batched]).equals(whole[0].rejects)
    assert whole[0].rejects["reasons"].to_list() == ["Order_Id.unique (first on line 12)"]
    assert (outcome.rows, outcome.invalid) == (3000, 1)  # type: ignore[attr-defined]


def test_growing_ids_stay_in_small_chunks() -> None:
    lines = [f"G{n:05d},C1,1/1/23,Pending,1" for n in range(3000)]
    lines[2500] = lines[10]
    _, chunks = run_split(lines, 100)
    assert len(chunks) == 30
