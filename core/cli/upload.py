"""``orderpipe upload PATH... [--wait] [--json]``: put files under incoming/, maybe wait.

With ``--wait``, each file's ledger outcome is awaited and reported with the same counts and
reason codes as ``orderpipe validate --json``. Exit 0 when every file was stored (and, with
``--wait``, came out SUCCEEDED); 1 when any file had rejected rows, was rejected, failed or
timed out; 2 for usage errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from core import bootstrap
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
from core.ops.upload import (
    MIB,
    FileResult,
    Uploaded,
    UploadError,
    plan,
    total_size,
    wait_for_outcomes,
)

PROGRESS_FILES = 4  # a bar for this many files or more...
PROGRESS_BYTES = 8 * MIB  # ...or this much data


@click.command("upload")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--wait", is_flag=True, help="Wait for each file's outcome in the ledger.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=300.0,
    show_default=True,
    help="With --wait: seconds to wait for all outcomes.",
)
@click.option("--prefix", default="", help="Sub-folder under incoming/ to put the files in.")
@json_option
@stack_options
def command(
    *,
    paths: tuple[Path, ...],
    wait: bool,
    timeout: float,
    prefix: str,
    as_json: bool,
    stack_name: str | None,
    endpoint_url: str | None,
) -> None:
    """Upload order files (or every file in a directory) under incoming/."""
    try:
        pairs = plan(paths, prefix)
    except UploadError as exc:
        raise click.UsageError(str(exc)) from None
    target = resolve_target(stack_name, endpoint_url)
    err = Console(stderr=True, highlight=False)
    uploader = bootstrap.uploader(target.settings, target.clients)
    show_bar = len(pairs) >= PROGRESS_FILES or total_size(p for p, _ in pairs) >= PROGRESS_BYTES
    uploads: list[Uploaded] = []
    with aws_errors(f"upload to s3://{target.settings.bucket}"), _bar(err, show_bar) as bar:
        task = bar.add_task("uploading", total=total_size(p for p, _ in pairs))
        for path, key in pairs:
            bar.update(task, description=path.name)
            try:
                uploaded = uploader.put(path, key, lambda n: bar.advance(task, n))
            except UploadError as exc:
                raise click.ClickException(str(exc)) from None
            uploads.append(uploaded)
            if not wait:
                _report_upload(uploaded, as_json, err)
    if not wait:
        return
    ledger = bootstrap.ledger(target.settings, target.clients)
    console = table_console()
    with aws_errors("read the ledger"):
        if as_json:
            results = wait_for_outcomes(
                ledger, uploads, timeout, on_result=lambda r: click.echo(_json_line(r))
            )
        else:
            with err.status(f"waiting for {len(uploads)} outcome(s)…"):
                results = wait_for_outcomes(ledger, uploads, timeout)
            console.print(outcome_table(results))
    pending = [r for r in results if r.status in ("PENDING", "PROCESSING", "FAILED")]
    if pending and not as_json:
        err.print(f"{len(pending)} file(s) without a final outcome after {timeout:g} s")
    if not all(r.clean for r in results):
        raise SystemExit(1)


def _bar(console: Console, show: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not show,
    )


def _report_upload(uploaded: Uploaded, as_json: bool, err: Console) -> None:
    if as_json:
        line = {
            "key": uploaded.key,
            "status": "UPLOADED",
            "version": uploaded.version or None,
            "etag": uploaded.etag,
            "size": uploaded.size,
        }
        click.echo(json.dumps(line, separators=(",", ":")))
    else:
        version = f" (version {uploaded.version})" if uploaded.version else ""
        click.echo(f"uploaded {uploaded.key}{version}, {uploaded.size:,} bytes")


def _json_line(result: FileResult) -> str:
    return json.dumps(result.to_json_dict(), separators=(",", ":"))


def outcome_table(results: list[FileResult]) -> Table:
    table = titled_table(
        "Outcomes",
        [
            ("Key", "left"),
            *OUTCOME_COLUMNS,
            ("Seconds", "right"),
        ],
    )
    for result in results:
        data = result.to_json_dict()
        detail = data["error"] or reasons_text(data["reasons"])
        table.add_row(
            cell(data["key"]),
            styled_status(data["status"]),
            _num(data["rows"]),
            _num(data["valid"]),
            _num(data["invalid"]),
            cell(detail),
            "" if data["seconds"] is None else f"{data['seconds']:.2f}",
        )
    return table


def _num(value: int | None) -> str:
    return "" if value is None else f"{value:,}"
