"""``orderpipe validate PATH... [--json] [--out DIR] [--schema FILE] [--chunk-rows N]``: check
files locally.

Exit 0 when every file was accepted with every row valid, 1 when any row was invalid or any
file rejected, 2 for usage errors. Whatever a file holds, the answer is an outcome, never a
traceback.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import click

from core.ops.file_list import expand
from core.validation.csv_out import RejectsCsv, ValidCsv
from core.validation.engine import DEFAULT_CHUNK_ROWS, validate
from core.validation.outcome import ChunkResult, Outcome
from core.validation.schema import Schema, SchemaError, default_schema
from core.validation.verdict import PARTIAL, REJECTED, SUCCEEDED, verdict_of, word
from core.validation.visible import visible

SHOWN_REJECTS = 5  # rejected rows printed per file; --out has them all


@click.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, one per line.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write <file>.valid.csv and <file>.rejects.csv into this directory.",
)
@click.option(
    "--schema",
    "schema_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A schema JSON file to use instead of the built-in order-file contract.",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1_000),
    default=DEFAULT_CHUNK_ROWS,
    show_default=True,
    help="Rows judged at a time. Fewer hold less in memory and cost more CPU "
    "(a 1M-row file: 64000 peaks below a plain polars read, about a quarter slower).",
)
def command(
    paths: tuple[Path, ...],
    as_json: bool,
    out_dir: Path | None,
    schema_path: Path | None,
    chunk_rows: int,
) -> None:
    """Validate order files (or every file in a directory) and report each one.

    \b
    Each file is accepted (every row valid), partly accepted (some rows rejected, the valid
    ones would be stored) or rejected (nothing would be stored): the words `upload`,
    `status` and the email use for SUCCEEDED, PARTIAL and REJECTED.
    Exit status: 0 every file accepted; 1 a rejected row or file; 2 a usage error.
    """
    schema = _load_schema(schema_path)
    files = _expand(paths)
    if out_dir is not None:
        _prepare_out(out_dir, files)
    outcomes = []
    for path in files:
        outcome = _validate_one(path, schema, out_dir, chunk_rows)
        outcomes.append(outcome)
        if as_json:
            click.echo(json.dumps(validate_json(outcome), separators=(",", ":")))
        else:
            _print_outcome(outcome, schema)
    if not all(o.clean for o in outcomes):
        raise SystemExit(1)


def _load_schema(path: Path | None) -> Schema:
    try:
        return default_schema() if path is None else Schema.load(path)
    except SchemaError as exc:
        raise click.BadParameter(str(exc), param_hint="--schema") from None


def _expand(paths: tuple[Path, ...]) -> list[Path]:
    files = expand(paths)
    if not files:
        raise click.UsageError("no files to validate")
    return files


def _prepare_out(out_dir: Path, files: list[Path]) -> None:
    names = [p.name for p in files]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise click.UsageError(
            f"--out would write two results for {clashes[0]}: validate same-named files apart"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.UsageError(f"cannot create --out directory {out_dir}: {exc.strerror}") from None


def _validate_one(path: Path, schema: Schema, out_dir: Path | None, chunk_rows: int) -> Outcome:
    name = str(path)
    try:
        if out_dir is None:
            return validate(path, name, schema=schema, chunk_rows=chunk_rows)
        return _validate_to_files(path, name, schema, out_dir, chunk_rows)
    except OSError as exc:
        return Outcome.rejected(name, f"cannot read the file: {exc.strerror or exc}")
    except Exception as exc:  # a file must never crash the command
        return Outcome.rejected(name, f"could not validate the file: {type(exc).__name__}: {exc}")


def _validate_to_files(
    path: Path, name: str, schema: Schema, out_dir: Path, chunk_rows: int
) -> Outcome:
    valid_path = out_dir / f"{path.name}.valid.csv"
    rejects_path = out_dir / f"{path.name}.rejects.csv"
    with _open(valid_path) as valid_stream, _open(rejects_path) as rejects_stream:
        valid_csv = ValidCsv(valid_stream, schema.column_names)
        rejects_csv = RejectsCsv(rejects_stream, schema.column_names)

        def write(chunk: ChunkResult) -> None:
            valid_csv.write(chunk.valid)
            rejects_csv.write(chunk.rejects)

        outcome = validate(path, name, schema=schema, on_chunk=write, chunk_rows=chunk_rows)
    if not outcome.accepted:
        # A rejected file has no rows to show; half-written results would mislead.
        for written in (valid_path, rejects_path):
            written.unlink(missing_ok=True)
    return outcome


@contextlib.contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    try:
        stream = path.open("wb")
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
    with stream:
        yield stream


def validate_json(outcome: Outcome) -> dict[str, Any]:
    """``--json``: the outcome's fields (``status`` accepted/rejected, kept for scripts) and the
    pipeline's verdict for the same file (``outcome``: SUCCEEDED, PARTIAL or REJECTED)."""
    return {**outcome.to_json_dict(), "outcome": verdict_of(outcome)}


