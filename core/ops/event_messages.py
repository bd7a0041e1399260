"""S3 event messages that orderpipe itself puts on the ingest queue (replay, reconcile).

A re-enqueued file travels in exactly the shape S3 sends, so ingest has one parser and one
path. ``configurationId`` says who sent it. Python 3.9-compatible: the Glue reconcile job
imports this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote_plus, unquote_plus

# Top-level body field naming a replay ({"id", "reason"}); ingest (core/pipeline/events.py,
# same name) lets a finished version run again once per replay id. Everything else is what S3 sends.
REPLAY_FIELD = "orderpipe_replay"
ETAG_VERSION_PREFIX = "etag:"
# datetime.UTC arrived in 3.11; the Glue job runs 3.9.
UTC = timezone.utc  # noqa: UP017


def iso_now(now: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``: the ledger's time format."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """Read the ledger's (or S3's) ISO time; naive values are taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


@dataclass(frozen=True)
class ObjectVersion:
    """One version of one object, as an S3 event names it."""

    bucket: str
    key: str
    version: str  # S3 versionId, or "etag:<etag>" when there is none
    etag: str
    size: int
    event_time: str

    @property
    def file_id(self) -> str:
        return f"{self.bucket}/{self.key}#{self.version}"

    @property
    def version_id(self) -> str | None:
        """The real S3 version id, or None when the version is only known by its ETag."""
        if not self.version or self.version.startswith(ETAG_VERSION_PREFIX):
            return None
        return self.version


def s3_version(version: str | None) -> str | None:
    """A ledger version string as the S3 version id people see, None when only the ETag is known."""
    if not version or version.startswith(ETAG_VERSION_PREFIX):
        return None
    return version


def version_for(version_id: str | None, etag: str) -> str:
    """The ledger's version string: the S3 versionId, else ``etag:<etag>`` (unversioned)."""
    if version_id and version_id != "null":
        return version_id
    return ETAG_VERSION_PREFIX + etag.strip('"')


def s3_event_body(
    obj: ObjectVersion,
    *,
    source: str,
    region: str = "us-east-1",
    replay_id: str | None = None,
    replay_reason: str = "",
) -> str:
    """The JSON body S3 would have sent for ``obj`` (ObjectCreated:Put, one record).

    ``source`` goes in ``configurationId`` so a person reading the queue sees who sent it.
    """
    s3_object: dict[str, Any] = {
        "key": quote_plus(obj.key, safe="/"),
        "size": obj.size,
        "eTag": obj.etag.strip('"'),
    }
    if obj.version_id:
        s3_object["versionId"] = obj.version_id
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": obj.event_time,
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "orderpipe"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": source,
            "bucket": {
                "name": obj.bucket,
                "ownerIdentity": {"principalId": "orderpipe"},
                "arn": f"arn:aws:s3:::{obj.bucket}",
            },
            "object": s3_object,
        },
    }
    doc: dict[str, Any] = {"Records": [record]}
    if replay_id:
        doc[REPLAY_FIELD] = {"id": replay_id, "reason": replay_reason}
    return json.dumps(doc, separators=(",", ":"))


def objects_in_body(body: str) -> list[ObjectVersion]:
    """The objects an S3 event body names, for display; tolerant, never raises.

    Ingest parses strictly (core/pipeline/events.py); operators looking at a dead letter want to see
    whatever can be read, so a malformed body yields an empty list here.
    """
    try:
        parsed = json.loads(body)
    except ValueError:
        return []
    if not isinstance(parsed, dict):
        return []
    found: list[ObjectVersion] = []
    for record in parsed.get("Records") or []:
        try:
            s3 = record["s3"]
            bucket = s3["bucket"]["name"]
            raw = s3["object"]
            key = unquote_plus(raw["key"])
            etag = str(raw.get("eTag", "")).strip('"')
            found.append(
                ObjectVersion(
                    bucket=bucket,
                    key=key,
                    version=version_for(raw.get("versionId"), etag),
                    etag=etag,
                    size=int(raw.get("size") or 0),
                    event_time=str(record.get("eventTime", "")),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return found
