"""The fault layer fails calls the way AWS does, through botocore's own machinery, reproducibly.

No network: an in-memory fake service answers at ``before-send`` after the fault handlers, so
each test sees exactly what a caller of the client would see.
"""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from core.aws.clients import Clients
from core.faults import (
    ENV_FAULTS,
    SEND_KINDS,
    FaultPlan,
    FaultRule,
    FaultSpecError,
    active_plan,
    installed,
)

NOWHERE = "http://127.0.0.1:9"  # nothing listens: a call that reaches the network would fail
SESSION = boto3.session.Session(region_name="us-east-1")  # one model loader for every client


class FakeRaw:
    """What an AWSResponse reads from: a body that can be streamed or read in parts."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def stream(self, **_: Any) -> Any:
        yield self._buf.read()

    def read(self, amt: int | None = None) -> bytes:
        return self._buf.read(amt)

    def close(self) -> None:
        self._buf.close()


class FakeService:
    """Answers every request that gets past the fault layer and remembers what it saw.

    botocore calls every ``before-send`` handler and keeps the first answer, so the fake runs
    even when a fault answered first: it tells by the plan's record and then stays silent.
    """

    def __init__(self, answers: dict[str, tuple[dict[str, str], bytes]]) -> None:
        self.answers = answers
        self.seen: list[tuple[str, bytes]] = []
        self.plan: FaultPlan | None = None
        self._recorded = 0

    def __call__(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        new = [] if self.plan is None else self.plan.injected[self._recorded :]
        self._recorded += len(new)
        if any(i.kind in SEND_KINDS for i in new):
            return None
        operation = event_name.rsplit(".", 1)[-1]
        body = request.body or b""
        self.seen.append((operation, body if isinstance(body, bytes) else body.encode()))
        headers, payload = self.answers.get(operation, ({}, b"{}"))
        return AWSResponse(request.url, 200, headers, FakeRaw(payload))


def client_with(service: str, plan: FaultPlan | None, fake: FakeService, attempts: int = 1) -> Any:
    # Clients counts retries after the first attempt.
    clients = Clients(
        endpoint_url=NOWHERE, max_attempts=attempts - 1, faults=plan, _session=SESSION
    )
    client = clients.client(service)
    client.meta.events.register(f"before-send.{service}", fake)
    fake.plan = plan
    return client


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def put_requests(n: int) -> list[dict[str, Any]]:
    return [{"PutRequest": {"Item": {"Order_Id": {"S": f"O{i}"}}}} for i in range(n)]


# -- spec ---------------------------------------------------------------------------------------


def test_text_spec_reads_seed_rate_and_limit() -> None:
    plan = FaultPlan.parse("seed=7; dynamodb.BatchWriteItem=throttle:0.3; s3.GetObject=reset:1:2")
    assert plan.seed == 7
    assert plan.rules == (
        FaultRule("dynamodb", "BatchWriteItem", "throttle", 0.3, None),
        FaultRule("s3", "GetObject", "reset", 1.0, 2),
    )


def test_json_spec_is_the_same_plan() -> None:
    plan = FaultPlan.parse(
        json.dumps(
            {"seed": 3, "rules": [{"call": "ses.SendEmail", "kind": "rejected", "limit": 1}]}
        )
    )
    assert plan.seed == 3
    assert plan.rules == (FaultRule("ses", "SendEmail", "rejected", 1.0, 1),)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dynamodb.BatchWriteItem=explode", "unknown fault 'explode'"),
        ("dynamodb.BatchWriteItem=throttle:1.5", "rate must be in (0, 1]"),
        ("dynamodb.BatchWriteItem=throttle:often", "rate must be a number"),
        ("dynamodb.BatchWriteItem=throttle:1:0", "limit must be positive"),
        ("s3.PutObject=stream-reset", "only applies to s3.GetObject"),
        ("sqs.SendMessage=unprocessed", "only applies to dynamodb.BatchWriteItem"),
        ("dynamodb=throttle", "expected service.Operation"),
        ("throttle everything", "expected service.Operation=kind"),
        ("seed=x; s3.GetObject=timeout", "seed must be a whole number"),
        ("seed=1", "names no rule"),
        ("{not json", "not valid JSON"),
        ('{"rules": [{"call": "s3.GetObject"}]}', "needs 'call' and 'kind'"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FaultPlan.parse(spec)


def test_no_faults_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_FAULTS, raising=False)
    assert FaultPlan.from_env() is None
    clients = Clients(endpoint_url=NOWHERE)
    clients.client("sqs")
    assert clients.faults is None


def test_the_environment_turns_faults_on_for_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_FAULTS, "dynamodb.BatchWriteItem=throttle")
    clients = Clients(endpoint_url=NOWHERE, max_attempts=1)
    fake = FakeService({})
    clients.dynamodb.meta.events.register("before-send.dynamodb", fake)
    fake.plan = clients.faults
    with pytest.raises(ClientError) as exc:
        clients.dynamodb.batch_write_item(RequestItems={"t": put_requests(1)})
    assert error_code(exc) == "ThrottlingException"
    assert fake.seen == []
    assert clients.faults is not None
    # Every attempt, retries included, was throttled.
    attempts = exc.value.response["ResponseMetadata"]["RetryAttempts"] + 1
    assert clients.faults.counts() == {"dynamodb.BatchWriteItem:throttle": attempts}


# -- error answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "call", "kind", "code"),
    [
        ("dynamodb", "BatchWriteItem", "throttle", "ThrottlingException"),
        ("dynamodb", "BatchWriteItem", "provisioned", "ProvisionedThroughputExceededException"),
        ("ses", "SendEmail", "throttle", "Throttling"),
        ("ses", "SendEmail", "rejected", "MessageRejected"),
        ("sqs", "ReceiveMessage", "throttle", "RequestThrottled"),
        ("sqs", "DeleteMessage", "internal", "InternalError"),
        ("s3", "GetObject", "throttle", "SlowDown"),
    ],
)
def test_error_faults_parse_as_the_service_error(
    service: str, call: str, kind: str, code: str
) -> None:
    plan = FaultPlan((FaultRule(service, call, kind),))
    fake = FakeService({})
    client = client_with(service, plan, fake)
    kwargs: dict[str, Any] = {
        "BatchWriteItem": {"RequestItems": {"t": put_requests(1)}},
        "SendEmail": {
            "Source": "a@example.com",
            "Destination": {"ToAddresses": ["b@example.com"]},
            "Message": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}},
        },
        "ReceiveMessage": {"QueueUrl": f"{NOWHERE}/123/q"},
        "DeleteMessage": {"QueueUrl": f"{NOWHERE}/123/q", "ReceiptHandle": "r"},
        "GetObject": {"Bucket": "b", "Key": "k"},
    }[call]
    method = client.meta.method_to_api_mapping
    name = next(m for m, op in method.items() if op == call)
    with pytest.raises(ClientError) as exc:
        getattr(client, name)(**kwargs)
    assert error_code(exc) == code
    assert fake.seen == []


def test_a_throttled_call_is_retried_by_botocore_and_then_succeeds() -> None:
    plan = FaultPlan((FaultRule("dynamodb", "BatchWriteItem", "throttle", limit=1),))
    fake = FakeService({"BatchWriteItem": ({}, b'{"UnprocessedItems": {}}')})
    client = client_with("dynamodb", plan, fake, attempts=2)
    answer = client.batch_write_item(RequestItems={"t": put_requests(2)})
    assert answer["UnprocessedItems"] == {}
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1
    assert [op for op, _ in fake.seen] == ["BatchWriteItem"]
    assert plan.total("throttle") == 1


def test_timeouts_and_resets_happen_before_any_answer() -> None:
    plan = FaultPlan((FaultRule("sqs", "ReceiveMessage", "timeout"),))
    fake = FakeService({})
    with pytest.raises(ReadTimeoutError):
        client_with("sqs", plan, fake).receive_message(QueueUrl=f"{NOWHERE}/1/q")
    plan = FaultPlan((FaultRule("sqs", "*", "reset"),))
    with pytest.raises(Exception, match="Connection was closed"):
        client_with("sqs", plan, fake).delete_message(QueueUrl=f"{NOWHERE}/1/q", ReceiptHandle="r")
    assert fake.seen == []


# -- replies lost after the work was done -------------------------------------------------------


def lost_reply_plan(kind: str, fake: FakeService, limit: int | None = None) -> FaultPlan:
    """A plan whose lost replies are delivered to ``fake`` (the service that applies them)."""

    def deliver(request: Any) -> None:
        fake(request, "before-send.dynamodb.PutItem")

    return FaultPlan((FaultRule("dynamodb", "PutItem", kind, limit=limit),), deliver=deliver)


def test_a_lost_reply_is_applied_and_botocores_retry_meets_it() -> None:
    fake = FakeService({})
    plan = lost_reply_plan("reply-timeout", fake)
    client = client_with("dynamodb", plan, fake, attempts=3)
    answer = client.put_item(TableName="t", Item={"k": {"S": "1"}})
    # The service got the request twice: the lost one and botocore's retry, which is answered.
    assert [op for op, _ in fake.seen] == ["PutItem", "PutItem"]
    assert fake.seen[0][1] == fake.seen[1][1]
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1
    # Only a call's first attempt loses its answer, however high the rate.
    assert plan.counts() == {"dynamodb.PutItem:reply-timeout": 1}


@pytest.mark.parametrize(
    ("kind", "error"),
    [("reply-timeout", ReadTimeoutError), ("reply-reset", ConnectionClosedError)],
)
def test_without_retries_the_caller_sees_the_lost_reply_after_the_work_was_done(
    kind: str, error: type[Exception]
) -> None:
    fake = FakeService({})
    plan = lost_reply_plan(kind, fake)
    with pytest.raises(error):
        client_with("dynamodb", plan, fake).put_item(TableName="t", Item={"k": {"S": "1"}})
    assert [op for op, _ in fake.seen] == ["PutItem"]  # applied, though the caller cannot know
    assert plan.total(kind) == 1


def test_lost_replies_apply_to_any_call() -> None:
    plan = FaultPlan.parse("ses.SendRawEmail=reply-timeout:1:1; sqs.*=reply-reset:0.5")
    assert [r.kind for r in plan.rules] == ["reply-timeout", "reply-reset"]


# -- partial batches ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_unprocessed_items_are_really_left_unwritten(seed: int) -> None:
    plan = FaultPlan((FaultRule("dynamodb", "BatchWriteItem", "unprocessed"),), seed=seed)
    fake = FakeService({"BatchWriteItem": ({}, b'{"UnprocessedItems": {}}')})
    client = client_with("dynamodb", plan, fake)
    requested = {"orders": put_requests(4), "files": put_requests(1)}
    before = json.dumps(requested, sort_keys=True)

    answer = client.batch_write_item(RequestItems=requested)

    assert json.dumps(requested, sort_keys=True) == before  # the caller's request is untouched
    sent: dict[str, list[Any]] = json.loads(fake.seen[0][1])["RequestItems"] if fake.seen else {}
    unprocessed = answer["UnprocessedItems"]
    assert unprocessed, "the fault must withhold at least one item"
    for table, items in requested.items():
        got = sent.get(table, []) + unprocessed.get(table, [])
        assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, items))
    assert plan.counts() == {"dynamodb.BatchWriteItem:unprocessed": 1}


def test_some_seeds_withhold_everything_and_some_only_part() -> None:
    sent_counts = set()
    for seed in range(12):
        plan = FaultPlan((FaultRule("dynamodb", "BatchWriteItem", "unprocessed"),), seed=seed)
        fake = FakeService({"BatchWriteItem": ({}, b'{"UnprocessedItems": {}}')})
        client_with("dynamodb", plan, fake).batch_write_item(RequestItems={"t": put_requests(2)})
        sent_counts.add(len(fake.seen))
    assert sent_counts == {0, 1}  # nothing sent (all withheld) and a partial send both occur


# -- broken streams -----------------------------------------------------------------------------


CONTENT = b"Order_Id,Customer_Id\n" + b"".join(b"O%d,C%d\n" % (i, i) for i in range(2000))


def s3_fake() -> FakeService:
    return FakeService({"GetObject": ({"Content-Length": str(len(CONTENT))}, CONTENT)})


@pytest.mark.parametrize(
    ("kind", "error"),
    [("stream-reset", ResponseStreamingError), ("stream-timeout", ReadTimeoutError)],
)
def test_a_stream_breaks_mid_body_after_a_true_prefix(kind: str, error: type[Exception]) -> None:
    plan = FaultPlan((FaultRule("s3", "GetObject", kind),), seed=1)
    body = client_with("s3", plan, s3_fake()).get_object(Bucket="b", Key="k")["Body"]
    got = bytearray()

    def read_all() -> None:
        for chunk in body.iter_chunks(1000):
            got.extend(chunk)

    with pytest.raises(error):
        read_all()
    assert len(got) < len(CONTENT)
    assert CONTENT.startswith(bytes(got))


def test_an_unbroken_stream_reads_whole() -> None:
    plan = FaultPlan((FaultRule("s3", "GetObject", "stream-reset", limit=1),))
    client = client_with("s3", plan, s3_fake())
    with pytest.raises(ResponseStreamingError):
        client.get_object(Bucket="b", Key="k")["Body"].read()
    assert client.get_object(Bucket="b", Key="k")["Body"].read() == CONTENT


# -- reproducibility ----------------------------------------------------------------------------


def hit_pattern(seed: int, rate: float, calls: int = 200) -> list[bool]:
    plan = FaultPlan((FaultRule("sqs", "ReceiveMessage", "throttle", rate),), seed=seed)
    client = client_with("sqs", plan, FakeService({"ReceiveMessage": ({}, b"{}")}))
    pattern = []
    for _ in range(calls):
        try:
            client.receive_message(QueueUrl=f"{NOWHERE}/1/q")
            pattern.append(False)
        except ClientError:
            pattern.append(True)
    return pattern


def test_the_same_seed_repeats_the_same_faults_and_the_rate_holds() -> None:
    first, again, other = hit_pattern(5, 0.3), hit_pattern(5, 0.3), hit_pattern(6, 0.3)
    assert first == again
    assert first != other
    assert 40 <= sum(first) <= 80  # 30% of 200, loosely


def test_a_limit_caps_the_faults() -> None:
    assert sum(hit_pattern(1, 1.0, calls=10)) == 10
    plan = FaultPlan((FaultRule("sqs", "ReceiveMessage", "throttle", limit=2),))
    client = client_with("sqs", plan, FakeService({}))
    outcomes = []
    for _ in range(5):
        try:
            client.receive_message(QueueUrl=f"{NOWHERE}/1/q")
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
    assert outcomes == ["RequestThrottled", "RequestThrottled", "ok", "ok", "ok"]


def test_rules_for_other_services_leave_a_client_alone() -> None:
    plan = FaultPlan((FaultRule("dynamodb", "*", "throttle"),))
    fake = FakeService({})
    client_with("sqs", plan, fake).receive_message(QueueUrl=f"{NOWHERE}/1/q")
    assert [op for op, _ in fake.seen] == ["ReceiveMessage"]
    assert plan.injected == []


def test_every_client_of_a_process_shares_the_environments_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_FAULTS, "sqs.ReceiveMessage=throttle:0.5; seed=11")
    one = Clients(endpoint_url=NOWHERE, _session=SESSION)
    two = Clients(endpoint_url=NOWHERE, _session=SESSION)
    one.client("sqs")
    two.client("sqs")
    assert one.faults is two.faults is active_plan()
    assert one.faults is not None
    assert one.faults.seed == 11


def test_an_installed_plan_reaches_clients_built_inside_the_block() -> None:
    plan = FaultPlan((FaultRule("sqs", "ReceiveMessage", "throttle"),))
    with installed(plan):
        inside = Clients(endpoint_url=NOWHERE, max_attempts=0, _session=SESSION)
        fake = FakeService({})
        inside.sqs.meta.events.register("before-send.sqs", fake)
        fake.plan = plan
        with pytest.raises(ClientError):
            inside.sqs.receive_message(QueueUrl=f"{NOWHERE}/1/q")
    outside = Clients(endpoint_url=NOWHERE, _session=SESSION)
    outside.client("sqs")
    assert inside.faults is plan
    assert outside.faults is None
    assert plan.total() == 1


def test_two_rules_never_both_claim_one_attempt() -> None:
    plan = FaultPlan(
        (
            FaultRule("ses", "SendRawEmail", "throttle", limit=1),
            FaultRule("ses", "SendRawEmail", "rejected", limit=1),
        )
    )
    client = client_with("ses", plan, FakeService({}), attempts=1)
    codes = []
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            client.send_raw_email(RawMessage={"Data": b"Subject: x\r\n\r\nbody"})
        codes.append(error_code(exc))
    assert codes == ["Throttling", "MessageRejected"]  # in the order the spec lists them
    assert plan.counts() == {"ses.SendRawEmail:throttle": 1, "ses.SendRawEmail:rejected": 1}


def test_a_bad_environment_spec_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_FAULTS, "s3.GetObject=explode")
    with pytest.raises(FaultSpecError, match=r"^ORDERPIPE_FAULTS: s3.GetObject: unknown fault"):
        Clients(endpoint_url=NOWHERE, _session=SESSION).client("s3")
