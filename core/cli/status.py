"""``orderpipe status [KEY...] [--json]``: the ledger, newest first, with timings and attempts.

Without keys: the most recently updated files. With keys (``incoming/x.csv`` or just
``x.csv``): every version of those objects the pipeline has seen.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from core import bootstrap
from core.aws.settings import INCOMING_PREFIX
from core.cli.aws_errors import aws_errors
from core.cli.context import json_option, resolve_target, stack_options
from core.cli.tables import (
    Column,
    emit_table,
    fitted_table,
    one_line,
    reasons_text,
    stdout_is_terminal,
    styled_status,
)
from core.ops.event_messages import s3_version
from core.pipeline.ledger import ALL_STATUSES, DynamoLedger, LedgerEntry, Status
from core.validation.verdict import refused_whole, verdict_code, word
from core.validation.visible import visible


@click.command("status")
@click.argument("keys", nargs=-1)
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Files shown."
)
@click.option(
    "--status",
    "only",
    type=click.Choice([str(s) for s in ALL_STATUSES], case_sensitive=False),
    help="Only files in this status.",
)
@json_option
@stack_options
def command(
    *,
    keys: tuple[str, ...],
    limit: int,
    only: str | None,
    as_json: bool,
    stack_name: str | None,
    endpoint_url: str | None,
) -> None:
    """Show what the pipeline did with each file: outcome, counts, timings, attempts.

    \b
    Outcomes: accepted (SUCCEEDED), partly accepted (PARTIAL), rejected (REJECTED);
    processing files show the rows judged and written so far.
    """
    target = resolve_target(stack_name, endpoint_url)
    ledger = bootstrap.ledger(target.settings, target.clients)
    with aws_errors(f"read the ledger {target.settings.files_table}"):
        entries = _entries(ledger, target.settings.bucket, keys, limit, only)
        empty = not entries and not ledger.recent(1)
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry_json(entry), separators=(",", ":")))
    elif entries and keys and stdout_is_terminal():
        for entry in entries:
            show_entry(entry)
    elif entries:
        emit_ledger(entries)
        if stdout_is_terminal():
            click.echo(IN_FULL)
    if entries:
        return
    if empty:
        click.echo(f"no files in the ledger yet ({target.where})", err=True)
        return
    if keys:
        names = ", ".join(_full_key(k) for k in keys)
        raise click.ClickException(f"{names}: not in the ledger ({target.where})")
    if only:
        click.echo(f"no {word(only)} files ({only.upper()}) in the ledger", err=True)


def _entries(
    ledger: DynamoLedger, bucket: str, keys: tuple[str, ...], limit: int, only: str | None
) -> list[LedgerEntry]:
    if keys:
        entries = [e for key in keys for e in ledger.for_key(bucket, _full_key(key))]
        if only:
            entries = [e for e in entries if e.status == only.upper()]
    elif only:
        entries = ledger.by_status(only.upper())
    else:
        entries = ledger.recent(limit)
    entries.sort(key=lambda e: (e.received_at, e.file_id), reverse=True)
    return entries[:limit]


def _full_key(key: str) -> str:
    return key if key.startswith(INCOMING_PREFIX) else INCOMING_PREFIX + key.lstrip("/")


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return round(delta.total_seconds(), 3)


def queued_seconds(entry: LedgerEntry) -> float | None:
    """From the upload (or the last replay, when later) to the start of the last attempt."""
    since = entry.event_time or None
    if entry.replay_log:
        replayed = entry.replay_log[-1].at
        since = max(since, replayed) if since else replayed
    return _seconds_between(since, entry.started_at)


def rows_per_second(entry: LedgerEntry, now: datetime | None = None) -> float | None:
    """Rows written (or, before the first write, judged) per second since the attempt began."""
    done = (getattr(entry, "rows_written", 0) or 0) or (getattr(entry, "rows_judged", 0) or 0)
    if not entry.started_at or not done:
        return None
    now = now or datetime.now(UTC)
    started = datetime.fromisoformat(entry.started_at.replace("Z", "+00:00"))
    elapsed = (now - started).total_seconds()
    return done / elapsed if elapsed > 0 else None


def entry_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "key": entry.object_key,
        "status": str(entry.status),
        "outcome": verdict_code(str(entry.status)),
        "rows": entry.rows,
        "valid": entry.valid,
        "invalid": entry.invalid,
        "reasons": dict(entry.reasons),
        "error": entry.error,
        "last_error": entry.last_error,
        "attempts": entry.attempts,
        "version": s3_version(entry.version),
        "etag": entry.etag or None,
        "file_id": entry.file_id,
        "size": entry.size,
        "received_at": entry.received_at,
        "started_at": entry.started_at,
        "finished_at": entry.finished_at,
        "queued_seconds": queued_seconds(entry),
        "processing_seconds": entry.seconds(),
        "rows_judged": getattr(entry, "rows_judged", 0),
        "rows_written": getattr(entry, "rows_written", 0),
        "notified_at": entry.notified_at,
        "replays": entry.replays,
    }


LEDGER_COLUMNS = (
    Column("Received"),
    Column("Key", squeeze=True),
    Column("Outcome"),
    Column("Rows", "right"),
    Column("Bad", "right"),
    Column("Reasons / error", squeeze=True, min_width=16),
    Column("Queued", "right", optional=True),
    Column("Took", "right"),
    Column("Tries", "right", optional=True),
)


def emit_ledger(entries: list[LedgerEntry]) -> None:
    """The ledger as a table (terminal) or tab-separated lines (pipe)."""
    emit_table(LEDGER_TITLE, LEDGER_COLUMNS, ledger_rows(entries, stdout_is_terminal()))


def ledger_rows(entries: list[LedgerEntry], terminal: bool) -> list[list[str | Text]]:
    rows: list[list[str | Text]] = []
    for entry in entries:
        processing = entry.status == Status.PROCESSING
        whole = refused_whole(entry.status, entry.error)  # refused as a file: no row counted
        if processing:
            detail = _progress_text(entry)
            count = getattr(entry, "rows_judged", 0) or 0
        else:
            detail = entry.error or reasons_text(entry.reasons)
            if not detail and not entry.finished:
                detail = entry.last_error or ""
            count = entry.rows
        rows.append(
            [
                entry.received_at[5:16].replace("T", " ") if terminal else entry.received_at,
                entry.object_key.removeprefix(INCOMING_PREFIX) if terminal else entry.object_key,
                styled_status(str(entry.status)),
                "" if whole and terminal else (f"{count:,}" if terminal else str(count)),
                ""
                if processing or (whole and terminal)
                else (f"{entry.invalid:,}" if terminal else str(entry.invalid)),
                one_line(detail),
                _fmt(queued_seconds(entry)),
                _fmt(entry.seconds()),
                str(entry.attempts),
            ]
        )
    return rows


IN_FULL = "One file in full: orderpipe status KEY"  # after a table whose cells were cut
LEDGER_TITLE = f"Ledger, newest first (keys under {INCOMING_PREFIX})"


def ledger_table(entries: list[LedgerEntry], width: int = 200) -> Table:
    """The terminal table of ``entries`` as a renderable, ``width`` characters at most."""
    return fitted_table(LEDGER_TITLE, LEDGER_COLUMNS, ledger_rows(entries, terminal=True), width)


def show_entry(entry: LedgerEntry) -> None:
    """One ledger entry in full: nothing cut, for a person at a terminal."""
    data = entry_json(entry)
    status = str(entry.status)
    facts = [
        ("outcome", f"{word(status)} ({status})"),
        ("rows", f"{entry.rows:,}, {entry.valid:,} valid, {entry.invalid:,} rejected"),
        ("progress", _progress_text(entry) if entry.status == Status.PROCESSING else ""),
        ("reasons", reasons_text(entry.reasons)),
        ("error", entry.error or ""),
        ("last error", entry.last_error or ""),
        ("version", data["version"] or "none recorded (known by its ETag)"),
        ("etag", entry.etag),
        ("received", entry.received_at),
        ("started", entry.started_at),
        ("finished", entry.finished_at or ""),
        ("queued s", _fmt(data["queued_seconds"])),
        ("took s", _fmt(data["processing_seconds"])),
        ("attempts", str(entry.attempts)),
        ("replays", str(entry.replays) if entry.replays else ""),
        ("notified", entry.notified_at or ""),
    ]
    click.echo(visible(entry.object_key))
    for name, value in facts:
        if value:
            click.echo(f"  {name + ':':<12}{visible(value)}")
    click.echo()


def _progress_text(entry: LedgerEntry) -> str:
    judged = getattr(entry, "rows_judged", 0) or 0
    written = getattr(entry, "rows_written", 0) or 0
    if not judged and not written:
        return "starting" + (f"; last error: {entry.last_error}" if entry.last_error else "")
    rate = rows_per_second(entry)
    speed = f", {rate:,.0f} rows/s" if rate else ""
    return f"{judged:,} judged, {written:,} written{speed}"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"
