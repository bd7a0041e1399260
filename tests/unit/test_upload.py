"""Uploading: keys under incoming/, multipart splitting, and reading outcomes from the ledger."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from core.ops.upload import (
    FileResult,
    Uploaded,
    Uploader,
    UploadError,
    is_final,
    key_for,
    plan,
    wait_for_outcomes,
)
from core.pipeline.ledger import LedgerEntry, Status


class FakeS3:
    """Just enough of S3 for the uploader: put, multipart, abort; fails a part on request."""

    def __init__(self, fail_part: int | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.parts: dict[int, bytes] = {}
        self.aborted: list[str] = []
        self.fail_part = fail_part
        self._lock = threading.Lock()

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> dict[str, Any]:
        self.objects[Key] = Body
        return {"VersionId": "v1", "ETag": '"abc"'}

    def create_multipart_upload(self, Bucket: str, Key: str) -> dict[str, Any]:
        return {"UploadId": "u1"}

    def upload_part(self, Bucket: str, Key: str, UploadId: str, PartNumber: int, Body: bytes):
        if PartNumber == self.fail_part:
            raise ConnectionError("network down")
        with self._lock:
            self.parts[PartNumber] = Body
        return {"ETag": f'"p{PartNumber}"'}

    def complete_multipart_upload(
        self, Bucket: str, Key: str, UploadId: str, MultipartUpload: dict[str, Any]
    ) -> dict[str, Any]:
        numbers = [p["PartNumber"] for p in MultipartUpload["Parts"]]
        assert numbers == sorted(numbers)
        self.objects[Key] = b"".join(self.parts[n] for n in numbers)
        return {"VersionId": "v2", "ETag": '"multi-3"'}

    def abort_multipart_upload(self, Bucket: str, Key: str, UploadId: str) -> None:
        self.aborted.append(UploadId)


def test_keys_go_under_incoming_with_an_optional_sub_folder() -> None:
    assert key_for(Path("/x/orders.csv")) == "incoming/orders.csv"
    assert key_for(Path("orders.csv"), "/eu/2024/") == "incoming/eu/2024/orders.csv"


def test_a_directory_stands_for_its_visible_files(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("x")
    (tmp_path / "a.csv").write_text("x")
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "sub").mkdir()
    assert [k for _, k in plan([tmp_path])] == ["incoming/a.csv", "incoming/b.csv"]


def test_two_files_on_one_key_are_refused(tmp_path: Path) -> None:
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "orders.csv").write_text("x")
    with pytest.raises(UploadError, match=r"would both be uploaded as incoming/orders\.csv"):
        plan([tmp_path / "one" / "orders.csv", tmp_path / "two" / "orders.csv"])


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UploadError, match="no files to upload"):
        plan([tmp_path])


def test_a_small_file_is_one_put_and_names_its_ledger_items(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_bytes(b"abc")
    s3 = FakeS3()
    sent: list[int] = []
    uploaded = Uploader(s3, "bkt").put(path, "incoming/o.csv", sent.append)
    assert s3.objects["incoming/o.csv"] == b"abc"
    assert sent == [3]
    assert (uploaded.version, uploaded.etag, uploaded.size) == ("v1", "abc", 3)
    assert uploaded.file_ids == ("bkt/incoming/o.csv#v1", "bkt/incoming/o.csv#etag:abc")


def test_a_large_file_goes_up_in_parts_that_reassemble_exactly(tmp_path: Path) -> None:
    data = bytes(range(256)) * 41  # 10,496 bytes: three parts of 4,096 (the last shorter)
    path = tmp_path / "big.csv"
    path.write_bytes(data)
    s3 = FakeS3()
    sent: list[int] = []
    uploader = Uploader(s3, "bkt", multipart_threshold=5000, part_size=4096, threads=3)
    uploaded = uploader.put(path, "incoming/big.csv", sent.append)
    assert s3.objects["incoming/big.csv"] == data
    assert sorted(s3.parts) == [1, 2, 3]
    assert sum(sent) == len(data)
    assert (uploaded.version, uploaded.etag) == ("v2", "multi-3")


def test_a_failed_part_aborts_the_multipart_upload(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"x" * 10_000)
    s3 = FakeS3(fail_part=2)
    uploader = Uploader(s3, "bkt", multipart_threshold=5000, part_size=4096)
    with pytest.raises(ConnectionError):
        uploader.put(path, "incoming/big.csv")
    assert s3.aborted == ["u1"]
    assert "incoming/big.csv" not in s3.objects


def test_an_unreadable_file_is_an_upload_error(tmp_path: Path) -> None:
    with pytest.raises(UploadError, match="cannot read"):
        Uploader(FakeS3(), "bkt").put(tmp_path / "gone.csv", "incoming/gone.csv")


def _entry(status: Status, **kw: Any) -> LedgerEntry:
    base: dict[str, Any] = {
        "file_id": "bkt/incoming/o.csv#etag:abc",
        "bucket": "bkt",
        "object_key": "incoming/o.csv",
        "version": "",
        "etag": "abc",
        "status": status,
    }
    return LedgerEntry(**(base | kw))


@pytest.mark.parametrize(
    ("status", "attempts", "final"),
    [
        (Status.PROCESSING, 1, False),
        (Status.SUCCEEDED, 1, True),
        (Status.PARTIAL, 1, True),
        (Status.REJECTED, 1, True),
        (Status.FAILED, 2, False),  # SQS will deliver it again
        (Status.FAILED, 5, True),  # its message is in the DLQ now
    ],
)
def test_which_ledger_states_are_final(status: Status, attempts: int, final: bool) -> None:
    assert is_final(_entry(status, attempts=attempts)) is final


UPLOAD = Uploaded(Path("o.csv"), "bkt", "incoming/o.csv", "", "abc", 3, sent_at=0.0)


def test_the_json_line_carries_validate_counts_and_codes() -> None:
    entry = _entry(Status.PARTIAL, rows=3, valid=1, invalid=2, reasons={"Order_Id.required": 2})
    line = FileResult(UPLOAD, entry, 0.5).to_json_dict()
    assert {k: line[k] for k in ("key", "status", "rows", "valid", "invalid", "reasons")} == {
        "key": "incoming/o.csv",
        "status": "PARTIAL",
        "rows": 3,
        "valid": 1,
        "invalid": 2,
        "reasons": {"Order_Id.required": 2},
    }
    assert line["error"] is None


def test_a_pending_file_has_no_counts_and_is_not_clean() -> None:
    result = FileResult(UPLOAD, None, None)
    assert result.status == "PENDING"
    assert not result.clean
    assert result.to_json_dict()["rows"] is None


def test_a_dead_lettered_file_reports_its_infrastructure_error() -> None:
    entry = _entry(Status.FAILED, attempts=5, last_error="AccessDenied: no")
    assert FileResult(UPLOAD, entry, 1.0).to_json_dict()["error"] == "AccessDenied: no"


class FakeLedger:
    def __init__(self, answers: dict[str, list[LedgerEntry | None]]) -> None:
        self.answers = answers
        self.reads: list[str] = []

    def get(self, file_id: str) -> LedgerEntry | None:
        self.reads.append(file_id)
        queue = self.answers.get(file_id, [None])
        return queue.pop(0) if len(queue) > 1 else queue[0]


def test_waiting_reads_until_the_outcome_is_final() -> None:
    done = _entry(Status.SUCCEEDED, rows=1, valid=1)
    ledger = FakeLedger({"bkt/incoming/o.csv#etag:abc": [None, _entry(Status.PROCESSING), done]})
    heard: list[str] = []
    results = wait_for_outcomes(
        ledger,  # type: ignore[arg-type]
        [UPLOAD],
        5,
        poll_s=0,
        on_result=lambda r: heard.append(r.status),
    )
    assert results[0].entry == done
    assert results[0].clean
    assert heard == ["SUCCEEDED"]


def test_waiting_gives_up_at_the_deadline_with_the_last_state() -> None:
    ledger = FakeLedger({"bkt/incoming/o.csv#etag:abc": [_entry(Status.PROCESSING)]})
    results = wait_for_outcomes(ledger, [UPLOAD], 0.05, poll_s=0.01)  # type: ignore[arg-type]
    assert results[0].status == "PROCESSING"
    assert results[0].seconds is None


NOT_ORDERS = (
    "this does not look like an order file: expected Order_Id, Customer_Id, Order_Date, "
    "Order_Status, Order_Total; found name, email, city"
)


def _outcomes() -> list[FileResult]:
    def result(key: str, entry: LedgerEntry) -> FileResult:
        return FileResult(Uploaded(Path(key), "bkt", key, "", "abc", 3, sent_at=0.0), entry, 1.5)

    bad_rows = _entry(Status.PARTIAL, rows=7, valid=2, invalid=5,
                      reasons={"Order_Id.required": 3, "Order_Date.format": 2})  # fmt: skip
    none_valid = _entry(Status.REJECTED, rows=3, valid=0, invalid=3,
                        reasons={"Order_Id.required": 3})  # fmt: skip
    return [
        result("incoming/demo/orders_bad_rows.csv", bad_rows),
        result("incoming/demo/customers.csv", _entry(Status.REJECTED, error=NOT_ORDERS)),
        result("incoming/demo/none_valid.csv", none_valid),
    ]


def _as_terminal(monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    import core.cli.tables as tables
    import core.cli.upload as upload_cli

    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(tables, "stdout_is_terminal", lambda: True)
    monkeypatch.setattr(upload_cli, "stdout_is_terminal", lambda: True)


def test_outcomes_at_80_columns_drop_incoming_and_say_where_the_rest_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.cli.upload import emit_outcomes

    _as_terminal(monkeypatch, 80)
    emit_outcomes(_outcomes())
    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == "Outcomes (keys under incoming/)"
    assert all(len(line) <= 80 for line in lines), lines
    assert len(lines) == 6  # title, header, three rows on one line each, the hint
    body = "\n".join(lines[2:5])
    assert "incoming/" not in body
    assert "demo/orders_bad_rows.csv" in body  # the key whole once its prefix is gone
    customers = next(line for line in lines if "demo/customers.csv" in line)
    assert "this does not look like a" in customers  # the reason starts, readable
    assert customers.endswith("…")  # cut, and the next line says where to read it whole
    none_valid = next(line for line in lines if "none_valid.csv" in line)
    assert "rejected" in none_valid
    assert " 3 " in none_valid  # its rows count: it was judged row by row
    assert lines[-1] == "One file in full: orderpipe status KEY"


def test_outcomes_in_a_pipe_are_full_tab_separated_rows_without_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.cli.tables import reasons_text
    from core.cli.upload import emit_outcomes

    monkeypatch.setenv("COLUMNS", "80")
    emit_outcomes(_outcomes())
    assert capsys.readouterr().out.splitlines() == [
        "incoming/demo/orders_bad_rows.csv\tPARTIAL\t7\t5\t"
        f"{reasons_text({'Order_Id.required': 3, 'Order_Date.format': 2})}\t1.5",
        f"incoming/demo/customers.csv\tREJECTED\t0\t0\t{NOT_ORDERS}\t1.5",
        "incoming/demo/none_valid.csv\tREJECTED\t3\t3\tOrder_Id.required ×3\t1.5",
    ]
