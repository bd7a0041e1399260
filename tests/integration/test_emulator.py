"""The emulator child: answers on loopback, refuses a taken port, never outlives its parent."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.local.emulator import Emulator, EmulatorError, answers, free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_starts_on_loopback_and_stops() -> None:
    emulator = Emulator().start()
    try:
        assert emulator.endpoint.startswith("http://127.0.0.1:")
        assert answers(emulator.endpoint)
    finally:
        emulator.stop()
    assert not answers(emulator.endpoint)


def test_a_taken_port_is_refused() -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        with pytest.raises(EmulatorError, match=f"port {port} on 127.0.0.1 is already in use"):
            Emulator(port).start()


def test_the_emulator_stops_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from core.local.emulator import Emulator; "
            "e = Emulator().start(); print(e.endpoint, flush=True); time.sleep(600)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    endpoint = parent.stdout.readline().strip()
    assert answers(endpoint)

    parent.send_signal(signal.SIGKILL)  # no chance to clean up
    parent.wait()

    deadline = time.monotonic() + 15
    while answers(endpoint) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not answers(endpoint)
