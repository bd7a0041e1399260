"""The orders writer: 25 per call, retries with backoff, never backwards, never a key twice."""

from __future__ import annotations

import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.pipeline.events import FileRef
from core.pipeline.orders_store import (
    BACKOFF_BASE_S,
    MAX_ATTEMPTS,
    OrdersWriter,
    WriteThrottled,
    order_items,
    request_texts,
    task_rows,
    unique_orders,
    write_all,
)
from tests.unit.ingest_fakes import FakeDynamo

NOW = "2026-05-01T12:00:00.000Z"


def _ref(
    version: str, time: str = "2026-05-01T11:00:00.000Z", key: str = "incoming/a.csv"
) -> FileRef:
    return FileRef("b", key, version, "e", 1, time)


def _frame(ids: list[str], total: str = "10.50", start_line: int = 1) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "line": pl.Series(range(start_line, start_line + len(ids)), dtype=pl.Int64),
            "Order_Id": ids,
            "Customer_Id": ["C1"] * len(ids),
            "Order_Date": ["2024-01-31"] * len(ids),
            "Order_Status": ["Pending"] * len(ids),
            "Order_Total": [total] * len(ids),
        }
    )


def _writer(
    ddb: FakeDynamo, sleeps: list[float] | None = None, threads: int = 2, encode: bool = False
) -> OrdersWriter:
    return OrdersWriter(
        ddb,
        "orders",
        threads=threads,
        sleep=(sleeps.append if sleeps is not None else lambda _: None),
        rand=lambda: 1.0,
        encode=encode,
    )


# The writer's two ways to build requests: a dict per item, or JSON text encoded by polars.
BOTH_ENCODINGS = pytest.mark.parametrize("encode", [False, True], ids=["dicts", "polars-json"])


def test_items_carry_exact_totals_and_their_source() -> None:
    (item,) = order_items(_frame(["O1"], total="1999.990"), _ref("v1"), NOW)
    assert item["Order_Total"] == {"N": "1999.990"}
    assert item["Order_Date"] == {"S": "2024-01-31"}
    assert item["source_line"] == {"N": "1"}
    assert item["source_file_id"] == {"S": "b/incoming/a.csv#v1"}
    assert item["source_version"] == {"S": "v1"}
    assert item["source_rank"]["S"].startswith("2026-05-01T11:00:00.000Z|")
    assert item["ingested_at"] == {"S": NOW}


@BOTH_ENCODINGS
def test_writes_go_25_per_call_and_reads_100_per_call(encode: bool) -> None:
    ddb = FakeDynamo()
    ids = [f"O{i:04d}" for i in range(260)]
    stats = write_all(_writer(ddb, encode=encode), [_frame(ids)], _ref("v1"), NOW)
    assert sorted(ddb.items) == ids
    assert stats.written == 260
    assert max(n for kind, n in ddb.calls if kind == "write") == 25
    # Slices run on writer threads, so their reads may arrive in any order.
    assert sorted(n for kind, n in ddb.calls if kind == "get") == [60, 100, 100]
    assert stats.batch_calls == 4 + 4 + 3  # slices of 100, 100 and 60 keys


@BOTH_ENCODINGS
def test_unprocessed_items_are_retried_with_growing_jittered_backoff(encode: bool) -> None:
    ddb = FakeDynamo(unprocessed=[20, 12, 4])
    sleeps: list[float] = []
    stats = write_all(
        _writer(ddb, sleeps, threads=1, encode=encode),
        [_frame([f"O{i}" for i in range(25)])],
        _ref("v1"),
        NOW,
    )
    assert len(ddb.items) == 25
    assert stats.retries == 3
    assert sleeps == [BACKOFF_BASE_S * 2, BACKOFF_BASE_S * 4, BACKOFF_BASE_S * 8]
    assert [n for kind, n in ddb.calls if kind == "write"] == [25, 20, 12, 4]


