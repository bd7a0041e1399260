"""``orderpipe reconcile [--window 2h] [--grace 5m] [--dry-run] [--json]``: run it now."""

from __future__ import annotations

import json

import click

from core import bootstrap
from core.cli.aws_errors import aws_errors
from core.cli.context import json_option, resolve_target, stack_options
from core.ops.reconcile import ReconcileOptions
from core.ops.replay import ReplayError, parse_duration


def _seconds(text: str, option: str) -> int:
    try:
        return int(parse_duration(text).total_seconds())
    except ReplayError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


@click.command("reconcile")
@click.option("--window", default="2h", show_default=True, help="Objects changed within this.")
@click.option(
    "--grace", default="5m", show_default=True, help="Younger objects may still get their event."
)
@click.option("--dry-run", is_flag=True, help="Only report: re-enqueue, write and publish nothing.")
@json_option
@stack_options
def command(
    *,
    window: str,
    grace: str,
    dry_run: bool,
    as_json: bool,
    stack_name: str | None,
    endpoint_url: str | None,
) -> None:
    """Compare the bucket with the ledger: re-enqueue lost and stuck files, report drift."""
    window_s, grace_s = _seconds(window, "--window"), _seconds(grace, "--grace")
    target = resolve_target(stack_name, endpoint_url)
    options = ReconcileOptions(
        window_s=window_s,
        grace_s=grace_s,
        function_timeout_s=target.settings.function_timeout_s,
        dry_run=dry_run,
    )
    with aws_errors(target.where):
        report = bootstrap.reconciler(target.settings, target.clients).run(options)
    doc = report.to_json()
    if as_json:
        click.echo(json.dumps(doc, separators=(",", ":")))
        return
    click.echo(f"Reconcile of s3://{report.bucket}/ from {report.since} to {report.until}")
    click.echo(f"  {report.summary_line()}; {report.in_grace} within the grace period")
    for kind in ("missing", "stuck", "drift", "failed"):
        for item in doc[kind][:20]:
            extra = ""
            if kind == "drift":
                extra = f" valid {item['valid']}, stored {item['stored']}"
            elif kind == "failed":
                extra = f" {item.get('last_error') or ''}"
            elif "action" in item:
                extra = f" ({item['action']})"
            click.echo(f"  {kind:7} {item['key']}{extra}")
    if dry_run:
        click.echo("Dry run: nothing re-enqueued, no report written, no alert published.")
    else:
        click.echo(
            f"  re-enqueued {report.requeued}; report s3://{report.bucket}/{report.report_key}"
        )
