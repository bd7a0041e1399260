"""What ``orderpipe alerts`` makes of each kind of message on the alerts topic."""

from __future__ import annotations

import json

import pytest

from core.alerts import AlertsError, glue_state_change, local_names, parse_alert
from core.settings import Settings


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
