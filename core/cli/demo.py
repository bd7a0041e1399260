"""``orderpipe demo``: the whole product on this machine in well under a minute.

Starts the embedded stack (emulator, resources, worker), uploads the sample files, waits for
every outcome and every email, prints what happened, and stops everything it started.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

import core
from core import bootstrap
from core.aws.clients import Clients
from core.aws.settings import Settings
from core.cli.aws_errors import aws_errors
from core.cli.tables import table_console
from core.cli.upload import emit_outcomes
from core.local.embedded import EmbeddedConfig, EmbeddedStack
from core.local.emulator import EmulatorError
from core.local.local_state import state_dir
from core.ops.upload import FileResult, plan, wait_for_outcomes
from core.pipeline.ingest import rejects_key_for
from core.pipeline.ledger import DynamoLedger, Status
from core.validation.verdict import refused_whole
from core.validation.visible import visible

FIXTURES = Path(core.__file__).resolve().parent.parent / "fixtures"
SEED_SAMPLES = ("test_data1.csv", "test_data2.csv")  # the order files the project started from
OUTCOME_TIMEOUT_S = 60.0
EMAIL_TIMEOUT_S = 30.0


def demo_files(folder: Path) -> list[Path]:
    """The two seed samples and the files in fixtures/demo/ (other fixtures serve the tests)."""
    seeds = [folder / name for name in SEED_SAMPLES if (folder / name).is_file()]
    extra = sorted(p for p in (folder / "demo").glob("*") if p.is_file())
    return [p for p in seeds + extra if not p.name.startswith(".")]


def _say(line: str) -> None:
    click.echo(line, err=True)


@click.command("demo")
@click.option(
    "--files",
    "folder",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of sample files (default: the project's fixtures/).",
)
@click.option(
    "--outbox",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the emails are written as .eml (default: demo-outbox/ in the state folder).",
)
def command(*, folder: Path | None, outbox: Path | None) -> None:
    """Start the pipeline here, feed it the sample files, show the outcomes, stop."""
    started = time.monotonic()
    folder = folder or FIXTURES
    files = demo_files(folder) if folder.is_dir() else []
    if not files:
        raise click.ClickException(f"no sample files in {folder}")
    outbox = (outbox or state_dir() / "demo-outbox").resolve()
    _empty_outbox(outbox)
    logs = Path(tempfile.mkdtemp(prefix="orderpipe-demo-"))
    config = EmbeddedConfig(state_dir=logs, outbox_dir=outbox, env_name="demo", save_state=False)
    _say("starting the emulator, the stack and a worker…")
    stack = EmbeddedStack(config, notice=_say)
    ok = False
    try:
        try:
            stack.start()
        except EmulatorError as exc:
            raise click.ClickException(f"{exc} (logs in {logs})") from None
        # Both are set once start() returned; the asserts narrow the types for mypy.
        assert stack.clients is not None  # nosec B101
        assert stack.settings is not None  # nosec B101
        _say(f"ready after {time.monotonic() - started:.1f} s at {stack.endpoint}")
        with aws_errors("demo"):
            ok = _run(stack.clients, stack.settings, files, outbox)
    finally:
        stack.stop()
        if ok:
            shutil.rmtree(logs, ignore_errors=True)
    if not ok:
        raise click.ClickException(f"the demo did not complete; worker log in {logs}")
    _say(f"done in {time.monotonic() - started:.1f} s; nothing left running.")
    _say(
        "to see files, rejected rows and dead letters in a browser: "
        "`orderpipe local` in one terminal, `orderpipe console` in another"
    )


def _run(clients: Clients, settings: Settings, files: list[Path], outbox: Path) -> bool:
    uploader = bootstrap.uploader(settings, clients)
    ledger = bootstrap.ledger(settings, clients)
    _say(f"uploading {len(files)} files to s3://{settings.bucket}/incoming/ …")
    uploads = [uploader.put(path, key) for path, key in plan(files)]
    results = wait_for_outcomes(ledger, uploads, OUTCOME_TIMEOUT_S)
    # The demo's stack is gone once it ends, so `status KEY` cannot show a file whole; the
    # email can: it names every file that was not accepted, with its full reason.
    emit_outcomes(results, in_full="Each file in full: the email listed below")
    console = table_console()
    orders = count_items(clients.dynamodb, settings.orders_table)
    console.print(f"orders stored: [bold]{orders:,}[/] in DynamoDB table {settings.orders_table}")
    emails = _await_emails(ledger, results, outbox)
    rejects = sorted(
        f"s3://{settings.bucket}/{rejects_key_for(r.upload.key)}"
        for r in results
        # Every file with rejected rows has its CSV, PARTIAL or REJECTED because none was valid.
        if r.entry is not None
        and r.entry.invalid
        and r.entry.status in (Status.PARTIAL, Status.REJECTED)
        and not refused_whole(r.entry.status, r.entry.error)
    )
    if rejects:
        console.print("rejected rows as CSV:")
        for key in rejects:
            console.print(f"  {key}", soft_wrap=True)
    console.print(f"emails: [bold]{len(emails)}[/] in {outbox}")
    for path in emails:
        # Whole, never wrapped mid-subject: a long line is the terminal's to wrap.
        console.print(f"  {path.name}  [dim]{escape(visible(_subject(path)))}[/]", soft_wrap=True)
    finished = all(r.entry is not None and r.entry.finished for r in results)
    return finished and (bool(emails) or not _needs_email(results))


def _needs_email(results: list[FileResult]) -> list[str]:
    return [
        r.entry.file_id
        for r in results
        if r.entry is not None and r.entry.status in (Status.PARTIAL, Status.REJECTED)
    ]


def _await_emails(ledger: DynamoLedger, results: list[FileResult], outbox: Path) -> list[Path]:
    """Wait until every file with rejected rows has been notified (the notify batch window)."""
    waiting = set(_needs_email(results))
    deadline = time.monotonic() + EMAIL_TIMEOUT_S
    while waiting and time.monotonic() < deadline:
        for file_id in list(waiting):
            entry = ledger.get(file_id)
            if entry is not None and entry.notified_at:
                waiting.discard(file_id)
        if waiting:
            time.sleep(0.2)
    if waiting:
        _say(f"{len(waiting)} file(s) not notified after {EMAIL_TIMEOUT_S:g} s")
    return sorted(outbox.glob("*.eml"))


def count_items(dynamodb: Any, table: str) -> int:
    pages = dynamodb.get_paginator("scan").paginate(TableName=table, Select="COUNT")
    return sum(int(page.get("Count", 0)) for page in pages)


def _subject(path: Path) -> str:
    with path.open("rb") as stream:
        message = BytesParser(policy=policy.default).parse(stream, headersonly=True)
    return str(message.get("Subject", ""))


def _empty_outbox(outbox: Path) -> None:
    """Last run's emails would read as this run's: remove them (only .eml files)."""
    try:
        outbox.mkdir(parents=True, exist_ok=True)
        for old in outbox.glob("*.eml"):
            old.unlink()
    except OSError as exc:
        raise click.ClickException(f"cannot use outbox {outbox}: {exc.strerror or exc}") from None
