"""The embedded stack: emulator + resources + a supervised worker, for ``local`` and ``demo``.

The worker is a child process of its own (``orderpipe worker``), so a person can see it and
kill it alone; the supervisor restarts it when it dies. Killing it loses nothing: messages it
had received come back after their visibility timeout and the handlers are idempotent.
"""

from __future__ import annotations

import json
import os
import subprocess  # runs only our own interpreter (the worker)  # nosec B404
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from core import bootstrap
from core.aws.clients import Clients
from core.aws.settings import Settings
from core.aws.stack import StackNames, create_local_stack
from core.local.emulator import Emulator, EmulatorError, use_emulator_credentials
from core.local.local_state import LocalState

READY_MARK = "orderpipe worker: polling"  # the worker prints this once it polls both queues
WORKER_START_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 20.0
RESTART_BACKOFF_MAX_S = 30.0


@dataclass(frozen=True)
class EmbeddedConfig:
    state_dir: Path  # worker.log and emulator.log go here
    outbox_dir: Path
    port: int | None = None
    env_name: str = "local"
    save_state: bool = True  # False for the demo: it must not shadow a running `local`
    echo_worker: Callable[[str], None] | None = None  # each worker output line, as it comes


class WorkerSupervisor:
    """Start ``orderpipe worker`` as a child, keep it running, stop it on request."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        echo: Callable[[str], None] | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.echo = echo
        self.notice = notice or (lambda _line: None)
        self.process: subprocess.Popen[str] | None = None
        self.ready = threading.Event()
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._handoff: str | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def launch(self) -> None:
        """Start the child now; it imports its handlers while the stack is being created."""
        if self.process is None:
            self._spawn()

    def hand_over(self, line: str) -> None:
        """Give the child (and every restarted one) the endpoint and settings it waits for."""
        self._handoff = line
        self._send_handoff(self.process)

    def _send_handoff(self, process: subprocess.Popen[str] | None) -> None:
        if process is None or process.stdin is None or self._handoff is None:
            return
        try:
            process.stdin.write(self._handoff + "\n")
            process.stdin.close()
        except OSError:
            pass  # it died meanwhile: start() or the watcher reports it

    def start(self, timeout_s: float = WORKER_START_TIMEOUT_S) -> None:
        self.launch()
        deadline = time.monotonic() + timeout_s
        while not self.ready.wait(0.1):
            process = self.process
            if process is not None and process.poll() is not None:
                raise EmulatorError(
                    f"the worker exited with code {process.returncode} while starting; "
                    f"see {self.log_path}"
                )
            if time.monotonic() > deadline:
                raise EmulatorError(f"the worker did not start within {timeout_s:g} s")
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        self.ready.clear()
        with self._lock:
            # Our own interpreter and module with a fixed argv: no shell, no outside input.
            self.process = subprocess.Popen(  # noqa: S603  # nosec B603
                self.argv,
                env=self.env,
                stdin=subprocess.PIPE,  # the settings arrive here (hand_over)
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                # Its own session: Ctrl-C reaches `local`, which then stops the worker in order.
                start_new_session=True,
            )
            self._send_handoff(self.process)
            stdout = self.process.stdout
        assert stdout is not None  # stdout=PIPE always gives a stream  # nosec B101
        threading.Thread(target=self._pump, args=(stdout,), name="worker-log", daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        """Copy the worker's output to its log (and the console when asked)."""
        with self.log_path.open("a", encoding="utf-8") as log:
            for line in stream:
                log.write(line)
                log.flush()
                if READY_MARK in line:
                    self.ready.set()
                if self.echo:
                    self.echo(line.rstrip("\n"))

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.wait(0.5):
            process = self.process
            if process is None or process.poll() is None:
                continue
            if self._stopping.is_set():
                return
            self.notice(
                f"worker (pid {process.pid}) exited with code {process.returncode}; "
                f"restarting in {backoff:.0f} s"
            )
            if self._stopping.wait(backoff):
                return
            started = time.monotonic()
            self._spawn()
            self.restarts += 1
            if self.ready.wait(WORKER_START_TIMEOUT_S):
                self.notice(f"worker restarted (pid {self.pid})")
            # A worker that keeps dying at once is not restarted in a tight loop.
            backoff = 1.0 if time.monotonic() - started > 30 else min(backoff * 2, 30.0)

    def stop(self, timeout_s: float = WORKER_STOP_TIMEOUT_S) -> None:
        self._stopping.set()
        with self._lock:
            process, self.process = self.process, None
        if self._watcher is not None:
            self._watcher.join(5)
        if process is None or process.poll() is not None:
            return
        process.terminate()  # the worker finishes its in-flight batch, then exits
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class EmbeddedStack:
    """Everything ``orderpipe local`` runs; a context manager that leaves nothing behind."""

    def __init__(self, config: EmbeddedConfig, notice: Callable[[str], None] | None = None):
        self.config = config
        self.notice = notice or (lambda _line: None)
        self.emulator = Emulator(config.port, log_path=config.state_dir / "emulator.log")
        self.settings: Settings | None = None
        self.clients: Clients | None = None
        self.worker: WorkerSupervisor | None = None

    @property
    def endpoint(self) -> str:
        return self.emulator.endpoint

    @property
    def worker_log(self) -> Path:
        return self.config.state_dir / "worker.log"

    def start(self) -> EmbeddedStack:
        config = self.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        config.outbox_dir.mkdir(parents=True, exist_ok=True)
        use_emulator_credentials()
        self.worker = WorkerSupervisor(
            self._worker_argv(),
            self._worker_env(),
            self.worker_log,
            echo=config.echo_worker,
            notice=self.notice,
        )
        try:
            self.worker.launch()  # its imports overlap the emulator's start
            self.emulator.start()
            self.clients = bootstrap.clients(self.endpoint)
            self.settings = create_local_stack(
                self.clients,
                StackNames.for_env(config.env_name),
                outbox_dir=str(config.outbox_dir.resolve()),
            )
            if config.save_state:
                LocalState(self.endpoint, self.settings, os.getpid()).save()
            self.worker.hand_over(
                json.dumps({"endpoint": self.endpoint, "env": self.settings.to_env()})
            )
            self.worker.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _worker_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "core.cli",
            "worker",
            "--settings-stdin",
            "--parent-pid",
            str(os.getpid()),
        ]

    def _worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        use_emulator_credentials(env)
        env.pop("AWS_ENDPOINT_URL", None)  # the endpoint and settings come on stdin
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon on a laptop
        env.setdefault("POWERTOOLS_METRICS_NAMESPACE", "orderpipe")
        return env

    def wait(self, stop: threading.Event) -> str | None:
        """Block until ``stop`` is set (None) or the emulator has died (why, as a sentence)."""
        while not stop.wait(0.5):
            process = self.emulator.process
            if process is not None and process.poll() is not None:
                return f"the emulator exited with code {process.returncode}"
        return None

    def stop(self) -> None:
        """Stop the worker first (it may be mid-batch), then the emulator; clear the state."""
        if self.worker is not None:
            self.worker.stop()
        self.emulator.stop()
        if self.config.save_state:
            current = LocalState.load()
            if current is None or current.pid == os.getpid():
                LocalState.clear()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
