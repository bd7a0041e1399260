"""``orderpipe deploy`` against moto's CloudFormation over HTTP: create, update, no change,
dry run, and the one-line refusals.

What moto's CloudFormation skips (queue/topic policies, Glue, SES, alarms, bucket
notifications) is asserted on the template by tests/unit/test_template.py instead.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from core.aws.clients import Clients
from core.aws.stack_outputs import settings_from_stack
from core.cli import cli
from core.release.deploy import DeployRequest, deploy
from core.release.package import (
    Artifact,
    BuildOptions,
    Manifest,
    Target,
    deterministic_zip,
    file_sha256,
    write_wheel,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _emulator_change_sets() -> Iterator[None]:
    """Work around two gaps of moto's (in-process) change sets, not of deploy: executing one
    leaves the stack without its template's outputs and with its creation-time parameters."""
    from moto.cloudformation.models import ChangeSet

    if not hasattr(ChangeSet, "apply"):
        pytest.skip("this moto version changed its change set model")
    original = ChangeSet.apply

    def apply(self: Any) -> None:
        original(self)
        stack = self.stack
        stack.template = self.template
        stack._parse_template()
        stack.output_map = stack._create_output_map()
        stack.parameters = self.parameters

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ChangeSet, "apply", apply)
        yield


@pytest.fixture(scope="module", autouse=True)
def _forget_this_modules_functions(moto_endpoint: str) -> Iterator[None]:
    """The Lambda functions these stacks create make moto's state dump (how other modules read
    the emails SES recorded) try to reach a Docker daemon, so they must not outlive the module.
    Every other module builds its own uniquely named stack, so a reset between modules is safe."""
    yield
    from urllib.request import Request, urlopen

    with urlopen(Request(f"{moto_endpoint}/moto-api/reset", method="POST")):
        pass


def fake_build(out: Path, arch: str = "arm64", python: str = "3.12") -> Manifest:
    """Small stand-ins for what `orderpipe package` builds (moto never runs them)."""
    out.mkdir(parents=True, exist_ok=True)
    src = out.parent / "src"
    (src / "handlers").mkdir(parents=True, exist_ok=True)
    (src / "handlers" / "__init__.py").write_text("")
    deterministic_zip(src, out / "function.zip")
    deterministic_zip(src, out / "deps-layer.zip", prefix="python/")
    (out / "reconcile_job.py").write_text("print('reconcile')\n")
    wheel = write_wheel(out, "orderpipe_reconcile", "0.1.0", {"core/__init__.py": b""})
    files = {
        "code": "function.zip",
        "layer": "deps-layer.zip",
        "reconcile_script": "reconcile_job.py",
        "reconcile_wheel": wheel.name,
    }
    artifacts = {}
    for role, name in files.items():
        path = out / name
        size = path.stat().st_size
        artifacts[role] = Artifact(role, name, file_sha256(path), size, size)
    manifest = Manifest(arch, python, artifacts)
    manifest.save(out)
    return manifest


@pytest.fixture
def deploy_env(moto_endpoint: str, tmp_path: Path) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    return {
        "endpoint": moto_endpoint,
        "stack": f"op-{suffix}",
        "env": f"d{suffix}",
        "bucket": f"op-artifacts-{suffix}",
        "artifacts": tmp_path / "dist",
        "manifest": fake_build(tmp_path / "dist"),
        "clients": Clients(endpoint_url=moto_endpoint, max_attempts=1),
    }


ADDRESSES = {
    "SenderAddress": "orders@example.com",
    "RecipientAddresses": "a@example.com,b@example.com",
    "AlertAddress": "ops@example.com",
}


def params(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("-p", f"{key}={value}")]


PEOPLE = params(ADDRESSES)


def run(env: dict[str, Any], *args: str) -> Result:
    return CliRunner().invoke(
        cli,
        [
            "deploy",
            "--stack",
            env["stack"],
            "--endpoint-url",
            env["endpoint"],
            "--artifacts",
            str(env["artifacts"]),
            "--artifact-bucket",
            env["bucket"],
            *args,
        ],
    )


def stack_events(env: dict[str, Any]) -> int:
    cf = env["clients"].cloudformation
    return len(cf.describe_stack_events(StackName=env["stack"])["StackEvents"])


