"""The local reconcile schedule: runs on its period, survives failures, stops cleanly."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from core.aws.settings import Settings
from core.local.reconcile_schedule import ReconcileSchedule
from core.ops.reconcile import ReconcileOptions


class CountingReconciler:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.calls = 0
        self.ran = threading.Event()

    def run(self, options: ReconcileOptions) -> Any:
        self.calls += 1
        self.ran.set()
        if self.fail:
            raise RuntimeError("table gone")

        class Report:
            report_key = "reports/x.json"

            def summary_line(self) -> str:
                return "0 missing"

        return Report()


def test_runs_every_period_until_stopped() -> None:
    fake = CountingReconciler(fail=False)
    lines: list[str] = []
    schedule = ReconcileSchedule(
        object(), Settings(), every_s=0.05, log=lines.append, build=lambda s, c: fake
    )
    schedule.start()
    time.sleep(0.4)
    schedule.stop()
    calls = fake.calls
    assert calls >= 3
    time.sleep(0.15)
    assert fake.calls == calls  # stopped means stopped
    assert schedule.failures == 0
    assert lines[0].startswith("reconcile: 0 missing")


def test_a_failed_run_is_logged_and_the_schedule_goes_on() -> None:
    fake = CountingReconciler(fail=True)
    lines: list[str] = []
    # No alerts topic of a local stack: the failure is logged, nothing is published.
    schedule = ReconcileSchedule(
        object(), Settings(), every_s=3600, log=lines.append, build=lambda s, c: fake
    )
    assert schedule.run_once() is None
    assert schedule.run_once() is None
    assert (schedule.runs, schedule.failures) == (2, 2)
    assert lines[0] == "reconcile failed: RuntimeError: table gone"


def test_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ReconcileSchedule(object(), Settings(), every_s=0)
