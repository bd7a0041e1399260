"""The console served over real HTTP (uvicorn on a free loopback port) for a test stack."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from core.console.app import build_app
from core.console.backend import Backend
from core.console.security import Secrets
from core.local.worker import Worker
from core.ops.dlq import DeadLetterQueue


@dataclass
class Console:
    base: str
    keys: Secrets
    server: uvicorn.Server

    @property
    def login_url(self) -> str:
        return f"{self.base}/files?token={self.keys.token}"


@contextmanager
def serve_console(stack: Any, *, read_only: bool = False) -> Iterator[Console]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = int(sock.getsockname()[1])
    keys = Secrets()
    backend = Backend.for_stack(stack.clients, stack.settings, "test stack")
    app = build_app(
        backend,
        keys=keys,
        read_only=read_only,
        hosts=frozenset({f"127.0.0.1:{port}", f"localhost:{port}"}),
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield Console(f"http://127.0.0.1:{port}", keys, server)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def running_worker(stack: Any, monkeypatch: Any) -> Iterator[Worker]:
    """The local worker on the stack; its handlers read their settings from the environment."""
    for name, value in stack.settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.endpoint)
    worker = Worker(stack.clients, stack.settings, notify_window_s=0.2, wait_time_s=1)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(10)


def ingest_dlq(stack: Any) -> DeadLetterQueue:
    return DeadLetterQueue.for_source(stack.clients.sqs, stack.settings.ingest_queue_url)


def wait_for(check: Any, timeout_s: float = 30.0, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(every_s)
