"""The deployer's logic on an in-memory CloudFormation: what moto cannot show (a change set
that is still being computed, events arriving over time across pages, a rollback, a busy or
failed stack)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from core.release.deploy import (
    ArtifactStore,
    Change,
    DeployError,
    StackDeployer,
    build_target,
    event_line,
    parse_parameters,
    stack_values,
)
from core.release.package import Artifact, Manifest, Target
from core.release.template import load_template


def client_error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "Op")


class FakeCloudFormation:
    """Just enough of the API: scripted change set and stack progress, paginated events."""

    def __init__(
        self,
        *,
        change_set_statuses: list[dict[str, Any]],
        stack_statuses: list[str],
        events_per_poll: list[list[tuple[str, str, str]]],
        page_size: int = 2,
    ) -> None:
        self.change_set_statuses = change_set_statuses
        self.stack_statuses = stack_statuses
        self.events_per_poll = events_per_poll
        self.page_size = page_size
        self.events: list[dict[str, Any]] = []  # newest first, as the API lists them
        self.deleted_change_sets: list[str] = []
        self.deleted_stacks: list[str] = []
        self.executed = False

    def create_change_set(self, **kwargs: Any) -> dict[str, str]:
        if kwargs["StackName"] == "refused":
            raise client_error("ValidationError", "Template format error: bad")
        return {"Id": "cs-1", "StackId": "stack-1"}

    def describe_change_set(self, **kwargs: Any) -> dict[str, Any]:
        status = self.change_set_statuses[0]
        if len(self.change_set_statuses) > 1:
            self.change_set_statuses.pop(0)
        return status

    def delete_change_set(self, **kwargs: Any) -> None:
        self.deleted_change_sets.append(kwargs["ChangeSetName"])

    def delete_stack(self, **kwargs: Any) -> None:
        self.deleted_stacks.append(kwargs["StackName"])

    def execute_change_set(self, **kwargs: Any) -> None:
        self.executed = True

    def describe_stacks(self, **kwargs: Any) -> dict[str, Any]:
        if not self.stack_statuses:
            raise client_error(
                "ValidationError", f"Stack with id {kwargs['StackName']} does not exist"
            )
        status = self.stack_statuses[0]
        if len(self.stack_statuses) > 1:
            self.stack_statuses.pop(0)
        return {"Stacks": [{"StackStatus": status, "Parameters": [], "Outputs": []}]}

    def describe_stack_events(self, **kwargs: Any) -> dict[str, Any]:
        if self.executed and self.events_per_poll and "NextToken" not in kwargs:
            for n, (lid, status, reason) in enumerate(self.events_per_poll.pop(0)):
                event = {
                    "EventId": f"e{len(self.events)}-{n}",
                    "LogicalResourceId": lid,
                    "ResourceType": "AWS::X::Y",
                    "ResourceStatus": status,
                    "Timestamp": datetime(2026, 1, 1, 12, 0, len(self.events), tzinfo=UTC),
                }
                if reason:
                    event["ResourceStatusReason"] = reason
                self.events.insert(0, event)
        start = int(kwargs.get("NextToken", 0))
        page: dict[str, Any] = {"StackEvents": self.events[start : start + self.page_size]}
        if start + self.page_size < len(self.events):
            page["NextToken"] = str(start + self.page_size)
        return page

    def get_paginator(self, operation: str) -> FakePaginator:
        return FakePaginator(getattr(self, operation))


class FakePaginator:
    """botocore's paginator contract over a fake call: follow NextToken until it is absent."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        while True:
            page = self._call(**kwargs)
            yield page
            if not page.get("NextToken"):
                return
            kwargs = {**kwargs, "NextToken": page["NextToken"]}


def deployer(fake: FakeCloudFormation) -> StackDeployer:
    return StackDeployer(fake, poll_s=0, sleep=lambda _s: None)


READY = {
    "Status": "CREATE_COMPLETE",
    "Changes": [
        {
            "ResourceChange": {
                "Action": "Modify",
                "LogicalResourceId": "IngestFunction",
                "ResourceType": "AWS::Lambda::Function",
                "Replacement": "False",
            }
        }
    ],
}


def test_waits_for_the_change_set_and_lists_its_changes() -> None:
    fake = FakeCloudFormation(
        change_set_statuses=[{"Status": "CREATE_PENDING"}, {"Status": "CREATE_IN_PROGRESS"}, READY],
        stack_statuses=["UPDATE_COMPLETE"],
        events_per_poll=[],
    )
    plan = deployer(fake).plan("s", "UPDATE", "{}", {})
    assert plan.changes == [Change("Modify", "IngestFunction", "AWS::Lambda::Function", "False")]
    assert not plan.no_changes


