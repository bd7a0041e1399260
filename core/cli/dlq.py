"""``orderpipe dlq list|show|redrive|purge [--queue ingest|notify]``: the dead-letter queues."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Callable
from typing import Any

import click
from botocore.exceptions import ClientError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from core import bootstrap
from core.cli.aws_errors import aws_errors
from core.cli.context import Target, json_option, resolve_target, stack_options
from core.cli.tables import (
    Column,
    by_prefix,
    emit_table,
    note,
    short_ids,
    stderr_is_terminal,
    stdout_is_terminal,
)
from core.ops.dlq import (
    DeadLetter,
    DeadLetterQueue,
    DlqError,
    FileMention,
    Unredrivable,
    reached_dlq_estimate,
)
from core.ops.ops_adapters import LedgerReader
from core.pipeline.ledger import DynamoLedger, LedgerEntry
from core.validation.verdict import word
from core.validation.visible import visible

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


def _row(
    letter: DeadLetter,
    ledger: LedgerReader,
    visibility_s: int,
    queue: str,
    hopeless: Hopeless | None = None,
) -> dict[str, Any]:
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
        "last_error": errors[0] if errors else _why_without_error(letter, entries, queue),
        "never": hopeless.reason(letter) if hopeless else letter.unredrivable_reason(queue),
    }


class Hopeless(Unredrivable):
    """Which dead letters can never succeed on their queue, and why (S3 looked up once)."""

    def __init__(self, s3: Any, queue: str) -> None:
        super().__init__(queue, lambda mention: _object_exists(s3, mention))


def _object_exists(s3: Any, mention: FileMention) -> bool:
    """False only when S3 says the object is not there; other errors raise (and so count as
    there: a throttled or refused look proves nothing)."""
    try:
        s3.head_object(Bucket=mention.bucket, Key=mention.key)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if status == 404 or code in ("404", "NoSuchKey", "NoSuchBucket"):
            return False
        raise
    return True


def _why_without_error(letter: DeadLetter, entries: list[Any], queue: str) -> str:
    """What can be said when the ledger recorded no error for this message."""
    reason = letter.unredrivable_reason(queue)
    if reason is not None:
        return reason
    known = [e for e in entries if e is not None]
    if not known:
        return "no ledger entry: the handler failed before it claimed the file (see its log)"
    statuses = ", ".join(sorted({str(e.status) for e in known}))
    return f"no error recorded; the ledger now says {statuses}"


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
        hopeless = Hopeless(target.clients.s3, queue)
        rows = [_row(m, reader, visibility, queue, hopeless) for m in letters]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, separators=(",", ":")))
        return
    if not rows:
        click.echo(f"The {queue} dead-letter queue is empty.", err=True)
        return
    terminal = stdout_is_terminal()
    short = short_ids([r["id"] for r in rows]) if terminal else {}
    emit_table(
        f"{queue} dead letters ({len(rows)})",
        LIST_COLUMNS,
        [
            [
                short.get(row["id"], row["id"]),
                " ".join(row["keys"]) or "(not a file event)",
                str(row["receive_count"]),
                _when(row["reached_dlq_at"], terminal),
                row["last_error"],
                "" if row["size"] is None else f"{row['size']:,}",
                _when(row["sent_at"], terminal),
            ]
            for row in rows
        ],
    )
    note("One in full: orderpipe dlq show ID · after fixing the cause: orderpipe dlq redrive")


LIST_COLUMNS = (
    Column("Id"),
    Column("File", squeeze=True),
    Column("Recv", "right"),
    Column("In DLQ ≈"),
    Column("Last error", squeeze=True, min_width=16),
    Column("Size", "right", optional=True),
    Column("First sent", optional=True),
)


def _when(iso: str | None, terminal: bool) -> str:
    if not iso:
        return ""
    return iso[5:16].replace("T", " ") if terminal else iso


def _find(dlq: DeadLetterQueue, prefix: str, queue: str) -> DeadLetter:
    letters = {m.message_id: m for m in dlq.peek()}
    return letters[by_prefix(prefix, letters, "message", f"in the {queue} dead-letter queue")]


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
@click.argument("message_id", metavar="ID")
@queue_option
@stack_options
@json_option
def show_command(
    message_id: str, queue: str, stack_name: str | None, endpoint_url: str | None, as_json: bool
) -> None:
    """One dead letter (ID or a unique start of it): what it was, why it failed, its file's
    ledger entry, what a redrive would do."""
    target, dlq = _open(stack_name, endpoint_url, queue)
    with aws_errors(target.where):
        letter = _find(dlq, message_id, queue)
        ledger = _ledger(target)
        history = {
            f.key: [_history(e) for e in ledger.for_key(f.bucket, f.key)] for f in letter.files()
        }
        reader = bootstrap.ledger_reader(target.settings, target.clients)
        row = _row(
            letter, reader, dlq.source_visibility_s(), queue, Hopeless(target.clients.s3, queue)
        )
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
    _show(letter, row, history, queue)


def _show(
    letter: DeadLetter, row: dict[str, Any], history: dict[str, list[dict[str, Any]]], queue: str
) -> None:
    width = shutil.get_terminal_size((100, 24)).columns if stdout_is_terminal() else 0

    def fact(name: str, value: str) -> None:
        line = f"  {name + ':':<10}{visible(value)}"
        if width and len(line) > width:  # a terminal: wrap under the value, never cut
            line = textwrap.fill(line, width - 1, subsequent_indent=" " * 12)
        click.echo(line)

    click.echo(f"{letter.message_id} in the {queue} dead-letter queue")
    files = letter.files()
    if files:
        kind = "file notice" if queue == "notify" else "S3 event"
        for f in files:
            size = "" if f.size is None else f", {f.size:,} bytes"
            fact("what", f"{kind} for s3://{f.bucket}/{f.key}{size}")
    else:
        fact("what", f"a {letter.body_bytes:,}-byte message: {_excerpt(letter.body)}")
    fact("received", f"{row['receive_count']} times; first sent {row['sent_at'] or '?'}")
    fact("in DLQ", f"since about {row['reached_dlq_at'] or '?'}")
    fact("why", row["last_error"])
    for key, entries in history.items():
        for entry in entries[:3]:
            attempts = f"{entry['attempts']} attempt(s)"
            fact(
                "ledger",
                f"{key}: {word(entry['status'])} ({entry['status']}), {attempts}, "
                f"updated {entry['updated_at']}",
            )
    if files and not history:
        fact("ledger", "no entry for this file")
    reason = row["never"]
    if reason is not None:
        purge = f"orderpipe dlq purge {letter.message_id[:8]}"
        why = "" if reason == row["last_error"] else f" ({reason})"
        fact("redrive", f"leaves it here, it can never succeed{why}; `{purge}` deletes it")
        return
    finished = [
        (key, e["status"])
        for key, entries in history.items()
        for e in entries[:1]
        if e["status"] in ("SUCCEEDED", "PARTIAL", "REJECTED")
    ]
    if queue == "ingest" and finished:
        key, status = finished[0]
        fact(
            "redrive",
            f"sends it back; {key} is already {word(status)}, so ingest only acknowledges it "
            f"(`orderpipe replay {key}` runs it again)",
        )
        return
    after = "ingest processes the file again" if queue == "ingest" else "notify emails it"
    fact("redrive", f"sends it back to the {queue} queue; {after}")


def _excerpt(body: str, limit: int = 120) -> str:
    flat = " ".join(body.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@command.command("redrive")
@queue_option
@stack_options
@json_option
@click.option("--max", "max_messages", type=click.IntRange(min=1), help="Move at most N messages.")
@click.option("--rate", type=click.FloatRange(min=0.1), help="At most R messages per second.")
@click.option("--dry-run", is_flag=True, help="Say how many would move; move nothing.")
@click.option(
    "--purge-unredrivable",
    is_flag=True,
    help="Delete the messages that can never succeed (not an S3 event or notice) for good.",
)
def redrive_command(
    *,
    queue: str,
    stack_name: str | None,
    endpoint_url: str | None,
    as_json: bool,
    max_messages: int | None,
    rate: float | None,
    dry_run: bool,
    purge_unredrivable: bool,
) -> None:
    """Move dead letters back to their queue, once the cause is fixed.

    Messages that can never succeed (a body that is not an S3 event or a file notice) stay in
    the dead-letter queue, and are named; --purge-unredrivable deletes them instead.
    """
    target, dlq = _open(stack_name, endpoint_url, queue)
    with aws_errors(target.where), _progress(not as_json and stderr_is_terminal()) as report:
        try:
            result = dlq.redrive(
                max_messages=max_messages,
                rate=rate,
                dry_run=dry_run,
                progress=report,
                cannot_succeed=Hopeless(target.clients.s3, queue),
                purge_unredrivable=purge_unredrivable,
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
                    "left": result.left,
                    "purged": result.purged,
                },
                separators=(",", ":"),
            )
        )
    else:
        _say_redrive(result, queue, dry_run)
    if result.failed or result.errors:
        raise SystemExit(1)


def _say_redrive(result: Any, queue: str, dry_run: bool) -> None:
    if dry_run:
        click.echo(f"Dry run: would move {result.would_move} message(s) back to the {queue} queue.")
    else:
        how = "SQS message move task" if result.method == "native" else "copy, send before delete"
        click.echo(f"Moved {result.moved} message(s) back to the {queue} queue ({how}).")
    if result.left:
        ids = ", ".join(short_ids(result.left).values())
        left = "Would leave" if dry_run else "Left"
        click.echo(
            f"{left} {len(result.left)} that can never succeed ({ids}) in the dead-letter queue: "
            "see `orderpipe dlq show ID`; --purge-unredrivable deletes them."
        )
    if result.purged:
        done = "Would delete" if dry_run else "Deleted"
        click.echo(f"{done} {len(result.purged)} that could never succeed.")
    for error in result.errors:
        click.echo(f"error: {error}", err=True)


class _progress:
    """A rich progress bar fed by the redrive callback; silent for --json."""

    def __init__(self, enabled: bool) -> None:
        self._bar = (
            Progress(
                TextColumn("redrive"),
                BarColumn(),
                MofNCompleteColumn(),
                transient=True,
                console=Console(stderr=True),
            )
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
@click.argument("message_id", metavar="[ID]", required=False)
@queue_option
@stack_options
@click.option("--yes", is_flag=True, help="Really delete every message (not needed with an ID).")
@click.option("--dry-run", is_flag=True, help="Say how many would be deleted; delete nothing.")
def purge_command(
    message_id: str | None,
    *,
    queue: str,
    stack_name: str | None,
    endpoint_url: str | None,
    yes: bool,
    dry_run: bool,
) -> None:
    """Delete one dead letter (ID or a unique start of it), or every one, for good."""
    if message_id is None and not (yes or dry_run):
        raise click.UsageError("purge deletes the messages for good: pass --yes (or --dry-run)")
    target, dlq = _open(stack_name, endpoint_url, queue)
    with aws_errors(target.where):
        if message_id is not None:
            letter = _find(dlq, message_id, queue)
            if dry_run:
                click.echo(f"Dry run: would delete {letter.message_id}.")
                return
            if not dlq.delete(letter.message_id):
                raise click.ClickException(f"{letter.message_id} left the queue meanwhile")
            click.echo(f"Deleted {letter.message_id} from the {queue} dead-letter queue.")
            return
        count = dlq.purge(dry_run=dry_run)
    if dry_run:
        click.echo(f"Dry run: would delete {count} message(s) from the {queue} dead-letter queue.")
    else:
        click.echo(f"Deleted {count} message(s) from the {queue} dead-letter queue.")
