"""The worker supervisor: hands the settings over, restarts a dead worker, stops it for good."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from core.local.embedded import READY_MARK, WorkerSupervisor

# A stand-in worker: reads its settings line, says it is polling, then idles.
FAKE_WORKER = (
    "import sys, time\n"
    "line = sys.stdin.readline().strip()\n"
    f"print('got ' + line + '; {READY_MARK}', flush=True)\n"
    "time.sleep(120)\n"
)


def _supervisor(tmp_path: Path, notices: list[str]) -> WorkerSupervisor:
    return WorkerSupervisor(
        [sys.executable, "-c", FAKE_WORKER],
        dict(os.environ),
        tmp_path / "worker.log",
        notice=notices.append,
    )


def _wait(predicate, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_settings_handed_over_reach_every_worker_it_starts(tmp_path: Path) -> None:
    notices: list[str] = []
    supervisor = _supervisor(tmp_path, notices)
    supervisor.launch()
    supervisor.hand_over('{"endpoint": "x"}')
    supervisor.start()
    try:
        first = supervisor.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert _wait(lambda: supervisor.restarts == 1 and supervisor.ready.is_set())
        assert supervisor.pid != first
        assert any("exited" in n for n in notices)
        log = (tmp_path / "worker.log").read_text()
        assert log.count('got {"endpoint": "x"}') == 2  # the restarted one got them too
    finally:
        supervisor.stop()


def test_stop_ends_the_worker_and_it_is_not_restarted(tmp_path: Path) -> None:
    supervisor = _supervisor(tmp_path, [])
    supervisor.hand_over("{}")
    supervisor.start()
    process = supervisor.process
    assert process is not None
    supervisor.stop(timeout_s=5)
    assert process.poll() is not None
    time.sleep(1.0)  # longer than the watcher's period: nothing comes back
    assert supervisor.process is None
    assert supervisor.restarts == 0
