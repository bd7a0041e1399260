"""AWS adapters for the operations tools, first of all the hourly reconcile.

Each takes a boto3 client in its constructor (core/aws/clients.py builds them). Python
3.9-compatible and free of polars: the Glue reconcile job imports this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from core.ops.event_messages import UTC, ObjectVersion, iso_now, version_for

BATCH_GET_MAX = 100  # DynamoDB BatchGetItem keys per call
SQS_BATCH_MAX = 10

_deserializer = TypeDeserializer()


def _plain(value: Any) -> Any:
    """DynamoDB values as plain JSON-able Python: whole Decimals become int."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, set, tuple)):
        return [_plain(v) for v in value]
    return value


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


@dataclass(frozen=True)
class LedgerRecord:
    """The fields of a files-table item the operations tools read (see the team brief)."""

    file_id: str
    bucket: str
    object_key: str
    version: str
    etag: str
    size: int
    event_time: str
    status: str
    valid: int = 0
    rows: int = 0
    invalid: int = 0
    attempts: int = 0
    error: str | None = None
    last_error: str | None = None
    received_at: str = ""
    started_at: str = ""
    finished_at: str = ""
    updated_at: str = ""
    lease_until: int = 0
    replays: int = 0
    replay_log: list[dict[str, Any]] = field(default_factory=list)
    # Orders this version stored; None on entries written before ingest recorded it.
    written: int | None = None
    # Of ``written``, orders newer uploads took over since (ingest records them per taker).
    taken: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_plain(cls, item: dict[str, Any]) -> LedgerRecord:
        def text(name: str) -> str:
            value = item.get(name)
            return "" if value is None else str(value)

        def number(name: str) -> int:
            try:
                return int(item.get(name) or 0)
            except (TypeError, ValueError):
                return 0

        return cls(
            file_id=text("file_id"),
            bucket=text("bucket"),
            object_key=text("object_key"),
            version=text("version"),
            etag=text("etag"),
            size=number("size"),
            event_time=text("event_time"),
            status=text("status"),
            valid=number("valid"),
            rows=number("rows"),
            invalid=number("invalid"),
            attempts=number("attempts"),
            error=item.get("error"),
            last_error=item.get("last_error"),
            received_at=text("received_at"),
            started_at=text("started_at"),
            finished_at=text("finished_at"),
            updated_at=text("updated_at"),
            lease_until=number("lease_until"),
            replays=number("replays"),
            replay_log=list(item.get("replay_log") or []),
            written=number("written") if "written" in item else None,
            taken=_taken(item.get("taken")),
            raw=item,
        )

    @property
    def object_version(self) -> ObjectVersion:
        return ObjectVersion(
            bucket=self.bucket,
            key=self.object_key,
            version=self.version,
            etag=self.etag,
            size=self.size,
            event_time=self.event_time or self.received_at,
        )


def _taken(value: Any) -> int:
    """The sum of a ``taken`` map (taker file id → orders); 0 when absent or malformed."""
    if not isinstance(value, dict):
        return 0
    total = 0
    for n in value.values():
        try:
            total += int(n)
        except (TypeError, ValueError):
            continue
    return total


class LedgerReader:
    """Read-only files-table queries for the Glue job (and the raw items the DLQ review shows).

    core/pipeline/ledger.py is the ledger; it needs Python 3.11, and the Glue job runs 3.9, so
    reconcile reads the same item shape through these few queries instead.
    ``LedgerRecord.raw`` keeps attributes other parts add (notify's ``notify_error``).
    """

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._ddb = dynamodb
        self._table = table

    def get(self, file_id: str) -> LedgerRecord | None:
        got = self._ddb.get_item(TableName=self._table, Key={"file_id": {"S": file_id}})
        item = got.get("Item")
        return LedgerRecord.from_plain(from_item(item)) if item else None

    def get_many(self, file_ids: Iterable[str]) -> dict[str, LedgerRecord]:
        """BatchGetItem in calls of 100, retrying unprocessed keys with backoff."""
        wanted = list(dict.fromkeys(file_ids))
        found: dict[str, LedgerRecord] = {}
        for start in range(0, len(wanted), BATCH_GET_MAX):
            keys = [{"file_id": {"S": f}} for f in wanted[start : start + BATCH_GET_MAX]]
            request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
            delay = 0.05
            while request:
                got = self._ddb.batch_get_item(RequestItems=request)
                for item in got.get("Responses", {}).get(self._table, []):
                    record = LedgerRecord.from_plain(from_item(item))
                    found[record.file_id] = record
                request = got.get("UnprocessedKeys") or {}
                if request:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        return found

    def by_status(self, status: str, since: str | None = None) -> Iterator[LedgerRecord]:
        """Entries in one status (status-index), optionally updated at or after ``since``."""
        condition = "#s = :s"
        values: dict[str, Any] = {":s": {"S": status}}
        names = {"#s": "status"}
        if since:
            condition += " AND #u >= :u"
            values[":u"] = {"S": since}
            names["#u"] = "updated_at"
        pages = self._ddb.get_paginator("query").paginate(
            TableName=self._table,
            IndexName="status-index",
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ExpressionAttributeNames=names,
        )
        for page in pages:
            for item in page.get("Items", []):
                yield LedgerRecord.from_plain(from_item(item))


