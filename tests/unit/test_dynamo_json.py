"""The writer's C-encoded DynamoDB bodies: botocore's bytes, signed, retried, shaped by faults."""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.serialize import create_serializer

from core.aws import dynamo_json
from core.aws.clients import Clients
from tests.support.faults import FaultPlan, FaultRule

NOWHERE = "http://127.0.0.1:9"  # nothing listens: a call that reaches the network would fail
SESSION = boto3.session.Session(
    aws_access_key_id="unit", aws_secret_access_key="unit-secret", region_name="us-east-1"
)
MODEL = SESSION.client("dynamodb", endpoint_url=NOWHERE).meta.service_model


def botocore_body(operation: str, params: dict[str, Any]) -> bytes:
    """What botocore's own serializer (its model walk) makes of ``params``."""
    serializer = create_serializer("json", include_validation=False)
    body: bytes = serializer.serialize_to_request(params, MODEL.operation_model(operation))["body"]
    return body


def order(i: int) -> dict[str, Any]:
    return {
        "Order_Id": {"S": f"Ord{i:07d}"},
        "Order_Total": {"N": "1999.990"},
        "note": {"S": 'quote " backslash \\ tab \t é ☃ \\"B\\": \\"'},
        "B": {"S": "an attribute named B"},
        "BS": {"SS": ["a", "b"]},
        "flags": {"M": {"ok": {"BOOL": True}, "gone": {"NULL": True}, "ns": {"NS": ["1", "2.5"]}}},
        "lines": {"L": [{"N": "1"}, {"S": "x"}]},
    }


WRITE = {"RequestItems": {"orders": [{"PutRequest": {"Item": order(i)}} for i in range(25)]}}
GET = {
    "RequestItems": {
        "orders": {
            "Keys": [{"Order_Id": {"S": f"Ord{i:07d}"}} for i in range(100)],
            "ProjectionExpression": "#k, source_rank, source_file_id",
            "ExpressionAttributeNames": {"#k": "Order_Id"},
            "ConsistentRead": True,
        }
    },
    "ReturnConsumedCapacity": "NONE",
}


class Wire:
    """A before-send handler: records every request that would go on the wire, answers 200."""

    def __init__(self, answers: list[tuple[int, bytes]] | None = None) -> None:
        self.requests: list[Any] = []
        self.answers = list(answers or [])

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        self.requests.append(request)
        status, payload = self.answers.pop(0) if self.answers else (200, b"{}")
        return AWSResponse(request.url, status, {}, _Raw(payload))


class _Raw:
    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def stream(self, **_: Any) -> Any:
        yield self._buf.read()


def bulk_client(wire: Wire, *, faults: FaultPlan | None = None, attempts: int = 1) -> Any:
    clients = Clients(endpoint_url=NOWHERE, max_attempts=attempts - 1, _session=SESSION)
    client = clients.dynamodb_bulk
    if faults is not None:
        faults.attach(client)
    client.meta.events.register("before-send.dynamodb", wire)
    return client


@pytest.mark.parametrize(
    ("operation", "params"), [("BatchWriteItem", WRITE), ("BatchGetItem", GET)]
)
def test_the_encoded_body_is_the_one_botocore_builds(
    operation: str, params: dict[str, Any]
) -> None:
    assert dynamo_json.encode(params) == botocore_body(operation, params)


@pytest.mark.parametrize(
    "value",
    [{"B": b"\x00\x01"}, {"B": "text given for binary"}, {"BS": [b"a"]}, {"BS": ["a", "b"]}],
)
def test_binary_values_are_left_to_botocore(value: dict[str, Any]) -> None:
    params = {"RequestItems": {"t": [{"PutRequest": {"Item": {"k": {"S": "1"}, "b": value}}}]}}
    assert dynamo_json.encode(params) is None
    wire = Wire()
    bulk_client(wire).batch_write_item(**params)
    assert wire.requests[0].body == botocore_body("BatchWriteItem", params)  # base64, by botocore


