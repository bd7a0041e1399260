"""``orderpipe dlq list|show|redrive|purge [--queue ingest|notify]``: the dead-letter queues."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from core import bootstrap
from core.cli.aws_errors import aws_errors
from core.cli.context import Target, json_option, resolve_target, stack_options
from core.cli.tables import cell
from core.ops.dlq import DeadLetter, DeadLetterQueue, DlqError, reached_dlq_estimate
from core.ops.ops_adapters import LedgerReader
from core.pipeline.ledger import DynamoLedger, LedgerEntry

QUEUES = ("ingest", "notify")


def queue_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--queue",
        type=click.Choice(QUEUES),
        default="ingest",
        show_default=True,
        help="Whose dead letters: the ingest queue's or the notify queue's.",
    )(func)


def _open(
    stack_name: str | None, endpoint_url: str | None, queue: str
) -> tuple[Target, DeadLetterQueue]:
    target = resolve_target(stack_name, endpoint_url)
    source = (
        target.settings.ingest_queue_url if queue == "ingest" else target.settings.notify_queue_url
    )
    if not source:
        raise click.ClickException(f"{target.where}: no {queue} queue configured")
    with aws_errors(target.where):
        try:
            dlq = bootstrap.dead_letters(target.clients, source)
        except DlqError as exc:
            raise click.ClickException(str(exc)) from None
    return target, dlq


def _ledger(target: Target) -> DynamoLedger:
    return bootstrap.ledger(target.settings, target.clients)


def _row(letter: DeadLetter, ledger: LedgerReader, visibility_s: int, queue: str) -> dict[str, Any]:
    files = letter.files()
    entries = [ledger.get(f.file_id) for f in files]
    # Ingest records infrastructure errors as last_error; notify keeps its own notify_error.
    field = "notify_error" if queue == "notify" else "last_error"
    errors = [str(e.raw[field]) for e in entries if e is not None and e.raw.get(field)]
    failed_at = max(
        (e.updated_at for e in entries if e is not None and e.status == "FAILED"), default=None
    )
    sizes = [f.size for f in files if f.size is not None]
    return {
        "id": letter.message_id,
        "keys": [f.key for f in files],
        "file_ids": [f.file_id for f in files],
        "size": sum(sizes) if sizes else None,
        "body_bytes": letter.body_bytes,
        "receive_count": letter.receive_count,
        "sent_at": letter.sent_at,
        "reached_dlq_at": reached_dlq_estimate(
            letter, failed_at if queue == "ingest" else None, visibility_s
        ),
        "ledger_status": [e.status if e else None for e in entries],
        "last_error": errors[0] if errors else None,
    }


@click.group("dlq", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """Review, redrive or purge the dead-letter queues (default: list)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_command)


@command.command("list")
@queue_option
@stack_options
@json_option
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
def list_command(
    queue: str = "ingest",
    stack_name: str | None = None,
    endpoint_url: str | None = None,
    as_json: bool = False,
    limit: int = 1000,
) -> None:
    """Each dead letter with its file, receive count, times and last error; consumes nothing."""
    target, dlq = _open(stack_name, endpoint_url, queue)
    with aws_errors(target.where):
        letters = dlq.peek(limit)
        visibility = dlq.source_visibility_s()
        reader = bootstrap.ledger_reader(target.settings, target.clients)
        rows = [_row(m, reader, visibility, queue) for m in letters]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, separators=(",", ":")))
        return
    console = Console(highlight=False)
    if not rows:
        console.print(f"The {queue} dead-letter queue is empty.")
        return
    table = Table(title=f"{queue} dead letters ({len(rows)})", title_justify="left")
    for name in ("id", "file", "size", "receives", "first sent", "reached DLQ (≈)", "last error"):
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(
            row["id"],
            Text("\n").join(cell(k) for k in row["keys"]) or "(not an S3 event or notice)",
            "" if row["size"] is None else f"{row['size']:,}",
            str(row["receive_count"]),
            row["sent_at"] or "",
            row["reached_dlq_at"] or "",
            cell(row["last_error"]),
        )
    console.print(table)
    console.print("Details: orderpipe dlq show ID · after fixing the cause: orderpipe dlq redrive")


