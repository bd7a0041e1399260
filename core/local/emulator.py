"""The AWS emulator behind ``orderpipe local``: a moto server on loopback, in a child process.

The server runs in its own process (``python -m core.local.emulator``) so the worker and the CLI do
not share its interpreter lock, and it watches its parent: when the process that started it
dies, it stops too, so a crashed ``orderpipe local`` or ``demo`` leaves nothing running.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess  # runs only our own interpreter (the emulator)  # nosec B404
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import MutableMapping
from pathlib import Path
from types import FrameType

from core.local.parent_watch import signal_on_parent_death, watch_parent

LOOPBACK = "127.0.0.1"
HEALTH_PATH = "/moto-api/data.json"
START_TIMEOUT_S = 30.0

# What boto3 signs with against the emulator. Never a real key: a developer's own credentials
# are not sent to a local port.
EMULATOR_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # nosec B105
_REAL_CREDENTIAL_VARS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


class EmulatorError(RuntimeError):
    """The emulator could not start (port taken, moto missing, it died)."""


def use_emulator_credentials(env: MutableMapping[str, str] | None = None) -> None:
    """Point ``env`` (default: this process's) at the emulator's dummy credentials."""
    target = os.environ if env is None else env
    for name in _REAL_CREDENTIAL_VARS:
        target.pop(name, None)
    target.update(EMULATOR_CREDENTIALS)
    target.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def answers(endpoint: str, timeout_s: float = 1.0) -> bool:
    """Whether a moto server answers at ``endpoint``."""
    try:
        # The URL is the loopback endpoint we built (http only): no file: or custom scheme.
        with urllib.request.urlopen(endpoint + HEALTH_PATH, timeout=timeout_s) as response:  # noqa: S310  # nosec B310
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class Emulator:
    """A moto server child process on 127.0.0.1; use as a context manager or start/stop."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> Emulator:
        if self.port is None:
            self.port = free_port()
        elif not port_is_free(self.port):
            raise EmulatorError(f"port {self.port} on {LOOPBACK} is already in use")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            # Our own interpreter and module with a fixed argv: no shell, no outside input.
            self.process = subprocess.Popen(  # noqa: S603  # nosec B603
                [
                    sys.executable,
                    "-m",
                    "core.local.emulator",
                    "--port",
                    str(self.port),
                    "--parent-pid",
                    str(os.getpid()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Its own session: Ctrl-C reaches the parent, which stops the worker first.
                start_new_session=True,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout_s
        while not answers(self.endpoint, 0.5):
            code = self.process.poll()
            if code is not None:
                raise EmulatorError(f"the emulator exited with code {code} while starting")
            if time.monotonic() > deadline:
                self.stop()
                raise EmulatorError(f"the emulator did not answer within {timeout_s:g} s")
            time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(port: int, parent_pid: int) -> None:
    """Run a moto server until SIGTERM/SIGINT or until the parent process is gone."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if parent_pid:
        signal_on_parent_death(signal.SIGTERM)
        watch_parent(parent_pid, stop.set, stop=stop)
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    try:
        while not stop.wait(0.5):
            pass  # a timed wait: signal handlers run promptly on every platform
    finally:
        with contextlib.suppress(Exception):
            server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.local.emulator")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args(argv)
    _serve(args.port, args.parent_pid)


if __name__ == "__main__":
    main()
