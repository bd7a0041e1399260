"""What ``orderpipe alerts`` makes of each kind of message on the alerts topic."""

from __future__ import annotations

import json

import pytest

from core.aws.settings import Settings
from core.ops.alerts import AlertsError, glue_state_change, local_names, parse_alert


def test_glue_job_state_change_event() -> None:
    event = {
        "version": "0",
        "detail-type": "Glue Job State Change",
        "source": "aws.glue",
        "time": "2026-11-25T10:00:00Z",
        "detail": glue_state_change("orderpipe-prod-reconcile", "TIMEOUT", "took too long", "jr_1"),
    }
    alert = parse_alert(json.dumps(event), "m1")
    assert alert.kind == "glue-job"
    assert alert.summary == "Glue job orderpipe-prod-reconcile TIMEOUT: took too long"
    assert alert.sent_at == "2026-11-25T10:00:00Z"


def test_cloudwatch_alarm_inside_an_sns_envelope() -> None:
    alarm = {
        "AlarmName": "orderpipe-prod-ingest-dlq-not-empty",
        "NewStateValue": "ALARM",
        "NewStateReason": "1 message",
    }
    envelope = {"Type": "Notification", "Message": json.dumps(alarm)}
    alert = parse_alert(json.dumps(envelope))
    assert alert.kind == "alarm"
    assert alert.summary == "alarm orderpipe-prod-ingest-dlq-not-empty is ALARM: 1 message"


def test_reconcile_summary_and_plain_text() -> None:
    summary = {"type": "orderpipe.reconcile_summary", "summary": "2 missing"}
    assert parse_alert(json.dumps(summary)).summary == "reconcile: 2 missing"
    text = parse_alert("first line\nsecond line")
    assert (text.kind, text.summary) == ("message", "first line")
    assert parse_alert("").summary == "(empty message)"


def test_local_names_come_from_the_topic_and_aws_topics_are_refused() -> None:
    local = Settings(alerts_topic_arn="arn:aws:sns:us-east-1:account:orderpipe-dev-alerts")
    names = local_names(local)
    assert names.alerts_inbox_queue == "orderpipe-dev-alerts-inbox"
    assert names.glue_job == "orderpipe-dev-reconcile"
    with pytest.raises(AlertsError, match="e-mail subscription"):
        local_names(Settings(alerts_topic_arn="arn:aws:sns:eu-west-1:account:ops-pager"))


class _FakeSqs:
    def get_queue_url(self, QueueName: str) -> dict[str, str]:
        return {"QueueUrl": f"https://sqs/{QueueName}"}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, object]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:account:inbox"}}


class _FakeEvents:
    def __init__(self, broken: bool) -> None:
        self.broken = broken
        self.rules: dict[str, str] = {}
        self.targets: dict[str, list[dict[str, str]]] = {}
        self.events: list[dict[str, str]] = []

    def put_rule(self, Name: str, EventPattern: str, State: str) -> None:
        self.rules[Name] = EventPattern

    def put_targets(self, Rule: str, Targets: list[dict[str, str]]) -> None:
        self.targets[Rule] = Targets

    def put_events(self, Entries: list[dict[str, str]]) -> dict[str, int]:
        if self.broken:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "500", "Message": ""}}, "PutEvents")
        self.events.extend(Entries)
        return {"FailedEntryCount": 0}


class _FakeSns:
    class meta:
        region_name = "us-east-1"

    def __init__(self) -> None:
        self.published: list[dict[str, str]] = []

    def publish(self, **kwargs: str) -> None:
        self.published.append(kwargs)


SETTINGS = Settings(alerts_topic_arn="arn:aws:sns:us-east-1:account:orderpipe-dev-alerts")


def test_failed_run_goes_through_eventbridge_to_the_inbox() -> None:
    from core.ops.alerts import LocalJobAlarm

    events, sns = _FakeEvents(broken=False), _FakeSns()
    alarm = LocalJobAlarm(events, _FakeSqs(), sns, SETTINGS)
    assert alarm.publish_failure("ResourceNotFoundException: table") == "eventbridge"
    pattern = json.loads(events.rules["orderpipe-dev-reconcile-failed"])
    assert pattern["detail"]["jobName"] == ["orderpipe-dev-reconcile"]
    assert events.targets["orderpipe-dev-reconcile-failed"][0]["Arn"].endswith(":inbox")
    (entry,) = events.events
    assert entry["Source"] == "aws.glue"
    assert entry["DetailType"] == "Glue Job State Change"
    assert json.loads(entry["Detail"])["state"] == "FAILED"
    assert sns.published == []


def test_failed_run_goes_straight_to_the_topic_where_eventbridge_fails() -> None:
    from core.ops.alerts import LocalJobAlarm

    sns = _FakeSns()
    alarm = LocalJobAlarm(_FakeEvents(broken=True), _FakeSqs(), sns, SETTINGS)
    assert alarm.publish_failure("boom") == "sns"
    (sent,) = sns.published
    assert sent["TopicArn"] == SETTINGS.alerts_topic_arn
    alert = parse_alert(sent["Message"])
    assert alert.kind == "glue-job"
    assert alert.summary == "Glue job orderpipe-dev-reconcile FAILED: boom"
