"""The hourly reconcile: find files the pipeline missed, stuck or miscounted, and say so.

S3 events are not guaranteed. Once an hour (the Glue job, or ``orderpipe local``'s schedule)
this compares what sits under incoming/ with the ledger:

- an object changed within the window with no ledger entry, older than the grace period: its
  event never arrived → re-enqueued in the shape S3 sends;
- a PROCESSING entry whose lease ran out (the function timeout passed): stuck → re-enqueued;
  ingest's claim takes an expired lease over;
- a SUCCEEDED or PARTIAL current version whose orders written, less those newer uploads took
  over since (``taken``), differ from the orders stored from it (orders table
  ``source-index``): drift → reported;
- FAILED entries → listed.

It writes a JSON report under reports/, puts metrics, and publishes a summary to the alerts
topic when it found anything. ``dry_run`` changes nothing: it only builds the report.

Python 3.9-compatible and never imports polars: the Glue Python shell job runs this module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from core.aws.settings import INCOMING_PREFIX, REPORTS_PREFIX
from core.ops.event_messages import UTC, ObjectVersion, iso_now, s3_event_body
from core.ops.ops_adapters import LedgerRecord, StoredObject

REPORT_TYPE = "orderpipe.reconcile_report"
SUMMARY_TYPE = "orderpipe.reconcile_summary"
DEFAULT_WINDOW_S = 2 * 3600
DEFAULT_GRACE_S = 5 * 60
LIST_LIMIT = 500  # entries kept per list in the report; counts stay exact
LOOKUP_BATCH = 50  # objects per ledger lookup (two candidate ids each: 100 keys)
SOURCE = "orderpipe-reconcile"


class Objects(Protocol):
    bucket: str

    def current(self, prefix: str) -> Iterable[StoredObject]: ...
    def put_json(self, key: str, body: dict[str, Any]) -> None: ...


class Ledger(Protocol):
    def get_many(self, file_ids: Iterable[str]) -> dict[str, LedgerRecord]: ...
    def by_status(self, status: str, since: str | None = None) -> Iterable[LedgerRecord]: ...


class Orders(Protocol):
    def count(self, file_id: str) -> int: ...


class Queue(Protocol):
    def send(self, bodies: list[tuple[str, dict[str, str]]]) -> list[str]: ...


class Alerts(Protocol):
    def publish(self, subject: str, text: str, document: dict[str, Any]) -> None: ...


class Metrics(Protocol):
    def put(self, counts: dict[str, int]) -> None: ...


@dataclass(frozen=True)
class ReconcileOptions:
    window_s: int = DEFAULT_WINDOW_S
    grace_s: int = DEFAULT_GRACE_S
    function_timeout_s: int = 300
    dry_run: bool = False
    prefix: str = INCOMING_PREFIX
    count_threads: int = 8  # order-count queries in flight at once


@dataclass
class Finding:
    """One line of the report; ``detail`` holds what a person needs to act on it."""

    kind: str  # missing | stuck | drift | failed
    key: str
    file_id: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "file_id": self.file_id, **self.detail}


@dataclass
class ReconcileReport:
    bucket: str
    started_at: str
    since: str
    until: str
    options: ReconcileOptions
    objects_checked: int = 0
    in_grace: int = 0
    requeued: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: {"missing": 0, "stuck": 0, "drift": 0, "failed": 0}
    )
    findings: dict[str, list[Finding]] = field(
        default_factory=lambda: {"missing": [], "stuck": [], "drift": [], "failed": []}
    )
    finished_at: str = ""
    report_key: str = ""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def add(self, finding: Finding) -> None:
        self.counts[finding.kind] += 1
        kept = self.findings[finding.kind]
        if len(kept) < LIST_LIMIT:
            kept.append(finding)

    @property
    def found_anything(self) -> bool:
        return any(self.counts.values())

    def summary_line(self) -> str:
        c = self.counts
        return (
            f"{c['missing']} missing, {c['stuck']} stuck, {c['drift']} drifted, "
            f"{c['failed']} failed of {self.objects_checked} object(s) checked"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "type": REPORT_TYPE,
            "run_id": self.run_id,
            "bucket": self.bucket,
            "dry_run": self.options.dry_run,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "window": {"since": self.since, "until": self.until, "seconds": self.options.window_s},
            "grace_s": self.options.grace_s,
            "function_timeout_s": self.options.function_timeout_s,
            "objects_checked": self.objects_checked,
            "in_grace": self.in_grace,
            "requeued": self.requeued,
            "counts": dict(self.counts),
            "truncated": {k: self.counts[k] > len(v) for k, v in self.findings.items()},
            "missing": [f.to_json() for f in self.findings["missing"]],
            "stuck": [f.to_json() for f in self.findings["stuck"]],
            "drift": [f.to_json() for f in self.findings["drift"]],
            "failed": [f.to_json() for f in self.findings["failed"]],
            "report_key": self.report_key,
        }


def report_key(started: datetime, run_id: str) -> str:
    return started.strftime(f"{REPORTS_PREFIX}reconcile/%Y/%m/%d/%H%M%SZ-{run_id}.json")


def _chunks(items: Iterable[StoredObject], size: int) -> Iterator[list[StoredObject]]:
    batch: list[StoredObject] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Reconciler:
    """Compares the bucket with the ledger; the adapters are injected (fakes in unit tests)."""

    def __init__(
        self,
        objects: Objects,
        ledger: Ledger,
        orders: Orders,
        queue: Queue,
        *,
        alerts: Alerts | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._objects = objects
        self._ledger = ledger
        self._orders = orders
        self._queue = queue
        self._alerts = alerts
        self._metrics = metrics

    def run(self, options: ReconcileOptions, now: datetime | None = None) -> ReconcileReport:
        started = (now or datetime.now(UTC)).astimezone(UTC)
        since = started - timedelta(seconds=options.window_s)
        report = ReconcileReport(
            bucket=self._objects.bucket,
            started_at=iso_now(started),
            since=iso_now(since),
            until=iso_now(started),
            options=options,
        )
        to_send: list[ObjectVersion] = []
        recent = (
            o for o in self._objects.current(options.prefix) if since <= o.last_modified <= started
        )
        for batch in _chunks(recent, LOOKUP_BATCH):
            to_send.extend(self._check_objects(batch, report, started, options))
        to_send.extend(self._check_stuck(report, started, options))
        self._list_failed(report)
        if not options.dry_run:
            report.requeued = self._requeue(to_send)
        report.finished_at = iso_now(datetime.now(UTC) if now is None else started)
        if not options.dry_run:
            self._publish(report, started)
        return report

    def _check_objects(
        self,
        batch: list[StoredObject],
        report: ReconcileReport,
        started: datetime,
        options: ReconcileOptions,
    ) -> list[ObjectVersion]:
        bucket = self._objects.bucket
        ids = {o.key: [f"{bucket}/{o.key}#{v}" for v in o.candidate_versions()] for o in batch}
        entries = self._ledger.get_many(i for group in ids.values() for i in group)
        missing: list[ObjectVersion] = []
        finished: list[tuple[StoredObject, LedgerRecord]] = []
        for obj in batch:
            report.objects_checked += 1
            entry = next((entries[i] for i in ids[obj.key] if i in entries), None)
            if entry is None:
                age = (started - obj.last_modified).total_seconds()
                if age < options.grace_s:
                    report.in_grace += 1  # its event may still be on the way
                    continue
                version = obj.as_version(bucket)
                missing.append(version)
                report.add(
                    Finding(
                        "missing",
                        obj.key,
                        version.file_id,
                        {
                            "last_modified": iso_now(obj.last_modified),
                            "size": obj.size,
                            "action": "none (dry run)" if options.dry_run else "requeued",
                        },
                    )
                )
            elif entry.status in ("SUCCEEDED", "PARTIAL"):
                finished.append((obj, entry))
        # One count query per file: latency-bound, so they run side by side.
        with ThreadPoolExecutor(max_workers=options.count_threads) as pool:
            stored = list(pool.map(lambda pair: self._orders.count(pair[1].file_id), finished))
        for n, (obj, entry) in enumerate(finished):
            count = stored[n]  # (zip(strict=) needs 3.10; the job runs 3.9)
            # Valid rows a newer upload already held were never stored by this version, so
            # the orders it wrote are the expectation, not its valid count; orders a newer
            # upload took over later are recorded on the entry (``taken``) and held there now.
            expected = entry.valid if entry.written is None else entry.written - entry.taken
            if count != expected:
                report.add(
                    Finding(
                        "drift",
                        obj.key,
                        entry.file_id,
                        {
                            "status": entry.status,
                            "valid": entry.valid,
                            "written": entry.valid if entry.written is None else entry.written,
                            "taken": entry.taken,
                            "expected": expected,
                            "stored": count,
                            "finished_at": entry.finished_at,
                        },
                    )
                )
        return missing

    def _check_stuck(
        self, report: ReconcileReport, started: datetime, options: ReconcileOptions
    ) -> list[ObjectVersion]:
        now_epoch = started.timestamp()
        stale_before = iso_now(started - timedelta(seconds=options.function_timeout_s))
        stuck: list[ObjectVersion] = []
        for entry in self._ledger.by_status("PROCESSING"):
            expired = (
                entry.lease_until < now_epoch
                if entry.lease_until
                else (entry.started_at or entry.updated_at) < stale_before
            )
            if not expired:
                continue
            stuck.append(entry.object_version)
            report.add(
                Finding(
                    "stuck",
                    entry.object_key,
                    entry.file_id,
                    {
                        "started_at": entry.started_at,
                        "lease_until": entry.lease_until or None,
                        "attempts": entry.attempts,
                        "action": "none (dry run)" if options.dry_run else "requeued",
                    },
                )
            )
        return stuck

    def _list_failed(self, report: ReconcileReport) -> None:
        for entry in self._ledger.by_status("FAILED"):
            report.add(
                Finding(
                    "failed",
                    entry.object_key,
                    entry.file_id,
                    {
                        "last_error": entry.last_error,
                        "attempts": entry.attempts,
                        "updated_at": entry.updated_at,
                    },
                )
            )

    def _requeue(self, versions: list[ObjectVersion]) -> int:
        bodies: list[tuple[str, dict[str, str]]] = [
            (s3_event_body(v, source=SOURCE), {}) for v in versions
        ]
        failed = self._queue.send(bodies)
        if failed:
            raise RuntimeError(f"could not re-enqueue {len(failed)} of {len(bodies)} file(s)")
        return len(bodies)

    def _publish(self, report: ReconcileReport, started: datetime) -> None:
        report.report_key = report_key(started, report.run_id)
        document = report.to_json()
        self._objects.put_json(report.report_key, document)
        if self._metrics is not None:
            self._metrics.put(
                {
                    "ReconcileObjectsChecked": report.objects_checked,
                    "ReconcileMissing": report.counts["missing"],
                    "ReconcileStuck": report.counts["stuck"],
                    "ReconcileDrift": report.counts["drift"],
                    "ReconcileFailed": report.counts["failed"],
                    "ReconcileRequeued": report.requeued,
                }
            )
        if self._alerts is not None and report.found_anything:
            self._alerts.publish(
                f"orderpipe reconcile on {report.bucket}: {report.summary_line()}",
                summary_text(report),
                {
                    "type": SUMMARY_TYPE,
                    "bucket": report.bucket,
                    "run_id": report.run_id,
                    "counts": dict(report.counts),
                    "requeued": report.requeued,
                    "report_key": report.report_key,
                    "summary": report.summary_line(),
                },
            )


def summary_text(report: ReconcileReport) -> str:
    """The e-mail an operator gets: what was found, what was done, where the report is."""
    lines = [
        f"orderpipe's reconcile checked s3://{report.bucket}/{report.options.prefix} "
        f"from {report.since} to {report.until}.",
        "",
        report.summary_line() + ".",
        f"Re-enqueued for processing: {report.requeued}.",
        "",
    ]
    titles = {
        "missing": "Files whose upload event never arrived (re-enqueued)",
        "stuck": "Files stuck in PROCESSING past the function timeout (re-enqueued)",
        "drift": "Files whose stored orders differ from their valid rows",
        "failed": "Files still FAILED (see `orderpipe dlq list`)",
    }
    for kind, title in titles.items():
        found = report.findings[kind]
        if not found:
            continue
        lines.append(f"{title}: {report.counts[kind]}")
        for f in found[:20]:
            extra = ""
            if kind == "drift":
                extra = f" (valid {f.detail['valid']}, stored {f.detail['stored']})"
            elif kind == "failed" and f.detail.get("last_error"):
                extra = f" ({f.detail['last_error']})"
            lines.append(f"  - {f.key}{extra}")
        lines.append("")
    lines.append(f"Full report: s3://{report.bucket}/{report.report_key}")
    return "\n".join(lines)
