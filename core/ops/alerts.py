"""Alerts: what reaches the alerts topic, read back on the local stack, and the local job alarm.

On AWS the topic mails a person: EventBridge forwards Glue Job State Change (FAILED, TIMEOUT,
ERROR) and CloudWatch alarms fire into it (both in the template), and reconcile publishes its
summary. Locally, ``create_local_stack`` subscribes an inbox queue to the topic and
``orderpipe alerts`` lists what arrived there.

A failed local reconcile run publishes the same Glue Job State Change event AWS would emit:
through EventBridge, with a rule whose target is the inbox queue (the emulator routes SQS
targets), and straight to the topic where EventBridge is unavailable (the emulator's SNS target
makes ``put_events`` fail; see the shared facts).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.aws.settings import Settings
from core.aws.stack import StackNames
from core.ops.event_messages import iso_now

GLUE_STATE_CHANGE = "Glue Job State Change"
ALERT_STATES = ("FAILED", "TIMEOUT", "ERROR")
SQS_BATCH = 10


class AlertsError(RuntimeError):
    """An expected problem, worded for the person at the terminal."""


@dataclass(frozen=True)
class Alert:
    message_id: str
    sent_at: str | None
    kind: str  # glue-job | alarm | reconcile | message
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "sent_at": self.sent_at,
            "kind": self.kind,
            "summary": self.summary,
            "detail": self.detail,
        }


def parse_alert(body: str, message_id: str = "", sent_at: str | None = None) -> Alert:
    """Name what an alert message is, whichever way it came (raw, or in an SNS envelope)."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and "Message" in doc:
        return parse_alert(str(doc["Message"]), message_id, sent_at)  # SNS envelope
    if not isinstance(doc, dict):
        first = body.strip().splitlines()[0] if body.strip() else "(empty message)"
        return Alert(message_id, sent_at, "message", first, {"text": body})
    if doc.get("detail-type") == GLUE_STATE_CHANGE:
        d = doc.get("detail") or {}
        summary = f"Glue job {d.get('jobName', '?')} {d.get('state', '?')}"
        if d.get("message"):
            summary += f": {d['message']}"
        return Alert(message_id, sent_at or doc.get("time"), "glue-job", summary, doc)
    if "AlarmName" in doc:
        summary = f"alarm {doc['AlarmName']} is {doc.get('NewStateValue', '?')}"
        if doc.get("NewStateReason"):
            summary += f": {doc['NewStateReason']}"
        return Alert(message_id, sent_at, "alarm", summary, doc)
    if doc.get("type") == "orderpipe.reconcile_summary":
        return Alert(message_id, sent_at, "reconcile", f"reconcile: {doc.get('summary')}", doc)
    return Alert(message_id, sent_at, "message", json.dumps(doc)[:200], doc)


def local_names(settings: Settings) -> StackNames:
    """The local stack's names, from its alerts topic (``orderpipe-<env>-alerts``)."""
    topic = settings.alerts_topic_arn.rsplit(":", 1)[-1]
    if not (topic.startswith("orderpipe-") and topic.endswith("-alerts")):
        raise AlertsError(
            f"alerts topic {topic!r} is not a local orderpipe stack's: on AWS, alerts go to "
            "the topic's e-mail subscription"
        )
    return StackNames.for_env(topic[len("orderpipe-") : -len("-alerts")])


