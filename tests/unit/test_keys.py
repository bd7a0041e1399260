"""Any key S3 accepts survives every path: event decoding, replay bodies, rejects keys, user
metadata and the email. Keys are generated (hypothesis): any UTF-8 up to 1,024 bytes."""

from __future__ import annotations

import html
import json
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.ops.event_messages import ObjectVersion, objects_in_body, s3_event_body
from core.pipeline.email_report import compose
from core.pipeline.events import (
    EventShapeError,
    FileRef,
    decode_key,
    encode_key,
    event_body,
    header_safe,
    parse_body,
)
from core.pipeline.ingest import (
    MULTIPART_THRESHOLD,
    S3Objects,
    rejects_key_for,
    rejects_metadata,
)
from core.pipeline.notice import FileNotice, SampleRow
from core.validation.visible import visible

BUCKET = "orderpipe-test-orders"
ISSUE_KEY = "incoming/Q4 orders – Zürich+Genève (final) 📦.csv"
HARD_KEYS = [
    ISSUE_KEY,
    "incoming/a+b c%20d%2F.csv",  # a literal +, a space, and text that looks like escapes
    "incoming/\"quoted\" 'single' #1 ?x=1&y=2.csv",
    "incoming/طلبات الربع الرابع.csv",  # right-to-left
    "incoming/שלום\u200f עולם.csv",  # with a right-to-left mark
    "incoming/ends with space .csv ",
    "incoming/new\nline\ttab\r.csv",
    "incoming/" + "ü" * 507,  # 1,023 bytes: at S3's limit
    "incoming/" + "x" * 1015,  # exactly 1,024 bytes
]

# Any Unicode scalar value (S3 keys are UTF-8: no lone surrogates), at most 1,024 bytes.
keys = (
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=300)
    .map(lambda rest: "incoming/" + rest)
    .filter(lambda k: len(k.encode()) <= 1024)
)


def s3_record(encoded_key: str) -> str:
    """An S3 notification body with the key as some S3 (real or emulated) encoded it."""
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventTime": "2026-12-04T10:00:00.000Z",
                    "eventName": "ObjectCreated:CompleteMultipartUpload",
                    "s3": {
                        "bucket": {"name": BUCKET},
                        "object": {"key": encoded_key, "size": 9, "eTag": "abc-2"},
                    },
                }
            ]
        }
    )


ENCODERS = {
    "aws": lambda k: quote_plus(k, safe="/"),  # "+" for a space, "/" kept
    "moto": quote_plus,  # "/" as %2F too
    "localstack": lambda k: quote(k, safe="/"),  # "%20" for a space
}


@settings(max_examples=100, deadline=None)
@given(key=keys)
@pytest.mark.parametrize("emulator", sorted(ENCODERS))
def test_event_keys_decode_to_the_exact_key(emulator: str, key: str) -> None:
    (ref,) = parse_body(s3_record(ENCODERS[emulator](key)))
    assert ref.key == key


@pytest.mark.parametrize("key", HARD_KEYS)
@pytest.mark.parametrize("emulator", sorted(ENCODERS))
def test_hard_keys_decode_to_the_exact_key(emulator: str, key: str) -> None:
    (ref,) = parse_body(s3_record(ENCODERS[emulator](key)))
    assert ref.key == key
    assert ref.file_id == f"{BUCKET}/{key}#etag:abc-2"


def test_aws_encodes_plus_and_space_apart() -> None:
    # What S3 sends for the issue's key: "+" for the space, "%2B" for the plus.
    encoded = encode_key(ISSUE_KEY)
    assert "Zürich" not in encoded
    assert "Z%C3%BCrich%2BGen%C3%A8ve" in encoded
    assert encoded.startswith("incoming/Q4+orders+%E2%80%93+")
    assert decode_key(encoded) == ISSUE_KEY


def test_a_key_that_is_not_utf8_is_a_clear_shape_error() -> None:
    with pytest.raises(EventShapeError, match="UTF-8"):
        parse_body(s3_record("incoming/%FF%FE.csv"))


@settings(max_examples=100, deadline=None)
@given(key=keys)
@example(key=ISSUE_KEY)
def test_bodies_orderpipe_writes_read_back_the_same_key(key: str) -> None:
    ref = FileRef(BUCKET, key, "", "abc", 9, "2026-12-04T10:00:00.000Z")
    assert [r.key for r in parse_body(event_body([ref]))] == [key]
    # replay and reconcile put S3-shaped bodies on the queue; the DLQ listing reads them
    body = s3_event_body(
        ObjectVersion(BUCKET, key, "etag:abc", "abc", 9, ref.event_time), source="replay"
    )
    assert [r.key for r in parse_body(body)] == [key]
    assert [o.key for o in objects_in_body(body)] == [key]


@settings(max_examples=100, deadline=None)
@given(key=keys)
@example(key=ISSUE_KEY)
@example(key="incoming/" + "ü" * 507)
@example(key="x" * 1024)
def test_rejects_keys_stay_valid_s3_keys(key: str) -> None:
    rejects = rejects_key_for(key)
    assert rejects.startswith("rejects/")
    assert rejects.endswith(".csv")
    assert len(rejects.encode()) <= 1024
    assert rejects_key_for(key) == rejects  # the same file always gets the same CSV
    plain = "rejects/" + key.removeprefix("incoming/")
    plain += "" if plain.lower().endswith(".csv") else ".csv"
    if len(plain.encode()) <= 1024:
        assert rejects == plain  # the name is kept whenever it fits


