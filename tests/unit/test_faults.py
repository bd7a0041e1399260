"""The fault layer fails calls the way AWS does, through botocore's own machinery, reproducibly.

No network: an in-memory fake service answers at ``before-send`` after the fault handlers, so
each test sees exactly what a caller of the client would see.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
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
from tests.support.faults import (
    ENV_FAULTS,
    SEND_KINDS,
    FaultPlan,
    FaultRule,
    FaultSpecError,
    clients_with,
    install_from_env,
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
    clients = Clients(endpoint_url=NOWHERE, max_attempts=attempts - 1, _session=SESSION)
    client = clients.client(service)
    if plan is not None:
        plan.attach(client)
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
    assert install_from_env() is None


def test_clients_with_a_plan_fail_every_client_they_build() -> None:
    plan = FaultPlan.parse("dynamodb.BatchWriteItem=throttle")
    clients = clients_with(plan, endpoint_url=NOWHERE, max_attempts=1)
    fake = FakeService({})
    clients.dynamodb.meta.events.register("before-send.dynamodb", fake)
    fake.plan = plan
    with pytest.raises(ClientError) as exc:
        clients.dynamodb.batch_write_item(RequestItems={"t": put_requests(1)})
    assert error_code(exc) == "ThrottlingException"
    assert fake.seen == []
    # Every attempt, retries included, was throttled.
    attempts = exc.value.response["ResponseMetadata"]["RetryAttempts"] + 1
    assert plan.counts() == {"dynamodb.BatchWriteItem:throttle": attempts}
    # The bulk client (its own botocore client, C-encoded bodies) carries the plan too.
    bulk_fake = FakeService({})
    clients.dynamodb_bulk.meta.events.register("before-send.dynamodb", bulk_fake)
    bulk_fake.plan = plan
    with pytest.raises(ClientError):
        clients.dynamodb_bulk.batch_write_item(RequestItems={"t": put_requests(1)})
    assert bulk_fake.seen == []


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


def test_an_installed_plan_reaches_clients_built_inside_the_block() -> None:
    plan = FaultPlan((FaultRule("sqs", "ReceiveMessage", "throttle"),))
    before = Clients(endpoint_url=NOWHERE, max_attempts=0)
    before.client("sqs")
    with installed(plan):
        inside = Clients(endpoint_url=NOWHERE, max_attempts=0)
        inside.client("sqs")  # its session is created here, inside the block
    outside = Clients(endpoint_url=NOWHERE, max_attempts=0)
    codes = {}
    # Inside last: the fake reads the plan's record to tell a faulted attempt from its own.
    for name, clients in (("before", before), ("outside", outside), ("inside", inside)):
        fake = FakeService({"ReceiveMessage": ({}, b"{}")})
        clients.sqs.meta.events.register("before-send.sqs", fake)
        fake.plan = plan
        try:
            clients.sqs.receive_message(QueueUrl=f"{NOWHERE}/1/q")
            codes[name] = "answered"
        except ClientError as exc:
            codes[name] = str(exc.response["Error"]["Code"])
    # Only a session created inside the block carries the plan; the hook is gone after it.
    assert codes == {"before": "answered", "inside": "RequestThrottled", "outside": "answered"}
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


def test_a_bad_environment_spec_names_the_variable() -> None:
    env = {ENV_FAULTS: "s3.GetObject=explode"}
    with pytest.raises(FaultSpecError, match=r"^ORDERPIPE_FAULTS: s3.GetObject: unknown fault"):
        install_from_env(env)


# -- whole processes: tests/support/site on PYTHONPATH ------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "tests" / "support" / "site"
# One SQS call against nothing: a fault answers it, or it fails to connect.
CALL = (
    "from core.aws.clients import Clients\n"
    "Clients(endpoint_url='http://127.0.0.1:9', max_attempts=0).sqs.list_queues()\n"
)


def _run(spec: str, *, site: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        {
            ENV_FAULTS: spec,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    if site:
        env["PYTHONPATH"] = str(SITE)
    return subprocess.run(
        [sys.executable, "-c", CALL],
        env=env,
        cwd="/",  # not the checkout: the site hook must find ``tests`` on its own
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_site_hook_gives_a_process_the_environments_plan() -> None:
    done = _run("sqs.ListQueues=throttle", site=True)
    assert "RequestThrottled" in done.stderr, done.stderr


def test_the_product_alone_ignores_the_variable() -> None:
    done = _run("sqs.ListQueues=throttle", site=False)
    assert "RequestThrottled" not in done.stderr
    assert "Could not connect" in done.stderr, done.stderr


def test_a_bad_spec_ends_the_process_in_one_line() -> None:
    done = _run("bogus", site=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Error: ORDERPIPE_FAULTS: 'bogus': expected service.Operation=kind[:rate[:limit]]"
    ]
