"""``orderpipe upload PATH... [--wait] [--json]``: put files under incoming/, maybe wait.

With ``--wait``, each file's ledger outcome is awaited and reported with the same counts and
reason codes as ``orderpipe validate --json``. Exit 0 when every file was stored (and, with
``--wait``, came out SUCCEEDED); 1 when any file had rejected rows, was rejected, failed or
timed out; 2 for usage errors.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from core import bootstrap
from core.aws.settings import INCOMING_PREFIX
from core.cli.aws_errors import aws_errors
from core.cli.context import json_option, resolve_target, stack_options
from core.cli.status import IN_FULL, rows_per_second
from core.cli.tables import (
    Column,
    emit_table,
    note,
    one_line,
    reasons_text,
    stdout_is_terminal,
    styled_status,
)
from core.ops.upload import (
    MIB,
    FileResult,
    Uploaded,
    UploadError,
    is_final,
    plan,
    total_size,
    wait_for_outcomes,
)
from core.pipeline.ledger import LedgerEntry
from core.validation.verdict import refused_whole, verdict_code, word

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
    with aws_errors("read the ledger"):
        if as_json:
            results = wait_for_outcomes(
                ledger, uploads, timeout, on_result=lambda r: click.echo(_json_line(r))
            )
        else:
            with WaitProgress(err, uploads) as progress:
                results = wait_for_outcomes(ledger, uploads, timeout, on_poll=progress.update)
            emit_outcomes(results)
    pending = [r for r in results if r.status in ("PENDING", "PROCESSING", "FAILED")]
    if pending and not as_json:
        click.echo(f"{len(pending)} file(s) without a final outcome after {timeout:g} s", err=True)
    if not all(r.clean for r in results):
        raise SystemExit(1)


class WaitProgress:
    """Each file's rows judged and rows/s while it is processed.

    A terminal gets a live bar per file (on stderr, gone once every outcome is in); a pipe
    gets a plain line on stderr when a file starts, every few seconds while it runs, and
    nothing else: the outcomes themselves go to stdout.
    """

    PLAIN_EVERY_S = 5.0

    def __init__(self, err: Console, uploads: list[Uploaded]) -> None:
        self.uploads = uploads
        self.live = err.is_terminal
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[state]}"),
            console=err,
            transient=True,
            disable=not self.live,
        )
        self.tasks = [  # a live bar is for people: keys as `status` shows them
            self.bar.add_task(u.key.removeprefix(INCOMING_PREFIX), total=None, state="waiting")
            for u in uploads
        ]
        self.said: dict[int, tuple[str, float]] = {}
        self.started = time.monotonic()

    def __enter__(self) -> WaitProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def update(self, index: int, entry: LedgerEntry | None) -> None:
        state, judged = _progress_state(entry)
        if self.live:
            # The bar is the writing: rows written of the rows judged so far.
            written = (getattr(entry, "rows_written", 0) or 0) if entry is not None else 0
            if entry is not None and is_final(entry):
                self.bar.update(self.tasks[index], state=state, completed=1, total=1)
            else:
                self.bar.update(
                    self.tasks[index],
                    state=state,
                    completed=written,
                    total=judged or None,
                )
            return
        now = time.monotonic()
        last = self.said.get(index)
        if entry is None or is_final(entry) or now - self.started < self.PLAIN_EVERY_S:
            return  # a file done within seconds needs no progress line
        if last is None or (last[0] != state and now - last[1] >= self.PLAIN_EVERY_S):
            self.said[index] = (state, now)
            click.echo(f"{self.uploads[index].key}: {state}", err=True)


def _progress_state(entry: LedgerEntry | None) -> tuple[str, int]:
    if entry is None:
        return word("PENDING"), 0
    if entry.finished and refused_whole(str(entry.status), entry.error):
        return word(str(entry.status)), 0  # refused as a file: it has no rows to count
    if entry.finished:
        return f"{word(str(entry.status))}, {entry.rows:,} rows", entry.rows
    judged = getattr(entry, "rows_judged", 0) or 0
    if not judged:
        return word(str(entry.status)), 0
    rate = rows_per_second(entry)
    speed = f", {rate:,.0f} rows/s" if rate else ""
    written = getattr(entry, "rows_written", 0) or 0
    return f"{word(str(entry.status))}: {judged:,} rows judged, {written:,} written{speed}", judged


def _bar(console: Console, show: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not show or not console.is_terminal,
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
    body = result.to_json_dict()
    body["outcome"] = verdict_code(body["status"])
    return json.dumps(body, separators=(",", ":"))


OUTCOME_COLUMNS = (
    Column("Key", squeeze=True),
    Column("Outcome"),
    Column("Rows", "right"),
    Column("Bad", "right"),
    Column("Reasons / error", squeeze=True, min_width=16),
    Column("Secs", "right", optional=True),
)


OUTCOMES_TITLE = f"Outcomes (keys under {INCOMING_PREFIX})"


def emit_outcomes(
    results: list[FileResult], title: str = OUTCOMES_TITLE, in_full: str = IN_FULL
) -> None:
    """The files' outcomes: a table that fits the terminal, keys without ``incoming/`` and
    errors cut to one line, then ``in_full``, where to read one whole; in a pipe, full
    tab-separated rows and nothing else."""
    terminal = stdout_is_terminal()
    rows: list[list[str | Text]] = []
    for result in results:
        data = result.to_json_dict()
        detail = data["error"] or reasons_text(data["reasons"])
        # Refused as a file, no row was counted: a blank, not 0, for people (a pipe keeps 0).
        whole = refused_whole(data["status"], data["error"]) and terminal
        rows.append(
            [
                data["key"].removeprefix(INCOMING_PREFIX) if terminal else data["key"],
                styled_status(data["status"]),
                "" if whole else _num(data["rows"]),
                "" if whole else _num(data["invalid"]),
                one_line(detail),
                "" if data["seconds"] is None else f"{data['seconds']:.1f}",
            ]
        )
    emit_table(title, OUTCOME_COLUMNS, rows)
    note(in_full)


def _num(value: int | None) -> str:
    return "" if value is None else f"{value:,}"