def test_values_json_cannot_encode_are_left_to_botocore() -> None:
    assert dynamo_json.encode({"RequestItems": {"t": [{"x": {1, 2}}]}}) is None


@pytest.mark.parametrize(
    ("operation", "params"), [("BatchWriteItem", WRITE), ("BatchGetItem", GET)]
)
def test_the_client_sends_the_encoded_body_and_signs_it(
    operation: str, params: dict[str, Any]
) -> None:
    wire = Wire()
    client = bulk_client(wire)
    getattr(client, "batch_write_item" if operation == "BatchWriteItem" else "batch_get_item")(
        **params
    )
    (sent,) = wire.requests
    assert sent.body == botocore_body(operation, params)
    assert json.loads(sent.body) == params  # and the caller's parameters are left whole
    assert sent.headers["X-Amz-Target"] == f"DynamoDB_20120810.{operation}".encode()
    # SigV4 over exactly the bytes that go out, not over botocore's placeholder.
    authorization = text(sent.headers["Authorization"])
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    check = AWSRequest(method=sent.method, url=sent.url, data=sent.body)
    for name in signed:
        if name != "host":
            check.headers[name] = text(sent.headers[name])
    check.context["timestamp"] = check.headers["x-amz-date"]
    auth = SigV4Auth(SESSION.get_credentials(), "dynamodb", "us-east-1")
    signature = auth.signature(auth.string_to_sign(check, auth.canonical_request(check)), check)
    assert authorization.endswith(f"Signature={signature}")


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_a_retried_call_sends_the_same_body_again() -> None:
    wire = Wire([(500, b'{"__type": "InternalServerError", "message": "boom"}'), (200, b"{}")])
    bulk_client(wire, attempts=2).batch_write_item(**WRITE)
    assert [r.body for r in wire.requests] == [botocore_body("BatchWriteItem", WRITE)] * 2


def test_items_withheld_by_an_injected_fault_are_not_sent() -> None:
    requested = [{"PutRequest": {"Item": order(i)}} for i in range(6)]
    partial = 0
    for seed in range(12):
        plan = FaultPlan((FaultRule("dynamodb", "BatchWriteItem", "unprocessed"),), seed=seed)
        wire = Wire()
        answer = bulk_client(wire, faults=plan).batch_write_item(RequestItems={"t": requested})
        withheld = answer["UnprocessedItems"].get("t", [])
        assert withheld
        sent = [json.loads(r.body)["RequestItems"]["t"] for r in wire.requests]
        if sent:
            partial += 1
            assert sorted(map(json.dumps, sent[0] + withheld)) == sorted(map(json.dumps, requested))
    assert partial  # some seeds send part of the call: that part went out C-encoded


def test_botocore_serializes_only_the_table_names_of_a_bulk_call() -> None:
    """The point of it all: botocore's walk does not see the items (its body is replaced)."""
    serialized: list[bytes] = []

    def before_ours(params: dict[str, Any], **_: Any) -> None:  # more specific: runs first
        serialized.append(params["body"])

    wire = Wire()
    client = bulk_client(wire)
    client.meta.events.register("before-call.dynamodb.BatchWriteItem", before_ours)
    client.batch_write_item(**WRITE)
    assert serialized == [b'{"RequestItems": {"orders": []}}']
    assert wire.requests[0].body == botocore_body("BatchWriteItem", WRITE)


def test_a_validating_client_keeps_botocores_walk() -> None:
    serialized: list[bytes] = []
    client = Clients(endpoint_url=NOWHERE, _session=SESSION).dynamodb
    client.meta.events.register(
        "before-call.dynamodb.BatchWriteItem", lambda params, **_: serialized.append(params["body"])
    )
    client.meta.events.register("before-send.dynamodb", Wire())
    client.batch_write_item(**WRITE)
    assert serialized == [botocore_body("BatchWriteItem", WRITE)]


