"""How every command finds its stack: ``--stack`` outputs, a running local stack, or the env.

Shared option decorators live here so each command spells them the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from core import bootstrap
from core.aws.clients import Clients
from core.aws.settings import Settings, SettingsError
from core.aws.stack_outputs import settings_from_stack
from core.local.emulator import use_emulator_credentials
from core.local.local_state import LocalState

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Target:
    clients: Clients
    settings: Settings
    where: str  # "local", "stack NAME" or "environment", for messages


def stack_options(func: F) -> F:
    """``--stack`` and ``--endpoint-url``, shared by every command that talks to AWS."""
    func = click.option(
        "--endpoint-url",
        envvar="AWS_ENDPOINT_URL",
        default=None,
        help="AWS endpoint (the local emulator's address); default: AWS itself.",
    )(func)
    return click.option(
        "--stack",
        "stack_name",
        default=None,
        help="CloudFormation stack whose outputs name the bucket, queues and tables.",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")(func)


def resolve_target(stack_name: str | None, endpoint_url: str | None) -> Target:
    """Pick the stack a command acts on; raise click.ClickException with one line if none."""
    if stack_name:
        clients = bootstrap.clients(endpoint_url)
        try:
            settings = settings_from_stack(clients, stack_name)
        except SettingsError as exc:
            raise settings_error(exc) from None
        return Target(clients, settings, f"stack {stack_name}")
    local = LocalState.load()
    if local is not None and (endpoint_url in (None, local.endpoint)):
        use_emulator_credentials()  # the emulator takes any key; never send a real one to it
        return Target(bootstrap.clients(local.endpoint), local.settings, "local")
    settings = Settings.from_env()
    if not settings.bucket:
        raise click.ClickException(
            "no stack found: start one with `orderpipe local`, or pass --stack NAME"
        )
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    return Target(bootstrap.clients(endpoint), settings, "environment")


def settings_error(exc: SettingsError) -> click.ClickException:
    return click.ClickException(str(exc))
