"""``orderpipe rejects KEY [--out PATH | --link]``: a file's rejected rows, any time later.

The email attaches the rejects CSV when it fits and links it otherwise; a link dies with the
credentials that signed it. This command fetches the same object from ``rejects/`` with the
caller's own credentials for as long as the bucket keeps it.
"""

from __future__ import annotations

import sys
from datetime import UTC
from pathlib import Path, PurePosixPath

import click
from botocore.exceptions import BotoCoreError, ClientError

from core import bootstrap
from core.aws.settings import INCOMING_PREFIX
from core.aws.signing import SIGV4_MAX_EXPIRY_S
from core.cli.aws_errors import aws_errors
from core.cli.context import Target, resolve_target, stack_options
from core.ops.rejects import NoRejectsError, RejectsObjects
from core.pipeline.ledger import FINISHED, Status
from core.validation.verdict import refused_whole, word
from core.validation.visible import visible


@click.command("rejects")
@click.argument("key")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the CSV here ('-' for stdout); default: <name>-rejects.csv in this folder.",
)
@click.option(
    "--link",
    "link_hours",
    type=click.IntRange(min=1, max=SIGV4_MAX_EXPIRY_S // 3600),
    default=None,
    help="Print a download link valid for up to this many hours instead (signed by you).",
)
@stack_options
def command(
    *,
    key: str,
    out_path: str | None,
    link_hours: int | None,
    stack_name: str | None,
    endpoint_url: str | None,
) -> None:
    """Fetch the rejected rows of an uploaded file (the CSV its email attached or linked)."""
    target = resolve_target(stack_name, endpoint_url)
    source = key if key.startswith(INCOMING_PREFIX) else INCOMING_PREFIX + key.lstrip("/")
    objects = RejectsObjects(target.clients.s3, target.settings.bucket)
    with aws_errors(f"read s3://{target.settings.bucket}/{objects.key_for(source)}"):
        try:
            if link_hours is not None:
                link = objects.link(source, link_hours * 3600)
                click.echo(link.url)
                until = (
                    link.expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
                    if link.expires_at
                    else "unknown (your credentials do not say when they expire)"
                )
                click.echo(f"valid until {until}", err=True)
                return
            if out_path == "-":
                objects.download(source, sys.stdout.buffer)
                return
            path = Path(out_path or f"{PurePosixPath(source).stem}-rejects.csv")
            partial = path.with_name(path.name + ".part")
            try:
                with partial.open("wb") as out:
                    size = objects.download(source, out)
                partial.replace(path)  # never a half-written CSV under the final name
            finally:
                partial.unlink(missing_ok=True)
        except NoRejectsError as exc:
            raise click.ClickException(_why_none(target, source) or str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"cannot write {out_path}: {exc.strerror}") from None
    click.echo(f"{size:,} bytes written to {path}")


def _why_none(target: Target, source: str) -> str | None:
    """Why ``source`` has no rejects CSV, from the ledger; None when it cannot tell (no rights
    to read the ledger, or a partly accepted file whose CSV expired): the S3 answer stands."""
    try:
        entries = bootstrap.ledger(target.settings, target.clients).for_key(
            target.settings.bucket, source
        )
    except (ClientError, BotoCoreError):
        return None
    shown = visible(source)
    if not entries:
        return (
            f"no rejects for {shown}: no upload with that key in the ledger ({target.where});"
            " `orderpipe status` lists the keys"
        )
    newest = entries[0]
    if newest.status == Status.SUCCEEDED:
        return f"no rejects for {shown}: it was accepted, every row valid"
    if refused_whole(newest.status, newest.error):
        why = visible(newest.error) or "the file was refused"
        return f"no rejects for {shown}: it was rejected whole, so no row was judged ({why})"
    if newest.status == Status.FAILED:
        why = visible(newest.error or newest.last_error) or "see `orderpipe dlq list`"
        return f"no rejects for {shown}: it failed before it was judged ({why})"
    if newest.status not in FINISHED:
        return f"no rejects for {shown} yet: it is {word(newest.status)} (`orderpipe status`)"
    return None