def _history(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "file_id": entry.file_id,
        "version": entry.version,
        "status": entry.status.value,
        "attempts": entry.attempts,
        "received_at": entry.received_at,
        "started_at": entry.started_at,
        "finished_at": entry.finished_at,
        "updated_at": entry.updated_at,
        "rows": entry.rows,
        "valid": entry.valid,
        "invalid": entry.invalid,
        "error": entry.error,
        "last_error": entry.last_error,
        "replays": entry.replays,
        "replay_log": [{"at": r.at, "reason": r.reason} for r in entry.replay_log],
    }


@command.command("show")
@click.argument("message_id")
@queue_option
@stack_options
@json_option
def show_command(
    message_id: str, queue: str, stack_name: str | None, endpoint_url: str | None, as_json: bool
) -> None:
    """The whole message and the ledger history of the file(s) it names."""
    target, dlq = _open(stack_name, endpoint_url, queue)
    with aws_errors(target.where):
        letter = dlq.find(message_id)
        if letter is None:
            raise click.ClickException(f"no message {message_id} in the {queue} dead-letter queue")
        ledger = _ledger(target)
        history = {
            f.key: [_history(e) for e in ledger.for_key(f.bucket, f.key)] for f in letter.files()
        }
    try:
        body: Any = json.loads(letter.body)
    except ValueError:
        body = letter.body
    doc = {
        "id": letter.message_id,
        "attributes": letter.attributes,
        "message_attributes": letter.message_attributes,
        "body": body,
        "ledger": history,
    }
    if as_json:
        click.echo(json.dumps(doc, separators=(",", ":")))
        return
    click.echo(json.dumps(doc, indent=2))


@command.command("redrive")
@queue_option
@stack_options
@json_option
@click.option("--max", "max_messages", type=click.IntRange(min=1), help="Move at most N messages.")
@click.option("--rate", type=click.FloatRange(min=0.1), help="At most R messages per second.")
@click.option("--dry-run", is_flag=True, help="Say how many would move; move nothing.")
def redrive_command(
    *,
    queue: str,
    stack_name: str | None,
    endpoint_url: str | None,
    as_json: bool,
    max_messages: int | None,
    rate: float | None,
    dry_run: bool,
) -> None:
    """Move dead letters back to their queue, once the cause is fixed."""
    target, dlq = _open(stack_name, endpoint_url, queue)
    with aws_errors(target.where), _progress(not as_json) as report:
        try:
            result = dlq.redrive(
                max_messages=max_messages, rate=rate, dry_run=dry_run, progress=report
            )
        except DlqError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "queue": queue,
                    "dry_run": dry_run,
                    "moved": result.moved,
                    "would_move": result.would_move,
                    "failed": result.failed,
                    "method": result.method or None,
                    "errors": result.errors,
                },
                separators=(",", ":"),
            )
        )
    elif dry_run:
        click.echo(f"Dry run: would move {result.would_move} message(s) back to the {queue} queue.")
    else:
        how = "SQS message move task" if result.method == "native" else "copy, send before delete"
        click.echo(f"Moved {result.moved} message(s) back to the {queue} queue ({how}).")
        for error in result.errors:
            click.echo(f"error: {error}", err=True)
    if result.failed or result.errors:
        raise SystemExit(1)


class _progress:
    """A rich progress bar fed by the redrive callback; silent for --json."""

    def __init__(self, enabled: bool) -> None:
        self._bar = (
            Progress(TextColumn("redrive"), BarColumn(), MofNCompleteColumn(), transient=True)
            if enabled
            else None
        )
        self._task: Any = None

    def __enter__(self) -> Callable[[int, int | None], None]:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task("redrive", total=None)
        return self._update

    def _update(self, moved: int, total: int | None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=moved, total=total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


@command.command("purge")
@queue_option
@stack_options
@click.option("--yes", is_flag=True, help="Really delete every message.")
@click.option("--dry-run", is_flag=True, help="Say how many would be deleted; delete nothing.")
def purge_command(
    queue: str, stack_name: str | None, endpoint_url: str | None, yes: bool, dry_run: bool
) -> None:
    """Delete every dead letter for good (after reviewing them)."""
    if not (yes or dry_run):
        raise click.UsageError("purge deletes the messages for good: pass --yes (or --dry-run)")
    target, dlq = _open(stack_name, endpoint_url, queue)
    with aws_errors(target.where):
        count = dlq.purge(dry_run=dry_run)
    if dry_run:
        click.echo(f"Dry run: would delete {count} message(s) from the {queue} dead-letter queue.")
    else:
        click.echo(f"Deleted {count} message(s) from the {queue} dead-letter queue.")
