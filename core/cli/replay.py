"""``orderpipe replay [KEY...] [--status ...] [--since 2h] [--prefix P] [--force] [--dry-run]``."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from core import bootstrap
from core.cli.aws_errors import aws_errors
from core.cli.context import json_option, resolve_target, stack_options
from core.cli.tables import Column, emit_table, note, stderr_is_terminal, styled_status
from core.ops.replay import (
    NO_SUCH_OBJECT,
    ReplayError,
    ReplayItem,
    Selection,
    parse_duration,
    parse_statuses,
)

PROGRESS_FROM = 20  # show a bar for replays at least this large


@click.command("replay")
@click.argument("keys", nargs=-1)
@click.option(
    "--status",
    "statuses",
    help="Replay files whose current version is in these statuses, e.g. FAILED,REJECTED,PARTIAL.",
)
@click.option("--since", help="Only files updated (or uploaded) within this long, e.g. 2h, 30m.")
@click.option("--prefix", help="Only keys under incoming/PREFIX.")
@click.option("--force", is_flag=True, help="Replay versions that already SUCCEEDED too.")
@click.option("--reason", default="manual replay", show_default=True, help="Why, for the ledger.")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; send nothing.")
@json_option
@stack_options
def command(
    *,
    keys: tuple[str, ...],
    statuses: str | None,
    since: str | None,
    prefix: str | None,
    force: bool,
    reason: str,
    dry_run: bool,
    as_json: bool,
    stack_name: str | None,
    endpoint_url: str | None,
) -> None:
    """Send files through the pipeline again (after fixing a schema or a rule)."""
    try:
        selection = Selection(
            keys=keys,
            statuses=parse_statuses(statuses) if statuses else (),
            since=parse_duration(since) if since else None,
            prefix=prefix,
            force=force,
        )
    except ReplayError as exc:
        raise click.UsageError(str(exc)) from None
    target = resolve_target(stack_name, endpoint_url)
    replayer = bootstrap.replayer(target.settings, target.clients)
    with aws_errors(target.where):
        try:
            items = replayer.plan(selection)
        except ReplayError as exc:
            raise click.UsageError(str(exc)) from None
        todo = sum(i.action == "replay" for i in items)
        bar = (
            Progress(
                TextColumn("replay"),
                BarColumn(),
                MofNCompleteColumn(),
                transient=True,
                console=Console(stderr=True),
            )
            if todo >= PROGRESS_FROM and not as_json and not dry_run and stderr_is_terminal()
            else None
        )
        if bar is not None:
            bar.start()
            task = bar.add_task("replay", total=len(items))
        try:
            replayer.run(
                items,
                reason=reason,
                dry_run=dry_run,
                progress=(lambda _: bar.advance(task)) if bar is not None else None,
            )
        finally:
            if bar is not None:
                bar.stop()
    missing = [i.key for i in items if i.why == NO_SUCH_OBJECT]
    if as_json or len(missing) < len(items):  # only missing keys: the error line says it all
        _print(items, dry_run=dry_run, as_json=as_json)
    if missing and not as_json:
        click.echo(f"Error: not in the bucket: {', '.join(missing)}", err=True)
    if missing or any(i.action == "replay" and not i.done and not dry_run for i in items):
        raise SystemExit(1)


def _print(items: list[ReplayItem], *, dry_run: bool, as_json: bool) -> None:
    if as_json:
        for item in items:
            click.echo(json.dumps(item.to_json(dry_run), separators=(",", ":")))
        return
    if not items:
        click.echo("Nothing matched.", err=True)
        return
    rows = []
    for item in items:
        row = item.to_json(dry_run)
        status = row["status"]
        rows.append(
            [row["key"], styled_status(status) if status else "-", row["action"], row["why"]]
        )
    emit_table("replay (dry run)" if dry_run else "replay", REPLAY_COLUMNS, rows)
    sent = sum(i.done for i in items)
    planned = sum(i.action == "replay" for i in items)
    if dry_run:
        note(f"Dry run: {planned} file(s) would be replayed; nothing was sent.")
    else:
        note(f"{sent} file(s) re-enqueued; follow them with `orderpipe status`.")


REPLAY_COLUMNS = (
    Column("Key", squeeze=True),
    Column("Was"),
    Column("Action"),
    Column("Why", squeeze=True, min_width=16),
)
