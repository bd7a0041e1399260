"""Deploy a stack: artifacts to a private bucket, then a change set, executed and watched.

A change set shows what will change before anything does: ``--dry-run`` stops there, and a run
with nothing to change ends there. Artifact keys are content hashes, so re-deploying the same
build changes nothing. Progress goes to a callback so the CLI decides how it is shown.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from core.release.package import MIB, BuildOptions, Manifest, PackageError, Target
from core.release.package import build as build_artifacts
from core.release.template import (
    TEMPLATE_BODY_LIMIT,
    TEMPLATE_PATH,
    TemplateError,
    check_values,
    load_template,
)

# The roles are unnamed, so CAPABILITY_IAM is enough (no NAMED_IAM).
CAPABILITIES = ["CAPABILITY_IAM"]
ARTIFACT_PARAMETERS = {
    "code": "CodeKey",
    "layer": "DepsLayerKey",
    "reconcile_script": "ReconcileScriptKey",
    "reconcile_wheel": "ReconcileWheelKey",
}
BUCKET_PARAMETER = "ArtifactBucket"
# Taken from the build, so the functions run what was built for them.
BUILD_PARAMETERS = {"Architecture": "arch", "PythonRuntime": "runtime"}
NO_CHANGE_REASONS = ("didn't contain changes", "No updates are to be performed")
# A stack in one of these must be deleted (or fixed) before it can be deployed again.
STUCK_STATUSES = {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED", "UPDATE_ROLLBACK_FAILED"}
SUCCESS_STATUSES = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}


class DeployError(RuntimeError):
    """The deployment cannot go on or did not succeed; one line for a person."""


Say = Callable[[str], None]


@dataclass(frozen=True)
class Change:
    action: str
    logical_id: str
    resource_type: str
    replacement: str = ""

    def line(self) -> str:
        replace = " (replaced)" if self.replacement == "True" else ""
        if self.replacement == "Conditional":
            replace = " (may be replaced)"
        return f"{self.action:<7} {self.logical_id} ({self.resource_type}){replace}"


@dataclass
class Plan:
    stack_name: str
    change_set_id: str
    change_set_type: str  # CREATE | UPDATE
    changes: list[Change] = field(default_factory=list)
    no_changes: bool = False


@dataclass
class DeployResult:
    stack_name: str
    action: str  # created | updated | unchanged | dry-run
    changes: list[Change] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    uploaded: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack_name,
            "action": self.action,
            "changes": [c.__dict__ for c in self.changes],
            "outputs": self.outputs,
            "uploaded": self.uploaded,
        }


@dataclass(frozen=True)
class DeployRequest:
    stack_name: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = False
    artifacts_dir: Path = Path("dist/orderpipe")
    template_path: Path = TEMPLATE_PATH
    artifact_bucket: str | None = None
    build: bool = False  # build the artifacts first, as `orderpipe package` would


def parse_parameters(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings to a dict; the value may itself contain ``=``."""
    values: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise DeployError(f"--parameter expects KEY=VALUE, got {item!r}")
        values[key.strip()] = value
    return values


def _error_text(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'Error')}: {error.get('Message') or exc}"


