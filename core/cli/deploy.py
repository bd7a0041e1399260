"""``orderpipe deploy --stack NAME``: upload the build, plan a change set, execute, watch."""

from __future__ import annotations

import json
from pathlib import Path

import click

from core import bootstrap
from core.cli.aws_errors import aws_errors
from core.release.deploy import DeployError, DeployRequest, DeployResult, deploy, parse_parameters
from core.release.package import DEFAULT_OUT_DIR
from core.release.template import TEMPLATE_PATH


def _print_result(result: DeployResult) -> None:
    if not result.outputs and result.action in ("created", "updated"):
        click.echo("the stack reported no outputs")
    if result.outputs:
        click.echo("outputs:")
        width = max(len(k) for k in result.outputs)
        for key, value in sorted(result.outputs.items()):
            click.echo(f"  {key:<{width}}  {value}")
    if result.action in ("created", "updated"):
        click.echo(
            f"stack {result.stack_name} {result.action}; "
            f"try: orderpipe status --stack {result.stack_name}"
        )


@click.command("deploy")
@click.option(
    "--stack", "stack_name", required=True, help="CloudFormation stack to create or update."
)
@click.option(
    "--parameter",
    "-p",
    "parameters",
    multiple=True,
    metavar="KEY=VALUE",
    help="Template parameter (repeatable), e.g. SenderAddress=orders@example.com.",
)
@click.option("--dry-run", is_flag=True, help="Print the change set; execute nothing.")
@click.option(
    "--build",
    is_flag=True,
    help="Build the artifacts first (as `orderpipe package`) for the stack's architecture.",
)
@click.option(
    "--artifacts",
    "artifacts_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT_DIR,
    show_default=True,
    help="What `orderpipe package` built.",
)
@click.option(
    "--template",
    "template_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=TEMPLATE_PATH,
    show_default=True,
    help="CloudFormation template.",
)
@click.option(
    "--artifact-bucket",
    default=None,
    help="Bucket for the artifacts (default: orderpipe-artifacts-ACCOUNT-REGION, created).",
)
@click.option(
    "--endpoint-url",
    envvar="AWS_ENDPOINT_URL",
    default=None,
    help="AWS endpoint (an emulator's address); default: AWS itself.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Progress on stderr, a JSON summary on stdout."
)
def command(
    *,
    stack_name: str,
    parameters: tuple[str, ...],
    dry_run: bool,
    build: bool,
    artifacts_dir: Path,
    template_path: Path,
    artifact_bucket: str | None,
    endpoint_url: str | None,
    as_json: bool,
) -> None:
    """Create or update an orderpipe stack through a change set, showing events as they happen.

    Run `orderpipe package` first, or pass --build. The first deploy needs SenderAddress,
    RecipientAddresses and AlertAddress; later ones reuse the stack's values unless given again.
    """

    def say(line: str) -> None:
        click.echo(line, err=as_json)

    clients = bootstrap.clients(endpoint_url)
    try:
        request = DeployRequest(
            stack_name=stack_name,
            parameters=parse_parameters(parameters),
            dry_run=dry_run,
            artifacts_dir=artifacts_dir,
            template_path=template_path,
            artifact_bucket=artifact_bucket,
            build=build,
        )
        with aws_errors(f"deploy {stack_name}"):
            result = deploy(request, clients, say)
    except DeployError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_json(), separators=(",", ":")))
    else:
        _print_result(result)
