"""The ``orderpipe`` command: one click group, one module per command or subgroup.

Expected failures (bad input, a missing stack, an unreachable endpoint) end as one line on
stderr and a non-zero exit; tracebacks are for bugs only. The CLI sits on top: it may
import every room of ``core``, and none of them imports it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click
from click.exceptions import NoArgsIsHelpError

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


class OrderpipeGroup(click.Group):
    """The ``orderpipe`` group: a usage error is one line on stderr, like every other error.

    click's own standalone mode prints the usage and a hint around it (three lines); here the
    hint shares the error's line and the exit status stays 2.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:
            click.echo(exc.format_message(), err=True)  # `orderpipe` alone: the help
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "orderpipe"
            click.echo(f"Error: {exc.format_message()} (see `{where} -h`)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except BrokenPipeError:
            sys.exit(1)  # the reader went away (`| head`): nothing left to say
        sys.exit(code if isinstance(code, int) else 0)


@click.group(
    cls=OrderpipeGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
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
