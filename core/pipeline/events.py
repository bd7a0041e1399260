"""S3 notifications as they arrive on the ingest queue, parsed once at the edge.

An SQS message body is one of:
- an S3 event notification: ``{"Records": [...]}``, one or several records;
- the ``s3:TestEvent`` S3 sends when a queue is subscribed (no records; skipped);
- an S3 event with an ``orderpipe_replay`` field, put there by ``orderpipe replay`` so that a
  version already finished runs again (once per replay id).
Anything else is an ``EventShapeError``: that message fails alone and, after its retries, lands
in the DLQ where a person can look at it.

Keys: S3 URL-encodes the key in an event the way ``quote_plus`` does (``+`` for a space,
``%XX`` for every other byte that is not a letter, digit or ``/_.-~``: ``+`` itself arrives as
``%2B``). The emulators differ only in what they leave alone (moto also escapes ``/``,
LocalStack writes ``%20`` for a space), so ``unquote_plus`` reads all three back to the exact
key, any UTF-8 up to S3's 1,024 bytes. A raw key never goes into an HTTP header or S3 user
metadata, which take ASCII only: ``header_safe`` percent-encodes it for those.

The record fields are read through Powertools' ``S3Event`` data class. Hand-written here, since
it does not do them: the test event and ``orderpipe_replay`` (not S3 fields), the strict shape
checks that turn a stranger's message into one clear error, and key decoding (Powertools'
``S3Object.key`` returns the key still URL-encoded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord

REPLAY_FIELD = "orderpipe_replay"
TEST_EVENT = "s3:TestEvent"
# S3 sequencers are hex strings of varying length; left-padding makes them compare as numbers.
SEQUENCER_WIDTH = 32


class EventShapeError(ValueError):
    """The message is not an S3 notification orderpipe understands."""


@dataclass(frozen=True)
class Replay:
    id: str
    reason: str


@dataclass(frozen=True)
class FileRef:
    """One version of one object, as named by an S3 ObjectCreated record."""

    bucket: str
    key: str
    version: str  # S3 versionId; "" when the event has none (unversioned bucket, emulator)
    etag: str
    size: int
    event_time: str  # ISO-8601 UTC with milliseconds and "Z"
    sequencer: str = ""
    replay: Replay | None = None

    @property
    def version_tag(self) -> str:
        return self.version if self.version else f"etag:{self.etag}"

    @property
    def file_id(self) -> str:
        return f"{self.bucket}/{self.key}#{self.version_tag}"

    @property
    def rank(self) -> str:
        """Total order of uploads: event time, then sequencer, then version/ETag, then file id.

        Stored on every order it writes; an order is only replaced by a row of higher rank, so
        replays and late deliveries never move an order backwards. The string compares
        correctly because each part before the last is fixed-width or a stable tiebreak.
        """
        seq = self.sequencer.upper().rjust(SEQUENCER_WIDTH, "0")
        return f"{self.event_time}|{seq}|{self.version_tag}|{self.file_id}"


def normalise_time(raw: str) -> str:
    """ISO-8601 in any offset → ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC), which sorts as text."""
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise EventShapeError(f"eventTime is not an ISO-8601 time: {raw!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return iso_ms(parsed)


def iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def encode_key(key: str) -> str:
    """A key as S3 writes it in an event notification (what ``decode_key`` reads back)."""
    return quote_plus(key, safe="/")


def decode_key(encoded: str) -> str:
    """An event's key as S3 (``+`` for a space), moto (``%2F``) or LocalStack (``%20``) wrote it."""
    return unquote_plus(encoded, errors="strict")


def header_safe(key: str) -> str:
    """A key for an HTTP header or S3 user metadata (ASCII only): percent-encoded UTF-8."""
    return quote(key, safe="/")


def _record(record: S3EventRecord, replay: Replay | None) -> FileRef | None:
    if not isinstance(record.raw_event, dict):
        raise EventShapeError("an S3 record is not an object")
    if record.get("eventSource") != "aws:s3":
        raise EventShapeError(f"not an S3 record: eventSource={record.get('eventSource')!r}")
    if not str(record.get("eventName", "")).startswith("ObjectCreated"):
        return None  # removals, restores and the like name no new file to ingest
    try:
        obj = record.s3.get_object
        return FileRef(
            bucket=str(record.s3.bucket.name),
            key=decode_key(str(obj.key)),
            version=_version(obj.version_id),
            etag=str(obj.etag or obj.get("etag") or "").strip('"'),
            size=int(obj.get("size") or 0),
            event_time=normalise_time(str(record.event_time)),
            sequencer=str(obj.get("sequencer") or ""),
            replay=replay,
        )
    except (KeyError, TypeError) as exc:
        raise EventShapeError(f"S3 record lacks {exc}") from None
    except UnicodeDecodeError:
        raise EventShapeError("S3 record's key is not URL-encoded UTF-8") from None


def _version(raw: Any) -> str:
    # An unversioned bucket reports "null": such a version is known by its ETag only.
    text = str(raw or "")
    return "" if text == "null" else text


def _replay(raw: Any) -> Replay | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw.get("id"):
        raise EventShapeError(f"{REPLAY_FIELD} must be an object with an id")
    return Replay(id=str(raw["id"]), reason=str(raw.get("reason", "")))


def parse_body(body: str) -> list[FileRef]:
    """The files named by one SQS message body; [] for a test event. Raises EventShapeError."""
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise EventShapeError(f"message body is not JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise EventShapeError("message body is not a JSON object")
    if doc.get("Event") == TEST_EVENT:
        return []
    records = doc.get("Records")
    if not isinstance(records, list) or not records:
        raise EventShapeError("message body has no S3 Records")
    replay = _replay(doc.get(REPLAY_FIELD))
    refs = (_record(record, replay) for record in S3Event(doc).records)
    return [ref for ref in refs if ref is not None]


def event_body(refs: list[FileRef], *, replay: Replay | None = None) -> str:
    """An S3 notification body naming ``refs`` — the exact shape S3 sends (for replay, tests)."""
    records = []
    for ref in refs:
        obj: dict[str, Any] = {"key": encode_key(ref.key), "size": ref.size}
        if ref.etag:
            obj["eTag"] = ref.etag
        if ref.version:
            obj["versionId"] = ref.version
        if ref.sequencer:
            obj["sequencer"] = ref.sequencer
        records.append(
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventTime": ref.event_time,
                "eventName": "ObjectCreated:Put",
                "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": ref.bucket}, "object": obj},
            }
        )
    doc: dict[str, Any] = {"Records": records}
    if replay is not None:
        doc[REPLAY_FIELD] = {"id": replay.id, "reason": replay.reason}
    return json.dumps(doc, separators=(",", ":"))
