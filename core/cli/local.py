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

from core.embedded import EmbeddedConfig, EmbeddedStack
from core.emulator import EmulatorError
from core.local_state import LocalState, state_dir


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
def command(*, port: int | None, outbox: Path | None, verbose: bool) -> None:
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
    try:
        assert stack.settings is not None
        assert stack.worker is not None
        click.echo(f"AWS_ENDPOINT_URL={stack.endpoint}")
        click.echo(f"bucket:  s3://{stack.settings.bucket}/incoming/")
        click.echo(f"outbox:  {config.outbox_dir.resolve()}")
        click.echo(f"worker:  pid {stack.worker.pid}, log {stack.worker_log}")
        click.echo("orderpipe local is ready: try `orderpipe upload FILE --wait` (Ctrl-C stops)")
        stop.wait()
        _say("stopping")
    finally:
        stack.stop()
    _say("stopped")
