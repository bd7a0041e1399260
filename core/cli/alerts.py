"""``orderpipe alerts [--json] [--clear]``: what reached the local stack's alerts topic."""

from __future__ import annotations

import json

import click

from core.cli.aws_errors import aws_errors
from core.cli.context import json_option, resolve_target, stack_options
from core.cli.tables import Column, emit_table, note, stdout_is_terminal
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
    if not alerts:
        click.echo("No alerts.", err=True)
        return
    terminal = stdout_is_terminal()
    emit_table(
        f"alerts ({len(alerts)}), oldest first",
        ALERT_COLUMNS,
        [
            [
                (a.sent_at or "")[5:19].replace("T", " ") if terminal else a.sent_at or "",
                a.kind,
                a.summary,
            ]
            for a in alerts
        ],
    )
    note("Each in full: orderpipe alerts --json")


ALERT_COLUMNS = (Column("Sent UTC"), Column("Kind"), Column("Summary", squeeze=True, min_width=20))
