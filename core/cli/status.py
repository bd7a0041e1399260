"""``orderpipe status [KEY...] [--json]``: the ledger, newest first, with timings and attempts.

Without keys: the most recently updated files. With keys (``incoming/x.csv`` or just
``x.csv``): every version of those objects the pipeline has seen.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from core import bootstrap
from core.aws.settings import INCOMING_PREFIX
from core.cli.aws_errors import aws_errors
from core.cli.context import json_option, resolve_target, stack_options
from core.cli.tables import (
    OUTCOME_COLUMNS,
    cell,
    reasons_text,
    styled_status,
    table_console,
    titled_table,
)
from core.pipeline.ledger import ALL_STATUSES, DynamoLedger, LedgerEntry


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
    """Show what the pipeline did with each file: outcome, counts, timings, attempts."""
    target = resolve_target(stack_name, endpoint_url)
    ledger = bootstrap.ledger(target.settings, target.clients)
    with aws_errors(f"read the ledger {target.settings.files_table}"):
        entries = _entries(ledger, target.settings.bucket, keys, limit, only)
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry_json(entry), separators=(",", ":")))
        return
    console = table_console()
    if not entries:
        console.print(f"no files in the ledger yet ({target.where})")
        return
    console.print(ledger_table(entries))


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


def entry_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "key": entry.object_key,
        "status": str(entry.status),
        "rows": entry.rows,
        "valid": entry.valid,
        "invalid": entry.invalid,
        "reasons": dict(entry.reasons),
        "error": entry.error,
        "last_error": entry.last_error,
        "attempts": entry.attempts,
        "version": entry.version or None,
        "file_id": entry.file_id,
        "size": entry.size,
        "received_at": entry.received_at,
        "started_at": entry.started_at,
        "finished_at": entry.finished_at,
        "queued_seconds": _seconds_between(entry.event_time or None, entry.started_at),
        "processing_seconds": entry.seconds(),
        "notified_at": entry.notified_at,
        "replays": entry.replays,
    }


def ledger_table(entries: list[LedgerEntry]) -> Table:
    table = titled_table(
        "Ledger (newest first)",
        [
            ("Received UTC", "left"),
            ("Key", "left"),
            *OUTCOME_COLUMNS,
            ("Queued s", "right"),
            ("Took s", "right"),
            ("Attempts", "right"),
        ],
    )
    for entry in entries:
        data = entry_json(entry)
        reasons = reasons_text(entry.reasons)
        detail = entry.error or reasons or ("" if entry.finished else entry.last_error or "")
        table.add_row(
            entry.received_at[5:19].replace("T", " "),
            cell(entry.object_key),
            styled_status(str(entry.status)),
            f"{entry.rows:,}",
            f"{entry.valid:,}",
            f"{entry.invalid:,}",
            cell(detail),
            _fmt(data["queued_seconds"]),
            _fmt(data["processing_seconds"]),
            str(entry.attempts),
        )
    return table


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"