def test_long_keys_that_share_a_start_get_distinct_rejects_keys() -> None:
    a, b = "incoming/" + "y" * 1014 + "a", "incoming/" + "y" * 1014 + "b"  # 1,024 bytes each
    assert rejects_key_for(a) != rejects_key_for(b)


@settings(max_examples=100, deadline=None)
@given(key=keys)
@example(key=ISSUE_KEY)
def test_header_values_are_printable_ascii_and_lossless(key: str) -> None:
    value = header_safe(key)
    assert value.isascii()
    assert value.isprintable()
    assert " " not in value
    assert unquote(value, errors="strict") == key


def _metadata_bytes(meta: dict[str, str]) -> int:
    """User metadata's size as S3 measures it: names and values, in UTF-8 bytes."""
    return sum(len(name.encode()) + len(value.encode()) for name, value in meta.items())


@settings(max_examples=100, deadline=None)
@given(key=keys)
@example(key=ISSUE_KEY)
@example(key="incoming/" + "ü" * 507)
def test_rejects_metadata_stays_within_s3s_2_kb(key: str) -> None:
    # S3 refuses a PUT with more than 2 KB of user metadata (MetadataTooLarge); moto and
    # botocore accept it, so only this bound keeps a long non-ASCII key out of the DLQ on AWS.
    ref = FileRef(BUCKET, key, "3HL4kqtJvjVBH40Nrjfkd" * 2, "abc", 9, "2026-12-04T10:00:00.000Z")
    meta = rejects_metadata(ref)
    assert _metadata_bytes(meta) <= 2000
    assert meta["source-version"] == ref.version_tag
    if "source-key" in meta:
        assert unquote(meta["source-key"], errors="strict") == key


def test_rejects_metadata_keeps_a_key_that_fits_and_leaves_out_one_that_cannot() -> None:
    short = rejects_metadata(FileRef(BUCKET, ISSUE_KEY, "v1", "abc", 9, "2026-12-04T10:00Z"))
    assert unquote(short["source-key"]) == ISSUE_KEY
    longest = "incoming/" + "ü" * 507  # 1,023 bytes; percent-encoded, 3,051
    assert "source-key" not in rejects_metadata(
        FileRef(BUCKET, longest, "v1", "abc", 9, "2026-12-04T10:00Z")
    )


@settings(max_examples=60, deadline=None)
@given(key=keys)
@example(key=ISSUE_KEY)
@example(key="incoming/new\nline\r.csv")
def test_rejects_are_stored_through_botocore_with_any_key(key: str, tmp_path_factory: Any) -> None:
    # botocore refuses non-ASCII user metadata before anything is sent: the real S3 adapter
    # must pass its validation (the stub stands in for the network only).
    client = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    path = tmp_path_factory.mktemp("rejects") / "rejects.csv"
    path.write_bytes(b"line,reasons\n2,bad\n")
    assert path.stat().st_size < MULTIPART_THRESHOLD
    ref = FileRef(BUCKET, key, "", "abc", 9, "2026-12-04T10:00:00.000Z")
    with Stubber(client) as stub:
        stub.add_response("put_object", {})
        S3Objects(client).put(ref, rejects_key_for(key), path)
        stub.assert_no_pending_responses()


@settings(max_examples=100, deadline=None)
@given(key=keys)
@example(key=ISSUE_KEY)
@example(key="incoming/<b>bold</b>\n&amp;.csv")
def test_the_email_names_the_key_exactly_and_escapes_it_in_html(key: str) -> None:
    notice = FileNotice(
        file_id=f"{BUCKET}/{key}#etag:abc",
        bucket=BUCKET,
        key=key,
        version="etag:abc",
        status="PARTIAL",
        rows=3,
        valid=2,
        invalid=1,
        reasons={"date_invalid": 1},
        error=None,
        rejects_key=rejects_key_for(key),
        sample=[SampleRow(2, {"Order_Id": "A1"}, ["date_invalid"])],
        finished_at="2026-12-04T10:00:01.000Z",
    )
    data = compose([notice], _OneCsvStore(), sender="s@x.test", recipients=["r@x.test"]).data
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    assert text is not None
    assert page is not None
    assert "\n" not in str(message["Subject"])
    # The email shows the key exactly; a character a person could not see or that would break
    # the text (a control character) is spelled as an escape, as everywhere orderpipe shows it.
    shown = visible(key)
    assert f"s3://{BUCKET}/{shown}" in text.get_content()
    assert html.escape(shown) in page.get_content()
    if key.isprintable():
        assert shown == key
    assert str(message["Subject"]).strip().startswith("orderpipe: ")
    (attached,) = message.iter_attachments()
    assert attached.get_content() == "line,reasons\n2,bad\n"


class _OneCsvStore:
    """The file's rejects CSV, whatever its key."""

    def size(self, bucket: str, key: str) -> int | None:
        return len(CSV)

    def read(self, bucket: str, key: str) -> bytes:
        return CSV

    def presign(self, bucket: str, key: str, expires_s: int) -> str:
        raise AssertionError("a small CSV is attached, not linked")


CSV = b"line,reasons\n2,bad\n"