VERDICT_COLOUR = {SUCCEEDED: "green", PARTIAL: "yellow", REJECTED: "red"}


def _print_outcome(outcome: Outcome, schema: Schema) -> None:
    """Plain lines that wrap, never cut: every reason and every value is shown whole."""
    width = max(shutil.get_terminal_size((100, 24)).columns, 40)
    verdict = verdict_of(outcome)
    head = click.style(word(verdict), fg=VERDICT_COLOUR[verdict], bold=True)
    if not outcome.accepted:
        click.echo(f"{visible(outcome.file)}: {head}, nothing would be stored")
        _wrapped(f"why: {visible(outcome.error) or 'the file could not be read'}", width)
        click.echo()
        return
    counts = f"{outcome.rows:,} {'row' if outcome.rows == 1 else 'rows'}"
    if outcome.invalid and not outcome.valid:
        counts = f"{outcome.invalid:,} of {counts} rejected, no valid row: nothing would be stored"
    elif outcome.invalid:
        counts = f"{outcome.invalid:,} of {counts} rejected, {outcome.valid:,} valid"
    else:
        counts = f"all {counts} valid"
    click.echo(f"{visible(outcome.file)}: {head}, {counts}")
    if outcome.reasons:
        reasons = ", ".join(
            f"{code} ×{n:,}" for code, n in outcome.top_reasons(len(outcome.reasons))
        )
        _wrapped(f"reasons: {reasons}", width)
    shown = outcome.sample_rejects[:SHOWN_REJECTS]
    if shown:
        more = (
            f" (first {len(shown)} of {outcome.invalid:,})" if len(shown) < outcome.invalid else ""
        )
        click.echo(f"  rejected rows{more}:")
    for row in shown:
        codes = [f"{code}," for code in row.reasons]
        codes[-1] = codes[-1].rstrip(",")
        _wrapped([f"line {row.line}:", *codes], width, indent="    ")
        values = [f"{c}={_shown(row.values.get(c))}" for c in schema.column_names]
        _wrapped(values, width, indent="      ")
    click.echo()


def _shown(value: str | None) -> str:
    """A value as written; quoted when spaces around it (or nothing) would be invisible."""
    if value is None or value == "":
        return "(empty)"
    shown = visible(value)  # control and bidi characters as escapes: nothing in it acts
    return f'"{shown}"' if value != value.strip() or " " in value else shown


def _wrapped(text: str | list[str], width: int, indent: str = "  ") -> None:
    """Greedy wrap on the given tokens (a string splits on spaces); a token is never split."""
    tokens = text.split(" ") if isinstance(text, str) else text
    line = indent
    for token in tokens:
        if line.strip() and len(line) + 1 + len(token) > width - 1:
            click.echo(line)
            line = indent + "  "
        line += ("" if not line.strip() else " ") + token
    click.echo(line)