@pytest.mark.slow
def test_create_then_update_then_no_change(deploy_env: dict[str, Any]) -> None:
    env, clients = deploy_env, deploy_env["clients"]
    created = run(env, "-p", f"EnvName={env['env']}", *PEOPLE)
    assert created.exit_code == 0, created.output
    out = created.output
    assert f"created artifact bucket {env['bucket']}" in out
    assert out.count("uploaded ") == 4
    assert "Add     IngestFunction (AWS::Lambda::Function)" in out
    assert "CREATE_COMPLETE" in out  # a stack event, shown as it happened
    assert f"stack {env['stack']} created" in out
    bucket_name = f"orderpipe-{env['env']}-orders-123456789012-us-east-1"
    assert f"OrdersBucketName       {bucket_name}" in out

    # The artifact bucket is private and encrypted, and holds the content-addressed build.
    s3 = clients.s3
    block = s3.get_public_access_block(Bucket=env["bucket"])["PublicAccessBlockConfiguration"]
    assert all(block.values())
    rules = s3.get_bucket_encryption(Bucket=env["bucket"])["ServerSideEncryptionConfiguration"]
    assert rules["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    for artifact in env["manifest"].artifacts.values():
        s3.head_object(Bucket=env["bucket"], Key=artifact.key)

    # What the template declared exists, under the names the CLI reads back from the outputs.
    settings = settings_from_stack(clients, env["stack"])
    assert settings.bucket == bucket_name
    assert settings.files_table == f"orderpipe-{env['env']}-files"
    assert settings.recipients == ("a@example.com", "b@example.com")
    assert settings.function_timeout_s == 900
    s3.head_bucket(Bucket=settings.bucket)
    clients.dynamodb.describe_table(TableName=settings.orders_table)
    clients.sqs.get_queue_attributes(QueueUrl=settings.ingest_queue_url)
    fn = clients.client("lambda").get_function(FunctionName=f"orderpipe-{env['env']}-ingest")
    assert fn["Configuration"]["Handler"] == "handlers.ingest.handler"
    assert fn["Configuration"]["Runtime"] == "python3.12"  # from the build's manifest

    # Any other command drives the deployed stack by its name.
    status = CliRunner().invoke(
        cli, ["status", "--stack", env["stack"], "--endpoint-url", env["endpoint"], "--json"]
    )
    assert status.exit_code == 0, status.output
    # An empty ledger, read from the stack's files table: no JSON lines, a word on stderr.
    assert status.stdout == ""
    assert "no files in the ledger yet" in status.stderr

    # An update: one changed parameter, everything else kept from the stack.
    updated = run(env, "-p", "LogRetentionDays=60")
    assert updated.exit_code == 0, updated.output
    assert "uploaded" not in updated.output  # same build: nothing to upload again
    assert "UPDATE_COMPLETE" in updated.output
    assert f"stack {env['stack']} updated" in updated.output
    params = clients.cloudformation.describe_stacks(StackName=env["stack"])["Stacks"][0]
    values = {p["ParameterKey"]: p["ParameterValue"] for p in params["Parameters"]}
    assert values["LogRetentionDays"] == "60"
    assert values["SenderAddress"] == "orders@example.com"
    assert values["Architecture"] == "arm64"  # from the build's manifest

    # Nothing changed: says so, executes nothing, leaves no change set behind.
    before = stack_events(env)
    same = run(env, "-p", "LogRetentionDays=60")
    assert same.exit_code == 0, same.output
    assert f"no changes: stack {env['stack']} is up to date" in same.output
    assert stack_events(env) == before
    left = clients.cloudformation.list_change_sets(StackName=env["stack"])["Summaries"]
    assert [c for c in left if c["ExecutionStatus"] != "EXECUTE_COMPLETE"] == []


def test_dry_run_prints_the_change_set_and_creates_nothing(deploy_env: dict[str, Any]) -> None:
    env, clients = deploy_env, deploy_env["clients"]
    result = run(env, "--dry-run", "-p", f"EnvName={env['env']}", *PEOPLE)
    assert result.exit_code == 0, result.output
    assert "Add     OrdersBucket (AWS::S3::Bucket)" in result.output
    assert "dry run: nothing executed" in result.output
    stacks = clients.cloudformation.list_stacks()["StackSummaries"]
    live = [
        s for s in stacks if s["StackName"] == env["stack"] and "DELETE" not in s["StackStatus"]
    ]
    assert live == []
    buckets = [b["Name"] for b in clients.s3.list_buckets()["Buckets"]]
    assert env["bucket"] not in buckets
    assert f"orderpipe-{env['env']}-orders-123456789012-us-east-1" not in buckets


def test_json_summary_on_stdout(deploy_env: dict[str, Any]) -> None:
    env = deploy_env
    result = CliRunner().invoke(
        cli,
        [
            "deploy",
            "--stack",
            env["stack"],
            "--endpoint-url",
            env["endpoint"],
            "--artifacts",
            str(env["artifacts"]),
            "--artifact-bucket",
            env["bucket"],
            "--json",
            "-p",
            f"EnvName={env['env']}",
            *PEOPLE,
        ],
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["action"] == "created"
    assert summary["outputs"]["FilesTableName"] == f"orderpipe-{env['env']}-files"
    assert "CREATE_COMPLETE" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-p", "SenderAddress=not-an-email"],
            "Error: SenderAddress must be one email address, e.g. orders@example.com, "
            "got 'not-an-email'",
        ),
        (["-p", "Colour=blue"], "Error: unknown parameter(s) Colour; the template takes:"),
        (["-p", "no-equals-sign"], "Error: --parameter expects KEY=VALUE, got 'no-equals-sign'"),
        (["-p", "Architecture=x86_64"], "Error: Architecture=x86_64 but the artifacts were built"),
        (["-p", "CodeKey=x.zip"], "Error: CodeKey are set by deploy from the build"),
    ],
)
def test_bad_parameters_get_one_line_and_no_stack(
    deploy_env: dict[str, Any], args: list[str], message: str
) -> None:
    env = deploy_env
    given = args[1].split("=")[0]
    people = params({k: v for k, v in ADDRESSES.items() if k != given})
    result = run(env, "-p", f"EnvName={env['env']}", *people, *args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(message)
    stacks = env["clients"].cloudformation.list_stacks()["StackSummaries"]
    assert env["stack"] not in [s["StackName"] for s in stacks]


def test_first_deploy_without_addresses_names_what_is_missing(deploy_env: dict[str, Any]) -> None:
    result = run(deploy_env, "-p", f"EnvName={deploy_env['env']}")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: missing parameter(s): --parameter SenderAddress=..., "
        "--parameter RecipientAddresses=..., --parameter AlertAddress=..."
    )


