"""``orderpipe local [--port N]``: the whole pipeline on this machine, until Ctrl-C.

Starts the AWS emulator on loopback, creates the stack the template would create, records it
so other commands find it without flags, and runs the worker as a supervised child process.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from core.local.embedded import EmbeddedConfig, EmbeddedStack
from core.local.emulator import EmulatorError
from core.local.local_state import LocalState, state_dir
from core.local.queue_alarms import DEFAULT_EVERY_S as DEFAULT_ALARMS_EVERY_S
from core.local.queue_alarms import LocalAlarms, template_alarms
from core.local.reconcile_schedule import DEFAULT_EVERY_S, ReconcileSchedule
from core.ops.alerts import AlertsError, local_names


def _say(line: str) -> None:
    click.echo(f"orderpipe local: {line}", err=True)


@click.command("local")
@click.option(
    "--port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    help="Emulator port on 127.0.0.1; default: a free one.",
)
@click.option(
    "--outbox",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the emails as .eml files; default: outbox/ in the state folder.",
)
@click.option("--verbose", "-v", is_flag=True, help="Show the worker's log here too.")
@click.option(
    "--reconcile-every",
    type=click.FloatRange(min=1),
    default=DEFAULT_EVERY_S,
    show_default=True,
    help="Seconds between reconcile runs (the hourly Glue job's stand-in).",
)
@click.option(
    "--alarms-every",
    type=click.FloatRange(min=1),
    default=DEFAULT_ALARMS_EVERY_S,
    show_default=True,
    help="Seconds between evaluations of the DLQ and backlog alarms (CloudWatch's stand-in).",
)
def command(
    *,
    port: int | None,
    outbox: Path | None,
    verbose: bool,
    reconcile_every: float,
    alarms_every: float,
) -> None:
    """Run the emulator, the stack and a worker on this machine (Ctrl-C stops them)."""
    running = LocalState.load()
    if running is not None:
        raise click.ClickException(
            f"orderpipe local is already running (pid {running.pid}) at {running.endpoint}"
        )
    folder = state_dir()
    config = EmbeddedConfig(
        state_dir=folder,
        outbox_dir=outbox or folder / "outbox",
        port=port,
        echo_worker=(lambda line: click.echo(f"worker | {line}")) if verbose else None,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = EmbeddedStack(config, notice=_say)
    try:
        stack.start()
    except EmulatorError as exc:
        raise click.ClickException(str(exc)) from None
    schedule: ReconcileSchedule | None = None
    alarms: LocalAlarms | None = None
    problem: str | None = None
    try:
        assert stack.settings is not None  # set by stack.start() above  # nosec B101
        assert stack.worker is not None  # set by stack.start() above  # nosec B101
        schedule = ReconcileSchedule(stack.clients, stack.settings, reconcile_every, log=_say)
        schedule.start()
        alarms = _alarms(stack, alarms_every)
        click.echo(f"AWS_ENDPOINT_URL={stack.endpoint}")
        click.echo(f"bucket:  s3://{stack.settings.bucket}/incoming/")
        click.echo(f"outbox:  {config.outbox_dir.resolve()}")
        click.echo(f"worker:  pid {stack.worker.pid}, log {stack.worker_log}")
        click.echo(f"emulator: pid {stack.emulator.pid}, log {config.state_dir / 'emulator.log'}")
        click.echo(f"reconcile: every {reconcile_every:g} s (alerts: `orderpipe alerts`)")
        if alarms is not None:
            click.echo(f"alarms:  DLQs not empty, ingest backlog; checked every {alarms_every:g} s")
        click.echo("orderpipe local is ready: try `orderpipe upload FILE --wait` (Ctrl-C stops)")
        problem = stack.wait(stop)
        _say(f"{problem}; stopping" if problem else "stopping")
    finally:
        if alarms is not None:
            alarms.stop()
        if schedule is not None:
            schedule.stop()
        stack.stop()
    if problem:
        raise click.ClickException(f"{problem}: the local stack is gone, start it again")
    _say("stopped")


def _alarms(stack: EmbeddedStack, every_s: float) -> LocalAlarms | None:
    """The template's queue alarms, evaluated here and published to the alerts topic."""
    settings, clients = stack.settings, stack.clients
    if settings is None or clients is None or not settings.alerts_topic_arn:
        return None
    try:
        names = local_names(settings)
    except AlertsError:
        return None
    env = settings.alerts_topic_arn.rsplit(":", 1)[-1][len("orderpipe-") : -len("-alerts")]
    alarms = LocalAlarms(
        clients.sqs,
        clients.sns,
        settings.alerts_topic_arn,
        template_alarms(clients.sqs, names, env),
        every_s=every_s,
        log=_say,
    )
    alarms.start()
    return alarms