class AlertsInbox:
    """The queue subscribed to the alerts topic on the local stack."""

    def __init__(self, sqs: Any, url: str) -> None:
        self._sqs = sqs
        self.url = url

    @classmethod
    def for_settings(cls, sqs: Any, settings: Settings) -> AlertsInbox:
        name = local_names(settings).alerts_inbox_queue
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError:
            raise AlertsError(
                f"no alerts inbox queue {name!r}: is the local stack running?"
            ) from None
        return cls(sqs, url)

    def read(self, *, clear: bool = False, limit: int = 1000) -> list[Alert]:
        """Every alert waiting, oldest first; kept unless ``clear`` (peek, like dlq list)."""
        held: list[dict[str, Any]] = []
        seen: dict[str, Alert] = {}
        try:
            while len(seen) < limit:
                got = self._sqs.receive_message(
                    QueueUrl=self.url,
                    MaxNumberOfMessages=SQS_BATCH,
                    VisibilityTimeout=30,
                    WaitTimeSeconds=1,  # a long poll asks every server; a short one may miss
                    AttributeNames=["SentTimestamp"],
                ).get("Messages", [])
                fresh = [m for m in got if m["MessageId"] not in seen]
                held.extend(got)
                if not fresh:
                    break
                for m in fresh:
                    stamp = m.get("Attributes", {}).get("SentTimestamp")
                    sent = (
                        iso_now(datetime.fromtimestamp(int(stamp) / 1000, UTC)) if stamp else None
                    )
                    seen[m["MessageId"]] = parse_alert(m.get("Body", ""), m["MessageId"], sent)
        finally:
            self._settle(held, delete=clear)
        return sorted(seen.values(), key=lambda a: (a.sent_at or "", a.message_id))

    def _settle(self, messages: list[dict[str, Any]], *, delete: bool) -> None:
        for start in range(0, len(messages), SQS_BATCH):
            batch = messages[start : start + SQS_BATCH]
            if delete:
                self._sqs.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                        for n, m in enumerate(batch)
                    ],
                )
            else:
                self._sqs.change_message_visibility_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                        for n, m in enumerate(batch)
                    ],
                )


def glue_state_change(job_name: str, state: str, message: str, run_id: str) -> dict[str, Any]:
    """The ``detail`` of the event AWS Glue emits when a job run ends badly."""
    return {
        "jobName": job_name,
        "severity": "ERROR",
        "state": state,
        "jobRunId": run_id,
        "message": message,
    }


class LocalJobAlarm:
    """Publishes a failed local reconcile run the way AWS reports a failed Glue run."""

    def __init__(self, events: Any, sqs: Any, sns: Any, settings: Settings) -> None:
        self._events = events
        self._sqs = sqs
        self._sns = sns
        self._settings = settings
        self._names = local_names(settings)
        self._routed: bool | None = None

    @property
    def rule_name(self) -> str:
        return f"{self._names.glue_job}-failed"

    def ensure_route(self) -> bool:
        """Rule → inbox queue, as the template's rule → topic; False where EventBridge fails."""
        if self._routed is None:
            try:
                inbox = self._sqs.get_queue_url(QueueName=self._names.alerts_inbox_queue)[
                    "QueueUrl"
                ]
                arn = self._sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])[
                    "Attributes"
                ]["QueueArn"]
                self._events.put_rule(
                    Name=self.rule_name,
                    EventPattern=json.dumps(
                        {
                            "source": ["aws.glue"],
                            "detail-type": [GLUE_STATE_CHANGE],
                            "detail": {
                                "jobName": [self._names.glue_job],
                                "state": list(ALERT_STATES),
                            },
                        }
                    ),
                    State="ENABLED",
                )
                self._events.put_targets(
                    Rule=self.rule_name, Targets=[{"Id": "alerts-inbox", "Arn": arn}]
                )
                self._routed = True
            except (ClientError, BotoCoreError):
                self._routed = False
        return self._routed

    def publish_failure(self, error: str, state: str = "FAILED") -> str:
        """Send the event; returns how it went: ``eventbridge`` or ``sns``."""
        run_id = "jr_local_" + uuid.uuid4().hex
        detail = glue_state_change(self._names.glue_job, state, error[:1000], run_id)
        if self.ensure_route():
            try:
                got = self._events.put_events(
                    Entries=[
                        {
                            "Source": "aws.glue",
                            "DetailType": GLUE_STATE_CHANGE,
                            "Detail": json.dumps(detail),
                        }
                    ]
                )
                if not got.get("FailedEntryCount"):
                    return "eventbridge"
            except (ClientError, BotoCoreError):
                pass
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": GLUE_STATE_CHANGE,
            "source": "aws.glue",
            "time": iso_now()[:19] + "Z",
            "region": self._sns.meta.region_name,
            "resources": [],
            "detail": detail,
        }
        self._sns.publish(
            TopicArn=self._settings.alerts_topic_arn,
            Subject=f"Glue job {self._names.glue_job} {state}",
            Message=json.dumps(event),
        )
        return "sns"