def test_items_left_unprocessed_after_every_attempt_fail_the_write() -> None:
    ddb = FakeDynamo(unprocessed=[1] * 100)
    with pytest.raises(WriteThrottled, match=f"1 items unprocessed after {MAX_ATTEMPTS} attempts"):
        write_all(_writer(ddb, threads=1), [_frame(["O1", "O2"])], _ref("v1"), NOW)


@BOTH_ENCODINGS
def test_a_newer_stored_order_is_never_overwritten(encode: bool) -> None:
    ddb = FakeDynamo()
    newer = _ref("v2", time="2026-05-01T11:30:00.000Z")
    write_all(_writer(ddb, encode=encode), [_frame(["O1", "O2"], total="20")], newer, NOW)
    stats = write_all(
        _writer(ddb, encode=encode),
        [_frame(["O1", "O3"], total="10")],
        _ref("v1"),
        NOW,
    )
    assert ddb.items["O1"]["Order_Total"] == {"N": "20"}
    assert ddb.items["O3"]["Order_Total"] == {"N": "10"}
    assert stats.superseded == 1
    assert stats.written == 1


@BOTH_ENCODINGS
def test_an_older_order_from_another_file_is_replaced_by_conditional_put(encode: bool) -> None:
    ddb = FakeDynamo()
    write_all(_writer(ddb, encode=encode), [_frame(["O1"], total="10")], _ref("v1"), NOW)
    stats = write_all(
        _writer(ddb, encode=encode),
        [_frame(["O1"], total="20")],
        _ref("v2", time="2026-05-01T11:30:00.000Z"),
        NOW,
    )
    assert ddb.items["O1"]["Order_Total"] == {"N": "20"}
    assert stats.conditional_puts == 1
    assert ddb.calls[-1] == ("put", 1)


@BOTH_ENCODINGS
def test_orders_taken_from_older_files_are_counted_per_older_file(encode: bool) -> None:
    ddb = FakeDynamo()
    v1, v2 = _ref("v1", key="incoming/orders_v1.csv"), _ref("v1", key="incoming/orders_v2.csv")
    write_all(_writer(ddb, encode=encode), [_frame(["O1", "O2", "O3"])], v1, NOW)
    write_all(_writer(ddb, encode=encode), [_frame(["O4"])], v2, NOW)
    newer = _ref("v1", time="2026-05-01T11:30:00.000Z", key="incoming/orders_v3.csv")
    stats = write_all(_writer(ddb, encode=encode), [_frame(["O1", "O2", "O4", "O5"])], newer, NOW)
    assert stats.taken == {v1.file_id: 2, v2.file_id: 1}
    assert stats.written == 4
    again = write_all(_writer(ddb, encode=encode), [_frame(["O1", "O2", "O4", "O5"])], newer, NOW)
    assert again.taken == {}  # its own orders now: a rerun takes nothing from anyone


@BOTH_ENCODINGS
def test_a_take_counts_against_the_file_actually_replaced(encode: bool) -> None:
    ddb = FakeDynamo()
    v1 = _ref("v1", key="incoming/orders_v1.csv")
    write_all(_writer(ddb, encode=encode), [_frame(["O1"])], v1, NOW)
    between = _ref("v1", time="2026-05-01T11:10:00.000Z", key="incoming/orders_b.csv")
    item = order_items(_frame(["O1"]), between, NOW)[0]
    ddb.before_put = lambda key: ddb.items.__setitem__(key, item)  # lands after our read
    newer = _ref("v1", time="2026-05-01T11:30:00.000Z", key="incoming/orders_v2.csv")
    stats = write_all(_writer(ddb, encode=encode), [_frame(["O1"])], newer, NOW)
    assert stats.taken == {between.file_id: 1}