def encoded(request: dict[str, Any]) -> dynamo_json.EncodedRequest:
    return dynamo_json.EncodedRequest(json.dumps(request, separators=(",", ":")))


def test_encoded_requests_are_spliced_in_among_dict_ones() -> None:
    requests = [{"PutRequest": {"Item": order(i)}} for i in range(4)]
    mixed = [encoded(requests[0]), requests[1], encoded(requests[2]), requests[3]]
    params = {"RequestItems": {"orders": mixed}, "ReturnConsumedCapacity": "TOTAL"}
    wire = Wire()
    bulk_client(wire).batch_write_item(**params)
    (sent,) = wire.requests
    assert json.loads(sent.body) == {
        "RequestItems": {"orders": requests},
        "ReturnConsumedCapacity": "TOTAL",
    }


def test_encoded_requests_withheld_by_a_fault_come_back_as_they_went() -> None:
    requested = [encoded({"PutRequest": {"Item": order(i)}}) for i in range(6)]
    plan = FaultPlan((FaultRule("dynamodb", "BatchWriteItem", "unprocessed"),), seed=3)
    wire = Wire()
    answer = bulk_client(wire, faults=plan).batch_write_item(RequestItems={"t": requested})
    withheld = answer["UnprocessedItems"]["t"]
    assert all(isinstance(r, dynamo_json.EncodedRequest) for r in withheld)
    sent = [r for w in wire.requests for r in json.loads(w.body)["RequestItems"]["t"]]
    assert sorted(json.dumps(r) for r in sent + [json.loads(r) for r in withheld]) == sorted(
        json.dumps(json.loads(r)) for r in requested
    )


def test_only_an_installed_client_is_said_to_take_encoded_requests() -> None:
    clients = Clients(endpoint_url=NOWHERE, _session=SESSION)
    assert dynamo_json.installed(clients.dynamodb_bulk)
    assert not dynamo_json.installed(clients.dynamodb)
    assert not dynamo_json.installed(object())


def test_the_pinned_botocore_is_one_the_splice_was_tested_with() -> None:
    """Bumping botocore in constraints.txt means re-proving the bytes above, then adding it."""
    import botocore

    from core.release.package import CONSTRAINTS_FILE, PROJECT_ROOT

    pins = dict(
        line.split("==", 1)
        for line in (PROJECT_ROOT / CONSTRAINTS_FILE).read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins["botocore"] == botocore.__version__
    assert botocore.__version__ in dynamo_json.TESTED_BOTOCORE
    assert MODEL.resolved_protocol == dynamo_json.SPLICE_PROTOCOL


@pytest.mark.parametrize(
    ("protocol", "version", "why"),
    [
        ("smithy-rpc-v2-cbor", None, "speaks 'smithy-rpc-v2-cbor'"),
        ("json", "1.99.0", "botocore 1.99.0 is not one"),
    ],
)
def test_elsewhere_the_bulk_client_falls_back_to_botocores_own_bodies(
    monkeypatch: pytest.MonkeyPatch, protocol: str, version: str | None, why: str
) -> None:
    import botocore

    version = version or botocore.__version__
    assert why in (dynamo_json.refusal(protocol, version) or "")
    monkeypatch.setattr(botocore, "__version__", version)
    # The model the client is built from says this protocol (the wire stub still answers JSON).
    monkeypatch.setattr(dynamo_json, "_protocol", lambda _client: protocol)

    serialized: list[bytes] = []
    wire = Wire()
    client = bulk_client(wire)
    client.meta.events.register(
        "before-call.dynamodb.BatchWriteItem", lambda params, **_: serialized.append(params["body"])
    )
    assert not dynamo_json.installed(client)  # so the orders writer sends plain requests
    client.batch_write_item(**WRITE)
    # botocore walked every item itself: its body went out whole, unreplaced.
    assert serialized == [botocore_body("BatchWriteItem", WRITE)]
    assert wire.requests[0].body == serialized[0]
