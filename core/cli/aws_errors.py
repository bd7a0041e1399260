"""Turn the AWS failures a person can fix into one line and a non-zero exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from core.aws.settings import SettingsError


@contextlib.contextmanager
def aws_errors(where: str) -> Iterator[None]:
    """Re-raise credential, endpoint and API errors as ``click.ClickException`` (one line)."""
    try:
        yield
    except NoCredentialsError:
        raise click.ClickException(
            "no AWS credentials: configure a profile, or start `orderpipe local`"
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "Error")
        message = error.get("Message") or str(exc)
        raise click.ClickException(f"{where}: {code}: {message}") from None
    except BotoCoreError as exc:
        raise click.ClickException(f"{where}: {exc}") from None
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
