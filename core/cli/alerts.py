"""``orderpipe alerts [--json] [--clear]``: what reached the local stack's alerts topic."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from core.cli.aws_errors import aws_errors
from core.cli.context import json_option, resolve_target, stack_options
from core.cli.tables import cell
from core.ops.alerts import AlertsError, AlertsInbox


@click.command("alerts")
@click.option("--clear", is_flag=True, help="Delete the alerts after listing them.")
@json_option
@stack_options
def command(
    *, clear: bool, as_json: bool, stack_name: str | None, endpoint_url: str | None
) -> None:
    """List alerts (failed reconcile runs, reconcile findings, alarms) on the local stack."""
    target = resolve_target(stack_name, endpoint_url)
    with aws_errors(target.where):
        try:
            inbox = AlertsInbox.for_settings(target.clients.sqs, target.settings)
        except AlertsError as exc:
            raise click.ClickException(str(exc)) from None
        alerts = inbox.read(clear=clear)
    if as_json:
        for alert in alerts:
            click.echo(json.dumps(alert.to_json(), separators=(",", ":")))
        return
    console = Console(highlight=False)
    if not alerts:
        console.print("No alerts.")
        return
    table = Table(title=f"alerts ({len(alerts)})", title_justify="left")
    for name in ("sent", "kind", "summary"):
        table.add_column(name, overflow="fold")
    for alert in alerts:
        table.add_row(alert.sent_at or "", alert.kind, cell(alert.summary))
    console.print(table)