def test_no_change_is_recognised_not_raised() -> None:
    reason = "The submitted information didn't contain changes. Submit different information."
    fake = FakeCloudFormation(
        change_set_statuses=[{"Status": "FAILED", "StatusReason": reason}],
        stack_statuses=["UPDATE_COMPLETE"],
        events_per_poll=[],
    )
    assert deployer(fake).plan("s", "UPDATE", "{}", {}).no_changes


def test_a_failed_create_change_set_is_cleaned_up_and_reported() -> None:
    fake = FakeCloudFormation(
        change_set_statuses=[{"Status": "FAILED", "StatusReason": "Parameter X is bad"}],
        stack_statuses=["REVIEW_IN_PROGRESS"],
        events_per_poll=[],
    )
    with pytest.raises(DeployError, match="change set for s failed: Parameter X is bad"):
        deployer(fake).plan("s", "CREATE", "{}", {})
    assert fake.deleted_change_sets == ["cs-1"]
    assert fake.deleted_stacks == ["s"]  # the empty REVIEW_IN_PROGRESS stack it left


def test_a_refused_change_set_is_one_line() -> None:
    fake = FakeCloudFormation(change_set_statuses=[READY], stack_statuses=[], events_per_poll=[])
    with pytest.raises(DeployError) as err:
        deployer(fake).plan("refused", "CREATE", "{}", {})
    assert str(err.value) == (
        "change set for refused refused: ValidationError: Template format error: bad"
    )


def test_events_are_shown_once_each_oldest_first_across_pages() -> None:
    fake = FakeCloudFormation(
        change_set_statuses=[READY],
        stack_statuses=["UPDATE_IN_PROGRESS", "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE"],
        events_per_poll=[
            [("s", "UPDATE_IN_PROGRESS", "User Initiated"), ("Fn", "UPDATE_IN_PROGRESS", "")],
            [
                ("Fn", "UPDATE_COMPLETE", ""),
                ("Q", "UPDATE_IN_PROGRESS", ""),
                ("Q", "UPDATE_COMPLETE", ""),
            ],
            [("s", "UPDATE_COMPLETE", "")],
        ],
    )
    d = deployer(fake)
    plan = d.plan("s", "UPDATE", "{}", {})
    shown: list[str] = []
    assert d.execute(plan, shown.append) == "UPDATE_COMPLETE"
    order = [(line.split()[2], line.split()[1]) for line in shown]
    assert order == [
        ("s", "UPDATE_IN_PROGRESS"),
        ("Fn", "UPDATE_IN_PROGRESS"),
        ("Fn", "UPDATE_COMPLETE"),
        ("Q", "UPDATE_IN_PROGRESS"),
        ("Q", "UPDATE_COMPLETE"),
        ("s", "UPDATE_COMPLETE"),
    ]


def test_a_rollback_fails_with_the_first_resource_failure() -> None:
    fake = FakeCloudFormation(
        change_set_statuses=[READY],
        stack_statuses=["UPDATE_IN_PROGRESS", "UPDATE_ROLLBACK_COMPLETE"],
        events_per_poll=[
            [
                (
                    "Fn",
                    "UPDATE_FAILED",
                    "Resource handler returned message: Unzipped size too large",
                ),
                ("Q", "UPDATE_FAILED", "Resource update cancelled"),
            ],
        ],
    )
    d = deployer(fake)
    with pytest.raises(DeployError) as err:
        d.execute(d.plan("s", "UPDATE", "{}", {}), lambda _line: None)
    assert str(err.value).startswith("stack s ended UPDATE_ROLLBACK_COMPLETE: Fn: Resource handler")


def test_gives_up_after_the_timeout() -> None:
    ticks = iter(range(0, 10_000, 100))
    fake = FakeCloudFormation(
        change_set_statuses=[READY], stack_statuses=["UPDATE_IN_PROGRESS"], events_per_poll=[]
    )
    d = StackDeployer(
        fake, poll_s=0, timeout_s=250, sleep=lambda _s: None, clock=lambda: next(ticks)
    )
    with pytest.raises(DeployError, match="still UPDATE_IN_PROGRESS: gave up waiting"):
        d.execute(d.plan("s", "UPDATE", "{}", {}), lambda _line: None)


def test_missing_stack_has_no_state() -> None:
    fake = FakeCloudFormation(change_set_statuses=[READY], stack_statuses=[], events_per_poll=[])
    assert deployer(fake).state("nope") == (None, {})