class OrderCounter:
    """How many orders in the orders table came from one file version (source-index)."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._ddb = dynamodb
        self._table = table

    def count(self, file_id: str) -> int:
        pages = self._ddb.get_paginator("query").paginate(
            TableName=self._table,
            IndexName="source-index",
            KeyConditionExpression="source_file_id = :f",
            ExpressionAttributeValues={":f": {"S": file_id}},
            Select="COUNT",
        )
        return sum(int(page.get("Count", 0)) for page in pages)


@dataclass(frozen=True)
class StoredObject:
    """The current version of an object in the bucket."""

    key: str
    version_id: str | None
    etag: str
    size: int
    last_modified: datetime

    def as_version(self, bucket: str) -> ObjectVersion:
        return ObjectVersion(
            bucket=bucket,
            key=self.key,
            version=version_for(self.version_id, self.etag),
            etag=self.etag.strip('"'),
            size=self.size,
            event_time=iso_now(self.last_modified),
        )

    def candidate_versions(self) -> list[str]:
        """The version strings an S3 event for this object may have produced.

        AWS events carry the versionId; the local emulator's carry none, so ingest falls back
        to the ETag. Checking both finds the ledger entry whichever way the event came.
        """
        candidates = [version_for(None, self.etag)]
        if self.version_id and self.version_id != "null":
            candidates.insert(0, self.version_id)
        return candidates


class BucketObjects:
    """Current object versions under a prefix, streamed page by page."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def current(self, prefix: str) -> Iterator[StoredObject]:
        paginator = self._s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for version in page.get("Versions", []):
                if not version.get("IsLatest"):
                    continue
                yield StoredObject(
                    key=version["Key"],
                    version_id=version.get("VersionId"),
                    etag=str(version.get("ETag", "")).strip('"'),
                    size=int(version.get("Size", 0)),
                    last_modified=version["LastModified"].astimezone(UTC),
                )

    def head(self, key: str) -> StoredObject | None:
        """The current version of one key, or None when there is none (deleted, absent)."""
        try:
            got = self._s3.head_object(Bucket=self.bucket, Key=key)
        except self._s3.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound", "405", "MethodNotAllowed"):
                return None
            raise
        return StoredObject(
            key=key,
            version_id=got.get("VersionId"),
            etag=str(got.get("ETag", "")).strip('"'),
            size=int(got.get("ContentLength", 0)),
            last_modified=got["LastModified"].astimezone(UTC),
        )

    def put_json(self, key: str, body: dict[str, Any]) -> None:
        self._s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(body, indent=2, sort_keys=True).encode(),
            ContentType="application/json",
        )


class IngestQueue:
    """Puts S3-shaped event messages on the ingest queue, ten per call."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self.url = queue_url

    def send(self, bodies: list[tuple[str, dict[str, str]]]) -> list[str]:
        """Send (body, string attributes) pairs; return the ids of the ones that failed."""
        failed: list[str] = []
        for start in range(0, len(bodies), SQS_BATCH_MAX):
            entries = []
            for n, (body, attributes) in enumerate(bodies[start : start + SQS_BATCH_MAX]):
                entry: dict[str, Any] = {"Id": str(start + n), "MessageBody": body}
                if attributes:
                    entry["MessageAttributes"] = {
                        k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
                    }
                entries.append(entry)
            got = self._sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
            failed.extend(f["Id"] for f in got.get("Failed", []))
        return failed


class AlertsTopic:
    """The alerts SNS topic: a plain-text summary for e-mail, JSON for queues."""

    def __init__(self, sns: Any, topic_arn: str) -> None:
        self._sns = sns
        self._arn = topic_arn

    def publish(self, subject: str, text: str, document: dict[str, Any]) -> None:
        self._sns.publish(
            TopicArn=self._arn,
            Subject=subject[:100],  # SNS limit
            MessageStructure="json",
            Message=json.dumps({"default": text, "sqs": json.dumps(document, sort_keys=True)}),
        )


class CloudWatchMetrics:
    """Counts as CloudWatch metrics (namespace ``orderpipe``); Glue has no EMF log agent."""

    def __init__(self, cloudwatch: Any, namespace: str = "orderpipe") -> None:
        self._cw = cloudwatch
        self._namespace = namespace

    def put(self, counts: dict[str, int]) -> None:
        data = [
            {"MetricName": name, "Value": float(v), "Unit": "Count"} for name, v in counts.items()
        ]
        for start in range(0, len(data), 20):
            self._cw.put_metric_data(Namespace=self._namespace, MetricData=data[start : start + 20])
