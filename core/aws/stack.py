"""What an orderpipe stack is made of: names, queue timings and table shapes.

This module is the single source of truth for both deployments. The local stack is built from
it by ``create_local_stack``; the CloudFormation template is checked against it by the template
test, so the two cannot drift apart silently.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from core.aws.clients import Clients
from core.aws.settings import DEFAULT_RETRY_SCHEDULE_S, INCOMING_PREFIX, Settings

MAX_RECEIVE_COUNT = 5
VISIBILITY_FACTOR = 6  # AWS: queue visibility >= 6x the consuming function's timeout
DLQ_RETENTION_S = 14 * 24 * 3600

# Files (ledger) table and its indexes, used by status, replay and reconcile.
FILES_KEY = "file_id"
FILES_STATUS_INDEX = "status-index"  # status + updated_at
FILES_OBJECT_INDEX = "object-index"  # object_key + received_at
FILES_TTL_ATTRIBUTE = "expires_at"
# Orders table and the index that counts the orders one file version wrote.
ORDERS_KEY = "Order_Id"
ORDERS_SOURCE_INDEX = "source-index"  # source_file_id


@dataclass(frozen=True)
class Timings:
    """Function timeouts and the queue settings derived from them."""

    ingest_timeout_s: int
    notify_timeout_s: int
    notify_batch_window_s: int
    ingest_batch_size: int = 10
    notify_batch_size: int = 50
    # Seconds a failed message waits before its next receive, by receive count (retry.py).
    retry_schedule_s: tuple[int, ...] = DEFAULT_RETRY_SCHEDULE_S

    @property
    def ingest_visibility_s(self) -> int:
        return self.ingest_timeout_s * VISIBILITY_FACTOR

    @property
    def notify_visibility_s(self) -> int:
        return self.notify_timeout_s * VISIBILITY_FACTOR


# On AWS: generous timeouts for 5M-row files, and one file per ingest invocation: files in
# one batch run one after another, so a large one would hold the others back and a timeout
# would send the whole batch round again; Lambda scales out per message instead.
AWS_TIMINGS = Timings(
    ingest_timeout_s=900, notify_timeout_s=60, notify_batch_window_s=30, ingest_batch_size=1
)
# On a laptop: the same retry policy, scaled so that a transient fault costs a second or two
# and a poison message reaches its DLQ in about 15 s (1 + 2 + 4 + 8, then at once). The waits
# still outlast the local lease (timeout + 5 s), so a busy file is not dead-lettered for
# waiting. The local worker extends visibility while it works, so a long file is not
# redelivered mid-way.
LOCAL_TIMINGS = Timings(
    ingest_timeout_s=2, notify_timeout_s=2, notify_batch_window_s=2, retry_schedule_s=(1, 2, 4, 8)
)


# Each function's Powertools service name (Logger, Tracer and Metrics alike): its function name,
# orderpipe-<env>-<job>, without the env, so every stack reports under one name. The template's
# POWERTOOLS_SERVICE_NAME says the same (tests/unit/test_template.py).
INGEST_SERVICE = "orderpipe-ingest"
NOTIFY_SERVICE = "orderpipe-notify"


@dataclass(frozen=True)
class StackNames:
    bucket: str
    orders_table: str
    files_table: str
    ingest_queue: str
    ingest_dlq: str
    notify_queue: str
    notify_dlq: str
    alerts_topic: str
    alerts_inbox_queue: str
    glue_job: str

    @classmethod
    def for_env(cls, env: str = "local") -> StackNames:
        p = f"orderpipe-{env}"
        return cls(
            bucket=f"{p}-orders",
            orders_table=f"{p}-orders",
            files_table=f"{p}-files",
            ingest_queue=f"{p}-ingest",
            ingest_dlq=f"{p}-ingest-dlq",
            notify_queue=f"{p}-notify",
            notify_dlq=f"{p}-notify-dlq",
            alerts_topic=f"{p}-alerts",
            alerts_inbox_queue=f"{p}-alerts-inbox",
            glue_job=f"{p}-reconcile",
        )


def files_table_definition(name: str) -> dict[str, Any]:
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": FILES_KEY, "KeyType": "HASH"}],
        "AttributeDefinitions": [
            {"AttributeName": FILES_KEY, "AttributeType": "S"},
            {"AttributeName": "status", "AttributeType": "S"},
            {"AttributeName": "updated_at", "AttributeType": "S"},
            {"AttributeName": "object_key", "AttributeType": "S"},
            {"AttributeName": "received_at", "AttributeType": "S"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": FILES_STATUS_INDEX,
                "KeySchema": [
                    {"AttributeName": "status", "KeyType": "HASH"},
                    {"AttributeName": "updated_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": FILES_OBJECT_INDEX,
                "KeySchema": [
                    {"AttributeName": "object_key", "KeyType": "HASH"},
                    {"AttributeName": "received_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
    }


def orders_table_definition(name: str) -> dict[str, Any]:
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": ORDERS_KEY, "KeyType": "HASH"}],
        "AttributeDefinitions": [
            {"AttributeName": ORDERS_KEY, "AttributeType": "S"},
            {"AttributeName": "source_file_id", "AttributeType": "S"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": ORDERS_SOURCE_INDEX,
                "KeySchema": [{"AttributeName": "source_file_id", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    }


def _queue_with_dlq(sqs: Any, name: str, dlq_name: str, visibility_s: int) -> tuple[str, str]:
    dlq_url = sqs.create_queue(
        QueueName=dlq_name, Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_S)}
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_s),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
            ),
        },
    )["QueueUrl"]
    return url, dlq_url


def create_local_stack(
    clients: Clients,
    names: StackNames,
    *,
    timings: Timings = LOCAL_TIMINGS,
    sender: str = "orders@orderpipe.local",
    recipients: tuple[str, ...] = ("ops@orderpipe.local",),
    outbox_dir: str = "",
) -> Settings:
    """Create on the emulator what the template creates on AWS; return the wiring.

    Idempotent: creating an existing resource returns it, so ``orderpipe local`` can restart
    against a running emulator.
    """
    s3, sqs, ddb, sns = clients.s3, clients.sqs, clients.dynamodb, clients.sns

    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=names.bucket)
    s3.put_bucket_versioning(Bucket=names.bucket, VersioningConfiguration={"Status": "Enabled"})

    ingest_url, _ = _queue_with_dlq(
        sqs, names.ingest_queue, names.ingest_dlq, timings.ingest_visibility_s
    )
    notify_url, _ = _queue_with_dlq(
        sqs, names.notify_queue, names.notify_dlq, timings.notify_visibility_s
    )
    ingest_arn = sqs.get_queue_attributes(QueueUrl=ingest_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=names.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": ingest_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": INCOMING_PREFIX}]}
                    },
                }
            ]
        },
    )

    for definition in (
        files_table_definition(names.files_table),
        orders_table_definition(names.orders_table),
    ):
        # Ask for it and accept "already there": a list of tables comes 100 names a page.
        with contextlib.suppress(ddb.exceptions.ResourceInUseException):
            ddb.create_table(**definition)

    topic_arn = sns.create_topic(Name=names.alerts_topic)["TopicArn"]
    inbox_url = sqs.create_queue(QueueName=names.alerts_inbox_queue)["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=inbox_arn,
        Attributes={"RawMessageDelivery": "true"},
    )

    clients.ses.verify_email_identity(EmailAddress=sender)

    return Settings(
        bucket=names.bucket,
        orders_table=names.orders_table,
        files_table=names.files_table,
        ingest_queue_url=ingest_url,
        notify_queue_url=notify_url,
        alerts_topic_arn=topic_arn,
        sender=sender,
        recipients=recipients,
        function_timeout_s=timings.ingest_timeout_s,
        outbox_dir=outbox_dir,
        retry_schedule_s=timings.retry_schedule_s,
    )
