"""The ``orderpipe`` command: one click group, one module per command or subgroup.

Expected failures (bad input, a missing stack, an unreachable endpoint) end as one line on
stderr and a non-zero exit; tracebacks are for bugs only. The CLI sits on top: it may
import every room of ``core``, and none of them imports it.
"""

from __future__ import annotations

import importlib
import sys

import click

from core.aws.settings import SettingsError

# Each module defines ``command`` (a click.Command or Group) registered under its own name.
COMMAND_MODULES: tuple[str, ...] = (
    # one line per module, e.g. "validate",
    "validate",
    "dlq",
    "replay",
    "reconcile",
    "alerts",
    "local",
    "worker",
    "upload",
    "status",
    "rejects",
    "console",
    "demo",
    "package",
    "deploy",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="orderpipe")
def cli() -> None:
    """Check, store and explain order files dropped in S3."""


for _name in COMMAND_MODULES:
    _module = importlib.import_module(f"core.cli.{_name}")
    cli.add_command(_module.command)


def main() -> None:
    try:
        cli(prog_name="orderpipe")
    except SettingsError as exc:
        # Configuration read from the environment, outside any one command's options.
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
