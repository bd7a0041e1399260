"""``orderpipe package``: build the Lambda code, its polars layer and the Glue job's files."""

from __future__ import annotations

import json
from pathlib import Path

import click

from core.cli.context import json_option
from core.release.package import (
    ARCHITECTURES,
    DEFAULT_OUT_DIR,
    LAMBDA_UNZIPPED_LIMIT,
    MIB,
    PYTHON_VERSIONS,
    BuildOptions,
    Manifest,
    PackageError,
    Target,
    build,
)


def _mb(size: int) -> str:
    return f"{size / MIB:,.1f} MiB"


def summary_lines(manifest: Manifest, out_dir: Path) -> list[str]:
    lines = [f"built for {manifest.arch} / {manifest.runtime} in {manifest.seconds:.0f} s"]
    lines.append(f"  {'artifact':<46} {'zipped':>10} {'unzipped':>10}")
    for artifact in sorted(manifest.artifacts.values(), key=lambda a: a.role):
        lines.append(
            f"  {artifact.file:<46} {_mb(artifact.zipped_bytes):>10} "
            f"{_mb(artifact.unzipped_bytes):>10}"
        )
    share = manifest.lambda_unzipped_bytes / LAMBDA_UNZIPPED_LIMIT
    lines.append(
        f"  Lambda code + layer unzipped: {_mb(manifest.lambda_unzipped_bytes)} of "
        f"{_mb(LAMBDA_UNZIPPED_LIMIT)} allowed ({share:.0%})"
    )
    for role, shipped in sorted(manifest.modules.items()):
        lines.append(f"  {role} ships {len(shipped)} project files (listed in the manifest)")
    lines += [f"  note: {note}" for note in manifest.notes]
    lines.append(f"in {out_dir}; next: orderpipe deploy --stack NAME")
    return lines


@click.command("package")
@click.option(
    "--arch",
    type=click.Choice(sorted(ARCHITECTURES)),
    default="arm64",
    show_default=True,
    help="Lambda architecture to build for.",
)
@click.option(
    "--python",
    "python_version",
    type=click.Choice(PYTHON_VERSIONS),
    default="3.12",
    show_default=True,
    help="Python version of the Lambda runtime.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT_DIR,
    show_default=True,
    help="Where the artifacts and manifest.json go.",
)
@click.option(
    "--find-links",
    "find_links",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Also take wheels from this folder (a local wheel cache).",
)
@click.option("--no-index", is_flag=True, help="Use only --find-links: no package registry.")
@click.option("--no-strip", is_flag=True, help="Keep native libraries' symbol tables.")
@json_option
def command(
    *,
    arch: str,
    python_version: str,
    out_dir: Path,
    find_links: Path | None,
    no_index: bool,
    no_strip: bool,
    as_json: bool,
) -> None:
    """Build the artifacts `orderpipe deploy` uploads, and report their sizes.

    Manylinux wheels for the target architecture and Python (boto3 is left to the Lambda
    runtime); polars goes into a layer of its own. Fails if code and layer would pass Lambda's
    250 MB unzipped limit.
    """
    if no_index and find_links is None:
        raise click.UsageError("--no-index needs --find-links DIR")
    pip_args: list[str] = []
    if find_links is not None:
        pip_args += ["--find-links", str(find_links)]
    if no_index:
        pip_args.append("--no-index")
    try:
        manifest = build(
            BuildOptions(
                target=Target(arch, python_version),
                out_dir=out_dir,
                pip_args=tuple(pip_args),
                strip=not no_strip,
            )
        )
    except PackageError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(manifest.to_json(), separators=(",", ":")))
        return
    for line in summary_lines(manifest, out_dir):
        click.echo(line)