class ArtifactStore:
    """The private, encrypted bucket that holds what the stack's functions and job run."""

    def __init__(self, s3: Any, bucket: str, region: str) -> None:
        self._s3 = s3
        self.bucket = bucket
        self._region = region

    def ensure(self) -> bool:
        """Create the bucket locked down if it is absent; True when it was created."""
        try:
            self._s3.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("403", "AccessDenied", "Forbidden"):
                raise DeployError(
                    f"artifact bucket {self.bucket} exists but is not yours: "
                    "pass --artifact-bucket NAME"
                ) from None
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self._region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        self._s3.create_bucket(**kwargs)
        self._s3.put_public_access_block(
            Bucket=self.bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        self._s3.put_bucket_ownership_controls(
            Bucket=self.bucket,
            OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        )
        self._s3.put_bucket_encryption(
            Bucket=self.bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
        # Requiring TLS would lock out an endpoint that has none (a local emulator).
        if str(self._s3.meta.endpoint_url).startswith("https://"):
            self._s3.put_bucket_policy(Bucket=self.bucket, Policy=json.dumps(tls_only(self.bucket)))
        return True

    def has(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey"):
                return False
            raise

    def put_file(self, path: Path, key: str) -> None:
        # upload_file switches to multipart for the ~45 MB layer.
        self._s3.upload_file(
            str(path), self.bucket, key, ExtraArgs={"ServerSideEncryption": "AES256"}
        )


def tls_only(bucket: str) -> dict[str, Any]:
    arn = f"arn:aws:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyWithoutTls",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


class StackDeployer:
    """Change sets on one CloudFormation client: plan, show, execute, watch."""

    def __init__(
        self,
        cloudformation: Any,
        *,
        poll_s: float = 3.0,
        timeout_s: float = 3600.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cf = cloudformation
        self._poll_s = poll_s
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._clock = clock

    def state(self, stack_name: str) -> tuple[str | None, dict[str, str]]:
        """The stack's status and current parameter values, or (None, {}) when absent."""
        try:
            stacks = self._cf.describe_stacks(StackName=stack_name)["Stacks"]
        except ClientError as exc:
            if "does not exist" in str(exc.response.get("Error", {}).get("Message", "")):
                return None, {}
            raise
        if not stacks:
            return None, {}
        stack = stacks[0]
        params = {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}
        return str(stack["StackStatus"]), params

    def plan(
        self, stack_name: str, change_set_type: str, template_body: str, values: Mapping[str, str]
    ) -> Plan:
        name = "orderpipe-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
        try:
            created = self._cf.create_change_set(
                StackName=stack_name,
                ChangeSetName=name,
                ChangeSetType=change_set_type,
                TemplateBody=template_body,
                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()],
                Capabilities=CAPABILITIES,
                Description="orderpipe deploy",
            )
        except ClientError as exc:
            raise DeployError(f"change set for {stack_name} refused: {_error_text(exc)}") from None
        plan = Plan(stack_name, str(created["Id"]), change_set_type)
        deadline = self._clock() + self._timeout_s
        while True:
            described = self._describe(plan.change_set_id, stack_name)
            status = described["Status"]
            if status == "CREATE_COMPLETE":
                plan.changes = described["Changes"]
                return plan
            if status == "FAILED":
                reason = str(described.get("StatusReason", ""))
                if any(marker in reason for marker in NO_CHANGE_REASONS):
                    plan.no_changes = True
                    return plan
                self.discard(plan, drop_new_stack=change_set_type == "CREATE")
                raise DeployError(f"change set for {stack_name} failed: {reason}")
            if self._clock() > deadline:
                raise DeployError(f"change set for {stack_name} still {status}: gave up waiting")
            self._sleep(min(self._poll_s, 2.0))

    def _describe(self, change_set_id: str, stack_name: str) -> dict[str, Any]:
        changes: list[Change] = []
        first: dict[str, Any] = {}
        pages = self._cf.get_paginator("describe_change_set").paginate(
            ChangeSetName=change_set_id, StackName=stack_name
        )
        for page in pages:
            first = first or page  # status and reason: the same on every page
            for item in page.get("Changes", []):
                rc = item.get("ResourceChange", {})
                changes.append(
                    Change(
                        action=str(rc.get("Action", "")),
                        logical_id=str(rc.get("LogicalResourceId", "")),
                        resource_type=str(rc.get("ResourceType", "")),
                        replacement=str(rc.get("Replacement", "") or ""),
                    )
                )
        return {**first, "Changes": changes}

    def discard(self, plan: Plan, *, drop_new_stack: bool) -> None:
        """Delete the change set, and the empty stack a CREATE change set left behind."""
        with contextlib.suppress(ClientError):
            self._cf.delete_change_set(ChangeSetName=plan.change_set_id, StackName=plan.stack_name)
        if drop_new_stack:
            status, _ = self.state(plan.stack_name)
            if status == "REVIEW_IN_PROGRESS":
                self._cf.delete_stack(StackName=plan.stack_name)

    def _event_ids(self, stack_name: str) -> set[str]:
        events = self._cf.describe_stack_events(StackName=stack_name).get("StackEvents", [])
        return {str(e["EventId"]) for e in events}

    def _new_events(self, stack_name: str, seen: set[str]) -> list[dict[str, Any]]:
        """Events not yet shown, oldest first (the API lists newest first, paginated)."""
        fresh: list[dict[str, Any]] = []
        pages = self._cf.get_paginator("describe_stack_events").paginate(StackName=stack_name)
        for event in (e for page in pages for e in page.get("StackEvents", [])):
            if str(event["EventId"]) in seen:
                break  # older events were shown already: no need for the next page
            fresh.append(event)
        return list(reversed(fresh))

    def execute(self, plan: Plan, say: Say) -> str:
        """Run the change set, showing each stack event as it happens; the final status."""
        seen = self._event_ids(plan.stack_name)
        try:
            self._cf.execute_change_set(ChangeSetName=plan.change_set_id, StackName=plan.stack_name)
        except ClientError as exc:
            raise DeployError(f"could not execute the change set: {_error_text(exc)}") from None
        deadline = self._clock() + self._timeout_s
        failure = ""
        while True:
            for event in self._new_events(plan.stack_name, seen):
                seen.add(str(event["EventId"]))
                say(event_line(event))
                event_status = str(event.get("ResourceStatus", ""))
                reason = event.get("ResourceStatusReason")
                if event_status.endswith("_FAILED") and reason and not failure:
                    failure = f"{event['LogicalResourceId']}: {event['ResourceStatusReason']}"
            status, _ = self.state(plan.stack_name)
            if status in SUCCESS_STATUSES:
                return status
            if status is None or not status.endswith("_IN_PROGRESS"):
                raise DeployError(
                    f"stack {plan.stack_name} ended {status}" + (f": {failure}" if failure else "")
                )
            if self._clock() > deadline:
                raise DeployError(f"stack {plan.stack_name} still {status}: gave up waiting")
            self._sleep(self._poll_s)

    def outputs(self, stack_name: str) -> dict[str, str]:
        stacks = self._cf.describe_stacks(StackName=stack_name)["Stacks"]
        return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", []) or []}


def event_line(event: Mapping[str, Any]) -> str:
    stamp = event.get("Timestamp")
    when = stamp.strftime("%H:%M:%S") if isinstance(stamp, datetime) else str(stamp or "")[:8]
    reason = event.get("ResourceStatusReason") or ""
    return (
        f"{when}  {event.get('ResourceStatus', ''):<20} {event.get('LogicalResourceId', '')}"
        f" ({event.get('ResourceType', '')})" + (f"  {reason}" if reason else "")
    )


def default_artifact_bucket(clients: Any) -> str:
    account = clients.client("sts").get_caller_identity()["Account"]
    return f"orderpipe-artifacts-{account}-{clients.session.region_name}"


def stack_values(
    template: Mapping[str, Any],
    manifest: Manifest,
    bucket: str,
    given: Mapping[str, str],
    previous: Mapping[str, str],
) -> dict[str, str]:
    """Final parameter values: the build's, then the user's, then the stack's, then defaults."""
    reserved = sorted(set(given) & ({BUCKET_PARAMETER, *ARTIFACT_PARAMETERS.values()}))
    if reserved:
        raise DeployError(
            f"{', '.join(reserved)} are set by deploy from the build; use --artifact-bucket "
            "or --artifacts instead"
        )
    built = {name: str(getattr(manifest, attr)) for name, attr in BUILD_PARAMETERS.items()}
    for name, value in built.items():
        if name in given and given[name] != value:
            raise DeployError(
                f"{name}={given[name]} but the artifacts were built for {value}: "
                f"rebuild with `orderpipe package` for {given[name]}"
            )
    values = {**given, **built, BUCKET_PARAMETER: bucket}
    for role, name in ARTIFACT_PARAMETERS.items():
        values[name] = manifest.artifacts[role].key
    try:
        return check_values(template, values, previous=previous)
    except TemplateError as exc:
        raise DeployError(str(exc)) from None


def build_target(
    template: Mapping[str, Any], given: Mapping[str, str], previous: Mapping[str, str]
) -> Target:
    """What ``--build`` builds for: the parameters given, else the stack's, else the defaults."""
    specs = template.get("Parameters", {})

    def pick(name: str) -> str:
        return str(given.get(name) or previous.get(name) or specs[name]["Default"])

    runtime = pick("PythonRuntime")
    try:
        return Target(pick("Architecture"), runtime.removeprefix("python"))
    except PackageError as exc:
        raise DeployError(str(exc)) from None


def deploy(
    request: DeployRequest,
    clients: Any,
    say: Say,
    *,
    deployer: StackDeployer | None = None,
    builder: Callable[[BuildOptions], Manifest] = build_artifacts,
) -> DeployResult:
    """(Build,) upload, plan, and (unless a dry run or nothing changed) execute."""
    try:
        template = load_template(request.template_path)
    except TemplateError as exc:
        raise DeployError(str(exc)) from None
    body = request.template_path.read_text()
    if len(body.encode()) > TEMPLATE_BODY_LIMIT:
        raise DeployError(
            f"{request.template_path} is over CloudFormation's {TEMPLATE_BODY_LIMIT:,}-byte "
            "inline limit"
        )
    stacks = deployer or StackDeployer(clients.cloudformation)
    name = request.stack_name
    status, previous = stacks.state(name)
    if status in STUCK_STATUSES:
        raise DeployError(
            f"stack {name} is {status}: delete it (aws cloudformation delete-stack "
            f"--stack-name {name}) and deploy again"
        )
    if status and status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
        raise DeployError(f"stack {name} is busy ({status}): wait for it to finish")
    change_set_type = "UPDATE" if status and status != "REVIEW_IN_PROGRESS" else "CREATE"

    try:
        if request.build:
            target = build_target(template, request.parameters, previous)
            say(f"building for {target.arch} / {target.runtime} into {request.artifacts_dir} ...")
            manifest = builder(BuildOptions(target=target, out_dir=request.artifacts_dir))
        else:
            manifest = Manifest.load(request.artifacts_dir)
    except PackageError as exc:
        raise DeployError(str(exc)) from None

    bucket = request.artifact_bucket or default_artifact_bucket(clients)
    values = stack_values(template, manifest, bucket, request.parameters, previous)
    result = DeployResult(name, "dry-run" if request.dry_run else "unchanged")

    if request.dry_run:
        say(f"dry run: artifacts not uploaded; the change set names their keys in {bucket}")
    else:
        store = ArtifactStore(clients.s3, bucket, clients.session.region_name)
        if store.ensure():
            say(f"created artifact bucket {bucket} (private, encrypted)")
        for artifact in sorted(manifest.artifacts.values(), key=lambda a: a.role):
            if store.has(artifact.key):
                continue
            store.put_file(request.artifacts_dir / artifact.file, artifact.key)
            result.uploaded.append(artifact.key)
            say(
                f"uploaded {artifact.file} ({artifact.zipped_bytes / MIB:.1f} MiB)"
                f" -> {artifact.key}"
            )

    verb = "create" if change_set_type == "CREATE" else "update"
    say(f"planning the {verb} of stack {name} ...")
    plan = stacks.plan(name, change_set_type, body, values)
    if plan.no_changes:
        stacks.discard(plan, drop_new_stack=False)
        say(f"no changes: stack {name} is up to date")
        result.outputs = stacks.outputs(name)
        return result
    result.changes = plan.changes
    say(f"change set ({len(plan.changes)} change(s)):")
    for change in plan.changes:
        say("  " + change.line())
    if request.dry_run:
        stacks.discard(plan, drop_new_stack=change_set_type == "CREATE")
        say("dry run: nothing executed")
        return result
    final = stacks.execute(plan, say)
    result.action = "created" if final == "CREATE_COMPLETE" else "updated"
    result.outputs = stacks.outputs(name)
    return result
