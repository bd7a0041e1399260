"""The worker speaks Lambda's SQS dialect: event records in, partial batch failures out."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from botocore.exceptions import ClientError

from core.local.worker import LambdaContext, QueueConsumer, QueueSpec, failed_ids, lambda_record

MESSAGE = {
    "MessageId": "m-1",
    "ReceiptHandle": "rh-1",
    "Body": '{"Records": []}',
    "MD5OfBody": "abc",
    "Attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1700000000000"},
    "MessageAttributes": {
        "kind": {"StringValue": "notice", "DataType": "String"},
        "blob": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
    },
}


def test_record_has_the_fields_lambda_sends() -> None:
    record = lambda_record(MESSAGE, "arn:aws:sqs:eu-west-1:000000000000:q", "eu-west-1")
    assert record["messageId"] == "m-1"
    assert record["receiptHandle"] == "rh-1"
    assert record["body"] == '{"Records": []}'
    assert record["attributes"]["ApproximateReceiveCount"] == "3"
    assert record["attributes"]["SentTimestamp"] == "1700000000000"
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == "arn:aws:sqs:eu-west-1:000000000000:q"
    assert record["awsRegion"] == "eu-west-1"
    assert record["md5OfBody"] == "abc"
    assert record["messageAttributes"]["kind"]["stringValue"] == "notice"
    assert record["messageAttributes"]["kind"]["dataType"] == "String"
    assert base64.b64decode(record["messageAttributes"]["blob"]["binaryValue"]) == b"\x00\x01"


def test_record_parses_with_powertools_sqs_record() -> None:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSEvent

    event = SQSEvent({"Records": [lambda_record(MESSAGE, "arn:q", "us-east-1")]})
    record = next(iter(event.records))
    assert record.message_id == "m-1"
    assert record.attributes.approximate_receive_count == "3"
    assert record.message_attributes["kind"].string_value == "notice"


@pytest.mark.parametrize("response", [None, {}, {"batchItemFailures": []}])
def test_an_empty_answer_means_every_message_succeeded(response: object) -> None:
    assert failed_ids(response, ["a", "b"]) == set()


def test_reported_failures_are_returned() -> None:
    response = {"batchItemFailures": [{"itemIdentifier": "b"}]}
    assert failed_ids(response, ["a", "b"]) == {"b"}


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ("oops", "not a mapping"),
        ({"batchItemFailures": "b"}, "not a list"),
        ({"batchItemFailures": [{"itemIdentifier": "zz"}]}, "unknown message"),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, "unknown message"),
        ({"batchItemFailures": ["b"]}, "unknown message"),
    ],
)
def test_an_answer_lambda_could_not_parse_fails_the_batch(response: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        failed_ids(response, ["a", "b"])


def test_context_counts_down() -> None:
    context = LambdaContext("orderpipe-local-ingest", "us-east-1", timeout_s=60)
    assert 59_000 < context.get_remaining_time_in_millis() <= 60_000
    assert context.function_name == "orderpipe-local-ingest"
    assert context.invoked_function_arn.endswith(":function:orderpipe-local-ingest")


class FlakySqs:
    """A queue that hands out ``messages`` on the first receive, then answers throttling."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.receives = 0

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:000000000000:q"}}

    def receive_message(self, **_: Any) -> dict[str, Any]:
        self.receives += 1
        if self.receives == 1:
            return {"Messages": self.messages}
        error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
        raise ClientError(error, "ReceiveMessage")  # type: ignore[arg-type]


def test_a_receive_failing_while_a_batch_fills_keeps_what_was_received() -> None:
    """Dropping the messages already received would leave them invisible until their timeout
    and spend one of their 5 receives for nothing: healthy files could be dead-lettered."""
    sqs = FlakySqs([MESSAGE])
    logged: list[str] = []
    spec = QueueSpec("ingest", "http://q/ingest", lambda event, context: None, 10, 5.0)
    consumer = QueueConsumer(sqs, spec, region="us-east-1", wait_time_s=0, log=logged.append)

    assert consumer.poll() == [MESSAGE]
    assert sqs.receives == 2
    assert "receive failed while filling a batch" in logged[0]