@BOTH_ENCODINGS
def test_a_newer_write_landing_between_read_and_put_wins(encode: bool) -> None:
    ddb = FakeDynamo()
    write_all(_writer(ddb, encode=encode), [_frame(["O1"], total="10")], _ref("v1"), NOW)
    newest = order_items(
        _frame(["O1"], total="99"), _ref("v9", time="2026-05-01T23:00:00.000Z"), NOW
    )[0]
    ddb.before_put = lambda key: ddb.items.__setitem__(key, newest)
    stats = write_all(
        _writer(ddb, encode=encode),
        [_frame(["O1"], total="20")],
        _ref("v2", time="2026-05-01T11:30:00.000Z"),
        NOW,
    )
    assert ddb.items["O1"]["Order_Total"] == {"N": "99"}
    assert stats.superseded == 1


@BOTH_ENCODINGS
def test_rewriting_the_same_file_version_is_idempotent(encode: bool) -> None:
    ddb = FakeDynamo()
    ref = _ref("v1")
    write_all(_writer(ddb, encode=encode), [_frame([f"O{i}" for i in range(40)])], ref, NOW)
    before = {k: dict(v) for k, v in ddb.items.items()}
    stats = write_all(_writer(ddb, encode=encode), [_frame([f"O{i}" for i in range(40)])], ref, NOW)
    assert ddb.items == before
    assert stats.conditional_puts == 0  # its own orders go back through BatchWriteItem


@BOTH_ENCODINGS
def test_a_key_twice_in_a_file_is_written_once_last_line_wins(encode: bool) -> None:
    ddb = FakeDynamo()
    frame = pl.concat([_frame(["O1", "O2"], total="1"), _frame(["O1"], total="2", start_line=3)])
    write_all(_writer(ddb, encode=encode), [frame], _ref("v1"), NOW)
    assert ddb.items["O1"]["Order_Total"] == {"N": "2"}
    assert ddb.items["O1"]["source_line"] == {"N": "3"}
    assert all(len(set(keys)) == len(keys) for keys in ddb.keys_per_call)


def test_chunks_are_written_in_order() -> None:
    ddb = FakeDynamo()
    chunks = [
        _frame([f"O{i}" for i in range(300)], total="1"),
        _frame(["O7"], total="2", start_line=301),
    ]
    write_all(_writer(ddb, threads=8), chunks, _ref("v1"), NOW)
    assert ddb.items["O7"]["Order_Total"] == {"N": "2"}
    assert len(ddb.items) == 300


def test_a_failing_slice_fails_the_whole_write() -> None:
    class Broken(FakeDynamo):
        def batch_write_item(self, RequestItems):  # type: ignore[no-untyped-def]
            raise RuntimeError("connection reset")

    with pytest.raises(RuntimeError, match="connection reset"):
        write_all(
            _writer(Broken(), threads=4), [_frame([f"O{i}" for i in range(500)])], _ref("v1"), NOW
        )


def test_same_event_time_the_sequencer_decides_whatever_the_arrival_order() -> None:
    at = "2026-05-01T11:00:00.000Z"
    first = FileRef("b", "incoming/a.csv", "vA", "e1", 1, at, sequencer="0A")
    second = FileRef("b", "incoming/a.csv", "vB", "e2", 1, at, sequencer="00FF")
    for order in ([first, second], [second, first]):
        ddb = FakeDynamo()
        for ref, total in sorted(
            zip([first, second], ["1", "2"], strict=True), key=lambda p: order.index(p[0])
        ):
            write_all(_writer(ddb), [_frame(["O1"], total=total)], ref, NOW)
        assert ddb.items["O1"]["source_version"] == {"S": "vB"}  # 0xFF > 0x0A
        assert ddb.items["O1"]["Order_Total"] == {"N": "2"}