def test_missing_build_says_to_package_first(deploy_env: dict[str, Any], tmp_path: Path) -> None:
    env = {**deploy_env, "artifacts": tmp_path / "nothing-here"}
    result = run(env, *PEOPLE)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: no artifacts in {tmp_path / 'nothing-here'}: run `orderpipe package` first"
    )


def test_other_commands_given_a_missing_stack_say_so_in_one_line(moto_endpoint: str) -> None:
    result = CliRunner().invoke(
        cli, ["status", "--stack", "no-such-stack", "--endpoint-url", moto_endpoint]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: stack 'no-such-stack' not found")


def test_build_first_builds_for_the_requested_target_then_plans(
    deploy_env: dict[str, Any], tmp_path: Path
) -> None:
    env, built = deploy_env, []

    def builder(options: BuildOptions) -> Manifest:
        built.append(options.target)
        return fake_build(options.out_dir, options.target.arch, options.target.python)

    said: list[str] = []
    request = DeployRequest(
        stack_name=env["stack"],
        parameters={**ADDRESSES, "EnvName": env["env"], "Architecture": "x86_64"},
        dry_run=True,
        artifacts_dir=tmp_path / "fresh",
        artifact_bucket=env["bucket"],
        build=True,
    )
    result = deploy(request, env["clients"], said.append, builder=builder)
    assert built == [Target("x86_64", "3.12")]
    assert said[0] == f"building for x86_64 / python3.12 into {tmp_path / 'fresh'} ..."
    assert result.action == "dry-run"
    assert result.changes
