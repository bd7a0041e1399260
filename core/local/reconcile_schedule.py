"""The local stack's stand-in for the hourly Glue trigger.

``orderpipe local --reconcile-every N`` runs reconcile every N seconds (default hourly) in a
background thread. A run that fails publishes the Glue Job State Change event a failed Glue run
produces on AWS (core/ops/alerts.py), so the alert path is exercised locally too.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from core import bootstrap
from core.aws.settings import Settings
from core.ops.alerts import AlertsError, LocalJobAlarm, local_names
from core.ops.reconcile import ReconcileOptions, Reconciler, ReconcileReport

DEFAULT_EVERY_S = 3600
# The emulator enqueues an upload's event inside PutObject, so locally an object without a
# ledger entry after half a minute has lost its event (AWS needs the 5-minute default).
LOCAL_GRACE_S = 30

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


class ReconcileSchedule:
    def __init__(
        self,
        clients: Any,
        settings: Settings,
        every_s: float = DEFAULT_EVERY_S,
        *,
        options: ReconcileOptions | None = None,
        log: Log = _quiet,
        build: Callable[[Settings, Any], Reconciler] = bootstrap.reconciler,
    ) -> None:
        if every_s <= 0:
            raise ValueError("--reconcile-every must be a positive number of seconds")
        self._clients = clients
        self._settings = settings
        self.every_s = every_s
        self._options = options or ReconcileOptions(function_timeout_s=settings.function_timeout_s)
        self._log = log
        self._build = build
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.failures = 0
        self.last_report: ReconcileReport | None = None

    def _alarm(self) -> LocalJobAlarm | None:
        if not self._settings.alerts_topic_arn:
            return None
        try:
            local_names(self._settings)
        except AlertsError:
            return None  # not a local stack's topic: on AWS the Glue run itself alerts
        c = self._clients
        return LocalJobAlarm(c.events, c.sqs, c.sns, self._settings)

    def run_once(self) -> ReconcileReport | None:
        """One reconcile; a failure is logged and alerted, never raised."""
        self.runs += 1
        try:
            report = self._build(self._settings, self._clients).run(self._options)
        except Exception as exc:  # any failure of the job is what the alert is for
            self.failures += 1
            error = f"{type(exc).__name__}: {exc}"
            self._log(f"reconcile failed: {error}")
            self._log(traceback.format_exc(limit=3))
            alarm = self._alarm()
            if alarm is not None:
                via = alarm.publish_failure(error)
                self._log(f"reconcile failure alert published via {via}")
            return None
        self.last_report = report
        self._log(f"reconcile: {report.summary_line()}; report {report.report_key}")
        return report

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.run_once()

    def start(self) -> None:
        """Run every ``every_s`` seconds (first run one period from now) until ``stop``."""
        alarm = self._alarm()
        if alarm is not None:
            alarm.ensure_route()  # route failures before the first run can fail
        self._thread = threading.Thread(target=self._loop, name="reconcile-schedule", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
