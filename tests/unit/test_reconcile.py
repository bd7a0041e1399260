"""Reconcile's decisions, on in-memory fakes of the bucket, ledger, orders, queue and topic."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.ops.event_messages import objects_in_body
from core.ops.ops_adapters import LedgerRecord, StoredObject
from core.ops.reconcile import ReconcileOptions, Reconciler, report_key

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BUCKET = "orders-bucket"


@dataclass
class FakeObjects:
    objects: list[StoredObject] = field(default_factory=list)
    puts: dict[str, dict[str, Any]] = field(default_factory=dict)
    bucket: str = BUCKET

    def current(self, prefix: str) -> Iterable[StoredObject]:
        return [o for o in self.objects if o.key.startswith(prefix)]

    def put_json(self, key: str, body: dict[str, Any]) -> None:
        self.puts[key] = body


@dataclass
class FakeLedger:
    records: dict[str, LedgerRecord] = field(default_factory=dict)

    def add(self, **item: Any) -> LedgerRecord:
        item.setdefault("bucket", BUCKET)
        item.setdefault("file_id", f"{BUCKET}/{item['object_key']}#{item['version']}")
        record = LedgerRecord.from_plain(item)
        self.records[record.file_id] = record
        return record

    def get_many(self, file_ids: Iterable[str]) -> dict[str, LedgerRecord]:
        return {f: self.records[f] for f in file_ids if f in self.records}

    def by_status(self, status: str, since: str | None = None) -> Iterable[LedgerRecord]:
        return [r for r in self.records.values() if r.status == status]


@dataclass
class FakeOrders:
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, file_id: str) -> int:
        return self.counts.get(file_id, 0)


@dataclass
class FakeQueue:
    sent: list[str] = field(default_factory=list)
    fail: bool = False

    def send(self, bodies: list[tuple[str, dict[str, str]]]) -> list[str]:
        if self.fail:
            return [str(i) for i in range(len(bodies))]
        self.sent.extend(b for b, _ in bodies)
        return []


@dataclass
class FakeAlerts:
    published: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, subject: str, text: str, document: dict[str, Any]) -> None:
        self.published.append((subject, text, document))


@dataclass
class FakeMetrics:
    puts: list[dict[str, int]] = field(default_factory=list)

    def put(self, counts: dict[str, int]) -> None:
        self.puts.append(counts)


@dataclass
class World:
    objects: FakeObjects = field(default_factory=FakeObjects)
    ledger: FakeLedger = field(default_factory=FakeLedger)
    orders: FakeOrders = field(default_factory=FakeOrders)
    queue: FakeQueue = field(default_factory=FakeQueue)
    alerts: FakeAlerts = field(default_factory=FakeAlerts)
    metrics: FakeMetrics = field(default_factory=FakeMetrics)

    def reconciler(self) -> Reconciler:
        return Reconciler(
            self.objects,
            self.ledger,
            self.orders,
            self.queue,
            alerts=self.alerts,
            metrics=self.metrics,
        )

    def upload(self, key: str, age: timedelta, etag: str = "e1", version: str | None = "v1"):
        obj = StoredObject(key, version, etag, 10, NOW - age)
        self.objects.objects.append(obj)
        return obj


def finished(world: World, key: str, status: str, valid: int, version: str = "v1"):
    return world.ledger.add(
        object_key=key,
        version=version,
        etag="e1",
        size=10,
        event_time="2026-11-25T11:00:00.000Z",
        status=status,
        valid=valid,
    )


def test_object_without_ledger_entry_past_grace_is_requeued_in_s3_event_shape() -> None:
    w = World()
    w.upload("incoming/lost file.csv", timedelta(minutes=30))
    report = w.reconciler().run(ReconcileOptions(), now=NOW)
    assert report.counts["missing"] == 1
    assert report.requeued == 1
    (body,) = w.queue.sent
    doc = json.loads(body)
    record = doc["Records"][0]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["object"]["key"] == "incoming/lost+file.csv"
    assert record["s3"]["object"]["versionId"] == "v1"
    (obj,) = objects_in_body(body)
    assert obj.key == "incoming/lost file.csv"
    assert obj.event_time == "2026-11-25T11:30:00.000Z"  # the object's upload time


def test_object_within_grace_is_left_for_its_event() -> None:
    w = World()
    w.upload("incoming/new.csv", timedelta(minutes=2))
    report = w.reconciler().run(ReconcileOptions(grace_s=300), now=NOW)
    assert report.counts["missing"] == 0
    assert report.in_grace == 1
    assert w.queue.sent == []


def test_object_outside_the_window_is_not_checked() -> None:
    w = World()
    w.upload("incoming/old.csv", timedelta(hours=3))
    report = w.reconciler().run(ReconcileOptions(window_s=7200), now=NOW)
    assert report.objects_checked == 0
    assert w.queue.sent == []


def test_objects_outside_incoming_are_ignored() -> None:
    w = World()
    w.upload("rejects/x.csv", timedelta(minutes=30))
    report = w.reconciler().run(ReconcileOptions(), now=NOW)
    assert report.objects_checked == 0


def test_entry_found_by_etag_when_the_event_had_no_version_id() -> None:
    w = World()
    w.upload("incoming/a.csv", timedelta(minutes=30), etag="abc")
    finished(w, "incoming/a.csv", "SUCCEEDED", 3, version="etag:abc")
    w.orders.counts[f"{BUCKET}/incoming/a.csv#etag:abc"] = 3
    report = w.reconciler().run(ReconcileOptions(), now=NOW)
    assert report.counts == {"missing": 0, "stuck": 0, "drift": 0, "failed": 0}
    assert not w.alerts.published  # nothing found: no alert


def test_drift_reports_valid_and_stored_counts() -> None:
    w = World()
    w.upload("incoming/a.csv", timedelta(minutes=30))
    entry = finished(w, "incoming/a.csv", "PARTIAL", 7)
    w.orders.counts[entry.file_id] = 5
    report = w.reconciler().run(ReconcileOptions(), now=NOW)
    assert report.counts["drift"] == 1
    (finding,) = report.to_json()["drift"]
    assert finding["valid"] == 7
    assert finding["stored"] == 5
    assert w.queue.sent == []  # drift is reported, not re-enqueued


def test_orders_a_newer_upload_already_held_are_not_drift() -> None:
    w = World()
    w.upload("incoming/a.csv", timedelta(minutes=30))
    entry = w.ledger.add(
        object_key="incoming/a.csv",
        version="v1",
        etag="e1",
        size=10,
        event_time="2026-11-25T11:00:00.000Z",
        status="SUCCEEDED",
        valid=7,
        written=5,  # two of its seven orders were already held by a newer upload
    )
    w.orders.counts[entry.file_id] = 5
    assert w.reconciler().run(ReconcileOptions(), now=NOW).counts["drift"] == 0
    w.orders.counts[entry.file_id] = 4
    report = w.reconciler().run(ReconcileOptions(), now=NOW)
    assert report.counts["drift"] == 1
    (finding,) = report.to_json()["drift"]
    assert (finding["written"], finding["stored"]) == (5, 4)


def test_orders_newer_uploads_took_over_later_are_not_drift() -> None:
    w = World()
    w.upload("incoming/orders_v1.csv", timedelta(minutes=30))
    entry = w.ledger.add(
        object_key="incoming/orders_v1.csv",
        version="v1",
        etag="e1",
        size=10,
        event_time="2026-11-25T11:00:00.000Z",
        status="SUCCEEDED",
        valid=6,
        written=6,
        # Two later uploads took four of its six orders over (ingest records them per taker).
        taken={"bucket/incoming/orders_v2.csv#v1": 3, "bucket/incoming/orders_v3.csv#v1": 1},
    )
    w.orders.counts[entry.file_id] = 2
    assert w.reconciler().run(ReconcileOptions(), now=NOW).counts["drift"] == 0
    w.orders.counts[entry.file_id] = 1  # one more gone that no newer upload took: a loss
    report = w.reconciler().run(ReconcileOptions(), now=NOW)
    assert report.counts["drift"] == 1
    (finding,) = report.to_json()["drift"]
    assert (finding["written"], finding["taken"], finding["expected"], finding["stored"]) == (
        6,
        4,
        2,
        1,
    )


def test_rejected_file_has_no_orders_and_no_drift() -> None:
    w = World()
    w.upload("incoming/a.csv", timedelta(minutes=30))
    finished(w, "incoming/a.csv", "REJECTED", 0)
    report = w.reconciler().run(ReconcileOptions(), now=NOW)
    assert report.counts["drift"] == 0


def test_processing_past_its_lease_is_requeued_and_live_lease_is_not() -> None:
    w = World()
    for key, lease in (("incoming/stuck.csv", -60), ("incoming/busy.csv", 60)):
        w.ledger.add(
            object_key=key,
            version="v1",
            etag="e1",
            size=1,
            event_time="2026-11-25T08:00:00.000Z",
            status="PROCESSING",
            started_at="2026-11-25T08:00:00.000Z",
            lease_until=int(NOW.timestamp()) + lease,
            attempts=1,
        )
    report = w.reconciler().run(ReconcileOptions(), now=NOW)
    assert [f.key for f in report.findings["stuck"]] == ["incoming/stuck.csv"]
    (body,) = w.queue.sent
    (obj,) = objects_in_body(body)
    assert obj.key == "incoming/stuck.csv"
    assert obj.event_time == "2026-11-25T08:00:00.000Z"  # the original event time: no reordering


def test_failed_files_are_listed_with_their_error_not_requeued() -> None:
    w = World()
    w.ledger.add(
        object_key="incoming/f.csv",
        version="v1",
        etag="e1",
        status="FAILED",
        last_error="AccessDenied",
        attempts=5,
    )
    report = w.reconciler().run(ReconcileOptions(), now=NOW)
    assert report.counts["failed"] == 1
    assert report.to_json()["failed"][0]["last_error"] == "AccessDenied"
    assert w.queue.sent == []


def test_findings_write_report_put_metrics_and_alert() -> None:
    w = World()
    w.upload("incoming/lost.csv", timedelta(minutes=30))
    report = w.reconciler().run(ReconcileOptions(), now=NOW)
    assert report.report_key == report_key(NOW, report.run_id)
    assert report.report_key.startswith("reports/reconcile/2026/11/25/120000Z-")
    stored = w.objects.puts[report.report_key]
    assert stored["counts"]["missing"] == 1
    assert stored["missing"][0]["key"] == "incoming/lost.csv"
    assert w.metrics.puts[0]["ReconcileMissing"] == 1
    assert w.metrics.puts[0]["ReconcileRequeued"] == 1
    ((subject, text, doc),) = w.alerts.published
    assert "1 missing" in subject
    assert "incoming/lost.csv" in text
    assert doc["report_key"] == report.report_key


def test_nothing_found_still_writes_report_and_metrics_but_no_alert() -> None:
    w = World()
    report = w.reconciler().run(ReconcileOptions(), now=NOW)
    assert report.report_key in w.objects.puts
    assert w.metrics.puts
    assert w.alerts.published == []


def test_dry_run_changes_nothing() -> None:
    w = World()
    w.upload("incoming/lost.csv", timedelta(minutes=30))
    w.ledger.add(
        object_key="incoming/stuck.csv",
        version="v1",
        etag="e1",
        status="PROCESSING",
        lease_until=int(NOW.timestamp()) - 1,
    )
    report = w.reconciler().run(ReconcileOptions(dry_run=True), now=NOW)
    assert report.counts["missing"] == 1
    assert report.counts["stuck"] == 1
    assert report.requeued == 0
    assert w.queue.sent == []
    assert w.objects.puts == {}
    assert w.metrics.puts == []
    assert w.alerts.published == []
    assert report.to_json()["missing"][0]["action"] == "none (dry run)"


def test_a_failed_send_fails_the_run() -> None:
    w = World()
    w.queue.fail = True
    w.upload("incoming/lost.csv", timedelta(minutes=30))
    with pytest.raises(RuntimeError, match="could not re-enqueue 1 of 1"):
        w.reconciler().run(ReconcileOptions(), now=NOW)


def test_many_objects_are_checked_in_batches_and_lists_are_capped() -> None:
    w = World()
    for n in range(620):
        w.upload(f"incoming/f{n:04d}.csv", timedelta(minutes=30), etag=f"e{n}")
    report = w.reconciler().run(ReconcileOptions(), now=NOW)
    assert report.objects_checked == 620
    assert report.counts["missing"] == 620
    assert len(report.to_json()["missing"]) == 500
    assert report.to_json()["truncated"]["missing"] is True
    assert report.requeued == 620