def test_no_sequencer_no_version_the_etag_then_file_id_decide() -> None:
    at = "2026-05-01T11:00:00.000Z"
    low = FileRef("b", "incoming/a.csv", "", "aaa", 1, at)
    high = FileRef("b", "incoming/a.csv", "", "bbb", 1, at)
    ddb = FakeDynamo()
    write_all(_writer(ddb), [_frame(["O1"], total="2")], high, NOW)
    write_all(_writer(ddb), [_frame(["O1"], total="1")], low, NOW)
    assert ddb.items["O1"]["Order_Total"] == {"N": "2"}


def test_a_key_repeated_across_slices_of_a_chunk_is_written_once_last_line_wins() -> None:
    ddb = FakeDynamo()
    ids = [f"O{i:03d}" for i in range(150)] + ["O007"]  # line 151 repeats line 8, a slice away
    frame = _frame(ids, total="1").with_columns(
        Order_Total=pl.when(pl.col("line") == 151)
        .then(pl.lit("2"))
        .otherwise(pl.col("Order_Total"))
    )
    stats = write_all(_writer(ddb, threads=4), [frame], _ref("v1"), NOW)
    assert ddb.items["O007"]["Order_Total"] == {"N": "2"}
    assert ddb.items["O007"]["source_line"] == {"N": "151"}
    assert sum(keys.count("O007") for keys in ddb.keys_per_call) == 1  # one write, no race
    assert stats.written == 150


def test_unique_orders_keeps_a_unique_frame_as_it_is() -> None:
    frame = _frame(["O1", "O2"])
    assert unique_orders(frame) is frame
    repeated = _frame(["O1", "O2", "O1"])
    assert unique_orders(repeated).get_column("line").to_list() == [2, 3]


@given(
    st.lists(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=12), min_size=1, max_size=8
    ),
    st.text(st.characters(codec="utf-8"), max_size=20),
)
@settings(max_examples=60, deadline=None)
def test_rows_encoded_by_polars_are_the_items_order_items_builds(
    values: list[str], key: str
) -> None:
    ids = [f"O{i}{v}" for i, v in enumerate(values)]
    frame = _frame(ids).with_columns(pl.Series("Customer_Id", values))
    ref = _ref("v1", key=f"incoming/{key}")
    texts = request_texts(frame, ref, NOW)
    assert texts is not None
    decoded = [json.loads(text) for text in texts]
    assert decoded == [{"PutRequest": {"Item": item}} for item in order_items(frame, ref, NOW)]


def test_a_missing_value_leaves_encoding_to_order_items_which_omits_it() -> None:
    frame = _frame(["O1", "O2"]).with_columns(pl.Series("Customer_Id", ["C1", None]))
    assert request_texts(frame, _ref("v1"), NOW) is None
    ddb = FakeDynamo()
    write_all(_writer(ddb, encode=True), [frame], _ref("v1"), NOW)
    assert "Customer_Id" not in ddb.items["O2"]
    assert ddb.items["O1"]["Customer_Id"] == {"S": "C1"}


@pytest.mark.parametrize(
    ("rows", "threads", "expected"),
    [(50, 16, 100), (6_399, 16, 100), (12_800, 16, 200), (256_000, 16, 800), (3_300, 1, 800)],
)
def test_writer_tasks_are_whole_slices_spread_over_the_threads(
    rows: int, threads: int, expected: int
) -> None:
    assert task_rows(rows, threads) == expected


@BOTH_ENCODINGS
def test_a_task_of_many_slices_reads_and_writes_each_slice_once(encode: bool) -> None:
    ddb = FakeDynamo()
    ids = [f"O{i:05d}" for i in range(3_300)]  # one thread: tasks of 800 rows, 8 slices each
    stats = write_all(_writer(ddb, threads=1, encode=encode), [_frame(ids)], _ref("v1"), NOW)
    assert sorted(ddb.items) == ids
    assert stats.written == 3_300
    assert [n for kind, n in ddb.calls if kind == "get"] == [100] * 33
    assert stats.batch_calls == 33 * 4
    assert ddb.items["O03299"]["source_line"] == {"N": "3300"}
