"""The local stand-in for the template's queue alarms (CloudWatch is not emulated).

Every ``every_s`` seconds the queues are measured and each alarm is evaluated as CloudWatch
would: ALARM when the value is greater than the threshold, OK otherwise. A change of state,
and only a change, is published to the alerts topic in CloudWatch's own notification shape,
so ``orderpipe alerts`` reads it like any alarm (core/ops/alerts.py parses it).

Stand-ins, named as in cloudformation/template.yaml:
- ``orderpipe-<env>-ingest-dlq-not-empty`` and ``-notify-dlq-not-empty``: visible messages in
  the DLQ (``ApproximateNumberOfMessages``, the attribute behind CloudWatch's
  ``ApproximateNumberOfMessagesVisible``) greater than 0.
- ``orderpipe-<env>-ingest-backlog``: the age of the ingest queue's oldest message greater than
  the threshold. SQS reports that age only as a CloudWatch metric, and reading a message to see
  its age would count as a receive (five receives send it to the DLQ), so locally the age is
  how long the queue has held messages without once being empty: an upper bound.
The Lambda Errors and Throttles alarms have no stand-in: the worker is not Lambda.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.aws.stack import StackNames

VISIBLE = "ApproximateNumberOfMessagesVisible"
OLDEST_AGE = "ApproximateAgeOfOldestMessage"
DEFAULT_EVERY_S = 10.0
DEFAULT_BACKLOG_S = 1800.0  # the template's OldestMessageAlarmSeconds default
OK = "OK"
ALARM = "ALARM"

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class QueueAlarm:
    name: str
    description: str
    queue_url: str
    queue_name: str
    metric: str  # VISIBLE or OLDEST_AGE
    threshold: float


def template_alarms(
    sqs: Any, names: StackNames, env: str, backlog_s: float = DEFAULT_BACKLOG_S
) -> list[QueueAlarm]:
    """The template's three SQS alarms, for the local stack's queues."""

    def url(queue: str) -> str:
        return str(sqs.get_queue_url(QueueName=queue)["QueueUrl"])

    prefix = f"orderpipe-{env}"
    return [
        QueueAlarm(
            f"{prefix}-ingest-dlq-not-empty",
            "Files failed 5 times; see `orderpipe dlq list`",
            url(names.ingest_dlq),
            names.ingest_dlq,
            VISIBLE,
            0,
        ),
        QueueAlarm(
            f"{prefix}-notify-dlq-not-empty",
            "Emails failed 5 times; see `orderpipe dlq list --queue notify`",
            url(names.notify_dlq),
            names.notify_dlq,
            VISIBLE,
            0,
        ),
        QueueAlarm(
            f"{prefix}-ingest-backlog",
            "Files wait too long for ingest (stuck or throttled)",
            url(names.ingest_queue),
            names.ingest_queue,
            OLDEST_AGE,
            backlog_s,
        ),
    ]


def alarm_notification(
    alarm: QueueAlarm,
    old: str,
    new: str,
    value: float,
    now: datetime,
    *,
    region: str = "us-east-1",
    account: str = "000000000000",
) -> dict[str, Any]:
    """The JSON CloudWatch publishes to an alarm's SNS actions on a state change."""
    stamp = now.strftime("%d/%m/%y %H:%M:%S")
    relation = "greater than" if new == ALARM else "not greater than"
    return {
        "AlarmName": alarm.name,
        "AlarmDescription": alarm.description,
        "AWSAccountId": account,
        "NewStateValue": new,
        "NewStateReason": (
            f"Threshold Crossed: 1 datapoint [{value:g} ({stamp})] was {relation} "
            f"the threshold ({alarm.threshold:g})."
        ),
        "StateChangeTime": now.isoformat(timespec="milliseconds").replace("+00:00", "+0000"),
        "Region": region,
        "AlarmArn": f"arn:aws:cloudwatch:{region}:{account}:alarm:{alarm.name}",
        "OldStateValue": old,
        "Trigger": {
            "MetricName": alarm.metric,
            "Namespace": "AWS/SQS",
            "StatisticType": "Statistic",
            "Statistic": "MAXIMUM",
            "Dimensions": [{"value": alarm.queue_name, "name": "QueueName"}],
            "Period": 300,
            "EvaluationPeriods": 1,
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": alarm.threshold,
            "TreatMissingData": "notBreaching",
        },
    }


class LocalAlarms:
    """Evaluates the queue alarms on a timer; publishes each state change once."""

    def __init__(
        self,
        sqs: Any,
        sns: Any,
        topic_arn: str,
        alarms: list[QueueAlarm],
        *,
        every_s: float = DEFAULT_EVERY_S,
        log: Log = _quiet,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sqs = sqs
        self._sns = sns
        self.topic_arn = topic_arn
        self.alarms = alarms
        self.every_s = every_s
        self._log = log
        self._clock = clock
        self._now = now
        # A new stack's alarms start OK (its queues are empty): no notification for that.
        self.states = {a.name: OK for a in alarms}
        self._busy_since: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def measure(self, alarm: QueueAlarm) -> float:
        attrs = self._sqs.get_queue_attributes(
            QueueUrl=alarm.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        visible = int(attrs.get("ApproximateNumberOfMessages", 0))
        if alarm.metric == VISIBLE:
            return float(visible)
        held = visible + int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
        if not held:
            self._busy_since.pop(alarm.name, None)
            return 0.0
        now = self._clock()
        since = self._busy_since.setdefault(alarm.name, now)
        return now - since

    def evaluate_once(self) -> list[dict[str, Any]]:
        """Measure every alarm; publish and return the notifications of those that changed."""
        sent = []
        for alarm in self.alarms:
            try:
                value = self.measure(alarm)
            except Exception as exc:  # a queue not answering: CloudWatch would lack data
                self._log(f"alarm {alarm.name}: cannot measure {alarm.queue_name}: {exc}")
                continue
            new = ALARM if value > alarm.threshold else OK
            old = self.states[alarm.name]
            if new == old:
                continue
            note = alarm_notification(alarm, old, new, value, self._now())
            try:
                self._sns.publish(
                    TopicArn=self.topic_arn,
                    Subject=f'{new}: "{alarm.name}"',
                    Message=json.dumps(note),
                )
            except Exception as exc:  # try again on the next tick
                self._log(f"alarm {alarm.name}: cannot publish {new}: {exc}")
                continue
            self.states[alarm.name] = new
            self._log(f"alarm {alarm.name} is {new} ({value:g})")
            sent.append(note)
        return sent

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.evaluate_once()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="local-alarms", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
