"""``orderpipe worker``: run the ingest and notify handlers off their queues, here.

Against the local emulator (started by ``orderpipe local``) or any configured endpoint and
credentials, real AWS queues included, to debug a handler on a laptop. Stops cleanly on
SIGTERM or Ctrl-C: the batch in flight finishes, nothing is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from types import FrameType

import click

from core import bootstrap
from core.aws.settings import Settings
from core.aws.stack import LOCAL_TIMINGS
from core.cli.aws_errors import aws_errors
from core.cli.context import Target, resolve_target, stack_options
from core.local.embedded import READY_MARK
from core.local.parent_watch import exit_soon, signal_on_parent_death, watch_parent
from core.local.worker import (
    DEFAULT_WAIT_TIME_S,
    HANDLER_PATHS,
    INGEST,
    NOTIFY,
    Worker,
    WorkerError,
    drain,
    load_handler,
)

PARENT_GONE_GRACE_S = 3.0


def _log(line: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    # Under `orderpipe local` stderr is a pipe to the parent; once it is gone nobody reads
    # the log, and a write must not be what stops the worker from stopping.
    with contextlib.suppress(OSError, ValueError):
        click.echo(f"{stamp} {line}", err=True)


@click.command("worker")
@click.option(
    "--queue",
    "queues",
    type=click.Choice([INGEST, NOTIFY]),
    multiple=True,
    help="Only poll this queue (repeatable); default: both.",
)
@click.option(
    "--notify-window",
    type=click.FloatRange(min=0),
    default=float(LOCAL_TIMINGS.notify_batch_window_s),
    show_default=True,
    help="Seconds the notify queue gathers notices into one batch (one email).",
)
@click.option(
    "--wait-time",
    type=click.IntRange(min=0, max=20),
    default=DEFAULT_WAIT_TIME_S,
    show_default=True,
    help="Long-poll wait of each ReceiveMessage, in seconds.",
)
@click.option(
    "--until-idle",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Process until both queues are idle, then exit (1 if still busy after SECONDS).",
)
@click.option("--parent-pid", type=int, default=None, hidden=True)
@click.option("--settings-stdin", is_flag=True, hidden=True)
@stack_options
def command(
    *,
    queues: tuple[str, ...],
    notify_window: float,
    wait_time: int,
    until_idle: float | None,
    parent_pid: int | None,
    settings_stdin: bool,
    stack_name: str | None,
    endpoint_url: str | None,
) -> None:
    """Poll the ingest and notify queues and run their Lambda handlers in this process."""
    chosen = list(queues) or [INGEST, NOTIFY]
    if settings_stdin:
        handed = _target_from_stdin(chosen)
        if handed is None:
            return  # the parent gave up before the stack existed
        target = handed
    else:
        target = resolve_target(stack_name, endpoint_url)
    _handler_environment(target)
    if until_idle is not None:
        with aws_errors("drain the queues"):
            try:
                report = drain(
                    target.clients, target.settings, until_idle, log=_log, raise_on_timeout=False
                )
            except WorkerError as exc:
                raise click.ClickException(str(exc)) from None
        _log(
            f"handled {report.messages} message(s), {report.failed} failed, {report.seconds:.1f} s"
        )
        if not report.idle:
            raise click.ClickException(f"queues still busy after {until_idle:g} s")
        return
    with aws_errors("start the worker"):
        try:
            worker = Worker(
                target.clients,
                target.settings,
                queues=chosen,
                notify_window_s=notify_window,
                wait_time_s=wait_time,
                log=_log,
            )
        except WorkerError as exc:
            raise click.ClickException(str(exc)) from None
    stop = threading.Event()
    _stop_on_signals(stop)
    if parent_pid is not None:
        _stop_with_parent(stop, parent_pid)
    where = target.clients.endpoint_url or "AWS"
    _log(f"{READY_MARK} {' and '.join(chosen)} at {where} (pid {os.getpid()}; Ctrl-C stops)")
    worker.run(stop)
    _log("orderpipe worker: stopped")


def _target_from_stdin(queues: list[str]) -> Target | None:
    """Supervised start: import the handlers first, then read the stack ``local`` created.

    ``orderpipe local`` starts this process before the emulator, so the slow imports overlap
    the stack's creation; one JSON line ``{"endpoint": ..., "env": {...}}`` follows on stdin.
    """
    for queue in queues:
        try:
            load_handler(HANDLER_PATHS[queue])
        except WorkerError as exc:
            raise click.ClickException(str(exc)) from None
    line = sys.stdin.readline()
    if not line.strip():
        return None
    try:
        handed = json.loads(line)
        settings = Settings.from_env(handed["env"])
        endpoint = str(handed["endpoint"])
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"unreadable settings on stdin: {exc}") from None
    return Target(bootstrap.clients(endpoint), settings, "local")


def _handler_environment(target: Target) -> None:
    """The handlers read their settings from the environment, as on Lambda."""
    os.environ.update(target.settings.to_env())
    if target.clients.endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = target.clients.endpoint_url


def _stop_on_signals(stop: threading.Event) -> None:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # a second Ctrl-C: leave now, the queue keeps what was in flight
            sys.exit(130)
        stop.set()  # first: the log below may fail on a closed pipe
        _log(f"orderpipe worker: {signal.Signals(signum).name}, finishing the batch in flight")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _stop_with_parent(stop: threading.Event, parent_pid: int) -> None:
    """Stop when the process that started us is gone, even if it died by SIGKILL.

    Its emulator (all of the local stack's state) dies with it, so there is nothing left to
    finish: the batch in flight gets a short grace, then the process leaves.
    """
    signal_on_parent_death(signal.SIGTERM)

    def on_gone() -> None:
        stop.set()
        exit_soon(PARENT_GONE_GRACE_S)
        _log("orderpipe worker: parent process gone, stopping")

    watch_parent(parent_pid, on_gone)
