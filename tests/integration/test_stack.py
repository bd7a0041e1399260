"""The local stack is wired as the template wires AWS: uploads under incoming/ reach ingest."""

from __future__ import annotations

import json
from urllib.parse import unquote_plus

import pytest

pytestmark = pytest.mark.integration


def test_upload_under_incoming_enqueues_one_s3_event(stack) -> None:
    s3, sqs = stack.clients.s3, stack.clients.sqs
    s3.put_object(Bucket=stack.names.bucket, Key="incoming/a b.csv", Body=b"x")
    s3.put_object(Bucket=stack.names.bucket, Key="elsewhere/c.csv", Body=b"x")
    got = sqs.receive_message(
        QueueUrl=stack.settings.ingest_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", [])
    # The emulator escapes "/" as %2F where AWS does not; both decode the same way.
    keys = [
        unquote_plus(r["s3"]["object"]["key"])
        for m in got
        for r in json.loads(m["Body"]).get("Records", [])
    ]
    assert keys == ["incoming/a b.csv"]


def test_ingest_queue_dead_letters_after_five_receives(stack) -> None:
    sqs = stack.clients.sqs
    attrs = sqs.get_queue_attributes(
        QueueUrl=stack.settings.ingest_queue_url, AttributeNames=["RedrivePolicy"]
    )["Attributes"]
    assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] in (5, "5")


def test_creating_the_stack_twice_is_harmless(stack) -> None:
    from core.aws.stack import create_local_stack

    again = create_local_stack(stack.clients, stack.names)
    assert again.ingest_queue_url == stack.settings.ingest_queue_url