def manifest() -> Manifest:
    artifacts = {
        role: Artifact(role, f"{role}.zip", f"{n:064x}", 1, 1)
        for n, role in enumerate(("code", "layer", "reconcile_script", "reconcile_wheel"))
    }
    return Manifest("arm64", "3.12", artifacts)


def test_stack_values_take_the_build_then_the_user_then_the_stack() -> None:
    values = stack_values(
        load_template(),
        manifest(),
        "bucket-x",
        {"SenderAddress": "new@example.com"},
        previous={
            "SenderAddress": "old@example.com",
            "RecipientAddresses": "r@example.com",
            "AlertAddress": "a@example.com",
            "Architecture": "x86_64",
            "LogRetentionDays": "90",
        },
    )
    assert values["SenderAddress"] == "new@example.com"
    assert values["RecipientAddresses"] == "r@example.com"
    assert values["LogRetentionDays"] == "90"
    assert values["Architecture"] == "arm64"  # the build wins over the stack
    assert values["PythonRuntime"] == "python3.12"
    assert values["ArtifactBucket"] == "bucket-x"
    assert values["CodeKey"] == manifest().artifacts["code"].key


def test_parameters_parse_key_value_pairs() -> None:
    assert parse_parameters(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(DeployError, match="expects KEY=VALUE"):
        parse_parameters(["=1"])


def test_event_line_is_readable() -> None:
    line = event_line(
        {
            "Timestamp": datetime(2026, 1, 1, 9, 5, 7, tzinfo=UTC),
            "ResourceStatus": "CREATE_FAILED",
            "LogicalResourceId": "OrdersBucket",
            "ResourceType": "AWS::S3::Bucket",
            "ResourceStatusReason": "already exists",
        }
    )
    assert line == "09:05:07  CREATE_FAILED        OrdersBucket (AWS::S3::Bucket)  already exists"


class FakeS3:
    """Records bucket settings; ``head_bucket`` answers as the scenario says."""

    def __init__(self, head_code: str | None, endpoint: str = "https://s3.amazonaws.com") -> None:
        self.head_code = head_code
        self.meta = type("Meta", (), {"endpoint_url": endpoint})()
        self.calls: dict[str, dict[str, Any]] = {}

    def head_bucket(self, **kwargs: Any) -> None:
        if self.head_code:
            raise client_error(self.head_code, "head")

    def __getattr__(self, name: str) -> Any:
        def record(**kwargs: Any) -> None:
            self.calls[name] = kwargs

        return record


def test_artifact_bucket_is_created_private_encrypted_and_tls_only() -> None:
    s3 = FakeS3(head_code="404")
    assert ArtifactStore(s3, "arts", "eu-west-1").ensure() is True
    assert s3.calls["create_bucket"]["CreateBucketConfiguration"] == {
        "LocationConstraint": "eu-west-1"
    }
    assert all(s3.calls["put_public_access_block"]["PublicAccessBlockConfiguration"].values())
    rule = s3.calls["put_bucket_encryption"]["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert s3.calls["put_bucket_ownership_controls"]["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}
    ]
    policy = json.loads(s3.calls["put_bucket_policy"]["Policy"])
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_an_existing_bucket_is_left_alone_and_a_foreign_one_refused() -> None:
    mine = FakeS3(head_code=None)
    assert ArtifactStore(mine, "arts", "us-east-1").ensure() is False
    assert mine.calls == {}
    with pytest.raises(DeployError, match="exists but is not yours: pass --artifact-bucket"):
        ArtifactStore(FakeS3(head_code="403"), "arts", "us-east-1").ensure()


def test_no_tls_policy_on_a_plain_http_endpoint() -> None:
    s3 = FakeS3(head_code="404", endpoint="http://127.0.0.1:5000")
    ArtifactStore(s3, "arts", "us-east-1").ensure()
    assert "CreateBucketConfiguration" not in s3.calls["create_bucket"]  # us-east-1 takes none
    assert "put_bucket_policy" not in s3.calls


def test_build_target_takes_given_then_stack_then_default_values() -> None:
    template = load_template()
    assert build_target(template, {}, {}) == Target("arm64", "3.12")
    assert build_target(template, {}, {"Architecture": "x86_64"}) == Target("x86_64", "3.12")
    assert build_target(
        template, {"PythonRuntime": "python3.13"}, {"Architecture": "x86_64"}
    ) == Target("x86_64", "3.13")
    with pytest.raises(DeployError, match="--arch must be one of"):
        build_target(template, {"Architecture": "sparc"}, {})
