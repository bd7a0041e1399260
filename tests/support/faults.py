"""Make AWS calls fail the way AWS does, on purpose: the fault layer of the reliability tests.

Test code, never shipped: the product knows nothing of it. A ``FaultPlan`` is a list of rules
such as "30% of DynamoDB BatchWriteItem calls are throttled", registered as botocore event
handlers, so a fault travels the same road a real one does: error responses are injected at
``before-send`` and go through botocore's own retry logic; partial ``UnprocessedItems`` really
leave those items unwritten; a broken GetObject stream fails half-way through the body with the
exception urllib3 would raise; a lost reply (``reply-timeout``, ``reply-reset``) really sends
the request, so the service applies it, and then fails the call as if the answer never came
back.

Three ways in: ``plan.attach(client)`` for one client; ``clients_with(plan, ...)`` for a
``Clients`` whose every client carries it; ``installed(plan)`` for every botocore session the
process creates from then on (the real handlers build their own clients). A process started
with ``tests/support/site`` on ``PYTHONPATH`` installs the plan in ``ORDERPIPE_FAULTS`` the same
way (``sitecustomize``), and so do its children: that is how a worker started by ``orderpipe
local`` gets faults.

Spec, text form (rules separated by ``;``)::

    seed=7; dynamodb.BatchWriteItem=throttle:0.3; s3.GetObject=stream-reset:1:2

``service.Operation=kind[:rate[:limit]]``: ``rate`` is the fraction of calls hit (default 1),
``limit`` caps how many faults the rule injects in total; ``Operation`` may be ``*``. The JSON
form is ``{"seed": 7, "rules": [{"call": "s3.GetObject", "kind": "timeout", "rate": 0.5}]}``.
Decisions come from a random generator seeded per rule, so a run repeats exactly when calls
arrive in the same order.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, NoReturn, cast

import boto3
import botocore.handlers
import botocore.session
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError
from botocore.httpsession import URLLib3Session
from botocore.response import StreamingBody
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import ReadTimeoutError as URLLib3ReadTimeoutError

from core.aws.clients import Clients

ENV_FAULTS = "ORDERPIPE_FAULTS"

# Error responses, as the service sends them: (code, HTTP status, message).
_THROTTLE = {
    "dynamodb": ("ThrottlingException", 400, "Rate of requests exceeds the allowed throughput."),
    "ses": ("Throttling", 400, "Maximum sending rate exceeded."),
    "s3": ("SlowDown", 503, "Please reduce your request rate."),
    "sqs": ("RequestThrottled", 400, "The request was denied due to request throttling."),
}
_INTERNAL = {
    "dynamodb": ("InternalServerError", 500, "Internal server error"),
    "s3": ("InternalError", 500, "We encountered an internal error. Please try again."),
    "sqs": ("InternalError", 500, "We encountered an internal error. Please try again."),
}
_ERRORS: dict[str, Callable[[str], tuple[str, int, str]]] = {
    "throttle": lambda svc: _THROTTLE.get(svc, ("ThrottlingException", 400, "Rate exceeded")),
    "provisioned": lambda _svc: (
        "ProvisionedThroughputExceededException",
        400,
        "The level of configured provisioned throughput for the table was exceeded. "
        "Consider increasing your provisioning level with the UpdateTable API.",
    ),
    "rejected": lambda _svc: (
        "MessageRejected",
        400,
        "Email address is not verified. The following identities failed the check.",
    ),
    "unavailable": lambda _svc: ("ServiceUnavailable", 503, "Service is unavailable."),
    "internal": lambda svc: _INTERNAL.get(svc, ("InternalFailure", 500, "Internal failure.")),
}
_CONNECTION = ("timeout", "reset")  # the request gets no answer at all
_STREAM = ("stream-timeout", "stream-reset")  # the answer breaks off mid-body
# The request reaches the service and is applied; its answer is lost on the way back, so the
# caller cannot tell it from a request that never arrived and retries work already done. Only a
# call's first attempt loses its answer: botocore's retry is the one that meets the applied
# write (losing every retry's answer too only exhausts the retries, as ``timeout`` does).
_LOST = {"reply-timeout": "timeout", "reply-reset": "reset"}
KINDS = (*_ERRORS, *_CONNECTION, *_STREAM, *_LOST, "unprocessed")
SEND_KINDS = (*_ERRORS, *_CONNECTION)  # answered in place of the service (before-send)

# Where a kind makes sense: (service, operation or None for any).
_ONLY_FOR: dict[str, tuple[str, str | None]] = {
    "provisioned": ("dynamodb", None),
    "unprocessed": ("dynamodb", "BatchWriteItem"),
    "rejected": ("ses", None),
    "stream-timeout": ("s3", "GetObject"),
    "stream-reset": ("s3", "GetObject"),
}


class FaultSpecError(ValueError):
    """The fault spec cannot be understood; the message says which part and why."""


@dataclass(frozen=True)
class FaultRule:
    service: str  # botocore service id, hyphenated: dynamodb, s3, ses, sqs, ...
    operation: str  # API operation name, or "*" for every operation of the service
    kind: str
    rate: float = 1.0
    limit: int | None = None

    def __post_init__(self) -> None:
        call = f"{self.service}.{self.operation}"
        if self.kind not in KINDS:
            raise FaultSpecError(f"{call}: unknown fault {self.kind!r} (one of {', '.join(KINDS)})")
        if not 0.0 < self.rate <= 1.0:
            raise FaultSpecError(f"{call}: rate must be in (0, 1], got {self.rate}")
        if self.limit is not None and self.limit < 1:
            raise FaultSpecError(f"{call}: limit must be positive, got {self.limit}")
        scope = _ONLY_FOR.get(self.kind)
        if scope and (self.service != scope[0] or scope[1] not in (None, self.operation)):
            where = ".".join(part for part in scope if part)
            raise FaultSpecError(f"{call}: fault {self.kind!r} only applies to {where}")

    @property
    def call(self) -> str:
        return f"{self.service}.{self.operation}"


@dataclass(frozen=True)
class Injection:
    call: str  # service.Operation actually hit
    kind: str


class _RuleState:
    """A rule's own seeded generator and budget; shared by every client the plan is on."""

    def __init__(self, rule: FaultRule, seed: int, index: int) -> None:
        self.rule = rule
        # Not for security: a reproducible sequence of fault decisions.
        self.rng = random.Random(f"{seed}:{index}")  # nosec B311
        self.injected = 0


@dataclass
class FaultPlan:
    rules: tuple[FaultRule, ...]
    seed: int = 0
    # How a lost-reply fault delivers the request before losing its answer; None: over HTTP,
    # on a connection of the plan's own (tests of this module pass an in-memory service).
    deliver: Callable[[Any], None] | None = field(default=None, repr=False, compare=False)
    injected: list[Injection] = field(default_factory=list, init=False)
    _states: list[_RuleState] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _http: URLLib3Session | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._states = [_RuleState(r, self.seed, i) for i, r in enumerate(self.rules)]

    # -- building -------------------------------------------------------------------------
    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        spec = spec.strip()
        if spec.startswith("{"):
            return cls._parse_json(spec)
        seed, rules = 0, []
        for part in (p.strip() for p in spec.replace("\n", ";").split(";")):
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise FaultSpecError(f"{part!r}: expected service.Operation=kind[:rate[:limit]]")
            name, value = name.strip(), value.strip()
            if name == "seed":
                seed = _whole(value, "seed")
                continue
            kind, _, rest = value.partition(":")
            rate_text, _, limit_text = rest.partition(":")
            rules.append(
                _rule(name, kind.strip(), rate_text.strip() or "1", limit_text.strip() or None)
            )
        if not rules:
            raise FaultSpecError("fault spec names no rule")
        return cls(tuple(rules), seed=seed)

    @classmethod
    def _parse_json(cls, spec: str) -> FaultPlan:
        try:
            body = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise FaultSpecError(f"fault spec is not valid JSON: {exc.msg}") from None
        if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
            raise FaultSpecError('JSON fault spec needs {"rules": [...]}')
        rules = []
        for item in body["rules"]:
            if not isinstance(item, dict) or "call" not in item or "kind" not in item:
                raise FaultSpecError(f"rule {item!r} needs 'call' and 'kind'")
            limit = item.get("limit")
            rules.append(
                _rule(
                    str(item["call"]),
                    str(item["kind"]),
                    str(item.get("rate", 1)),
                    None if limit is None else str(limit),
                )
            )
        if not rules:
            raise FaultSpecError("fault spec names no rule")
        return cls(tuple(rules), seed=_whole(str(body.get("seed", 0)), "seed"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FaultPlan | None:
        """The plan in ``ORDERPIPE_FAULTS``, or None (the default: no faults)."""
        spec = (os.environ if env is None else env).get(ENV_FAULTS, "").strip()
        return cls.parse(spec) if spec else None

    # -- what happened ----------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Faults injected so far, by ``service.Operation:kind``."""
        with self._lock:
            return dict(Counter(f"{i.call}:{i.kind}" for i in self.injected))

    def total(self, kind: str | None = None) -> int:
        with self._lock:
            return sum(1 for i in self.injected if kind is None or i.kind == kind)

    # -- wiring into botocore ---------------------------------------------------------------
    def handlers(self) -> list[tuple[str, Callable[..., Any], bool, str | None]]:
        """``(event, handler, first, unique_id)`` for every rule: what ``register`` registers."""
        found: list[tuple[str, Callable[..., Any], bool, str | None]] = []
        for state in self._states:
            rule = state.rule
            service = rule.service
            suffix = service if rule.operation == "*" else f"{service}.{rule.operation}"
            if rule.kind == "unprocessed":
                found.append(
                    (f"before-parameter-build.{suffix}", self._withhold(state), False, None)
                )
                # Shared handlers: one registration per emitter, however many rules use them.
                found.append(
                    (f"before-call.{suffix}", _answer_all_unprocessed, True, "op-unproc-call")
                )
                found.append(
                    (f"after-call.{suffix}", _report_unprocessed, False, "op-unproc-report")
                )
            elif rule.kind in _STREAM:
                found.append((f"after-call.{suffix}", self._break_stream(state), False, None))
            else:
                found.append((f"before-send.{suffix}", self._fail_send(state), True, None))
        return found

    def register(self, events: Any) -> None:
        """Register the plan on a botocore emitter: a client's, or a session's (then every
        client that session builds carries it). Event names hold the service, so a rule only
        ever fires on its own service's calls."""
        for event, handler, first, unique_id in self.handlers():
            if first:
                events.register_first(event, handler, unique_id=unique_id)
            else:
                events.register(event, handler, unique_id=unique_id)

    def attach(self, client: Any) -> None:
        """Register this plan's handlers on one botocore client."""
        self.register(client.meta.events)

    def session(self, region: str | None = None) -> boto3.session.Session:
        """A boto3 session whose every client carries this plan."""
        core = botocore.session.get_session()
        self.register(core.get_component("event_emitter"))
        return boto3.session.Session(botocore_session=core, region_name=region)

    def _roll(self, state: _RuleState, operation: str) -> random.Random | None:
        """Decide whether this call is hit; on a hit, record it and return the rule's rng."""
        with self._lock:
            rule = state.rule
            if rule.limit is not None and state.injected >= rule.limit:
                return None
            if state.rng.random() >= rule.rate:
                return None
            state.injected += 1
            self.injected.append(Injection(f"{rule.service}.{operation}", rule.kind))
            return state.rng

    def _fail_send(self, state: _RuleState) -> Callable[..., AWSResponse | None]:
        rule = state.rule

        def handler(request: Any, event_name: str, **_: Any) -> AWSResponse | None:
            # botocore calls every handler even after one answered: one fault per attempt.
            attempt = (
                request.headers.get("amz-sdk-invocation-id"),
                request.headers.get("amz-sdk-request"),
            )
            if getattr(request, "orderpipe_fault_attempt", None) == attempt:
                return None
            if rule.kind in _LOST and not _first_attempt(attempt[1]):
                return None  # the retry is what meets the applied write: let it through
            operation = event_name.rsplit(".", 1)[-1]
            if self._roll(state, operation) is None:
                return None
            request.orderpipe_fault_attempt = attempt
            failure = rule.kind
            if rule.kind in _LOST:
                self._deliver(request)  # the service applies it; only the answer is lost
                failure = _LOST[rule.kind]
            if failure == "timeout":
                raise ReadTimeoutError(endpoint_url=request.url)
            if failure == "reset":
                raise ConnectionClosedError(endpoint_url=request.url)
            code, status, message = _ERRORS[rule.kind](rule.service)
            return error_response(request, rule.service, code, status, message)

        return handler

    def _deliver(self, request: Any) -> None:
        if self.deliver is not None:
            self.deliver(request)
            return
        with self._lock:
            if self._http is None:
                self._http = URLLib3Session(timeout=60)
        response = self._http.send(request)
        response.content  # noqa: B018 - read the whole answer (a body streams otherwise)
        response.raw.close()

    def _withhold(self, state: _RuleState) -> Callable[..., None]:
        """Take a random, non-empty part of a BatchWriteItem out of the request."""

        def handler(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            requested = params.get("RequestItems") or {}
            flat = [(table, item) for table, items in requested.items() for item in items]
            if not flat:
                return
            rng = self._roll(state, "BatchWriteItem")
            if rng is None:
                return
            picked = set(rng.sample(range(len(flat)), rng.randint(1, len(flat))))
            kept: dict[str, list[Any]] = {}
            withheld: dict[str, list[Any]] = {}
            for index, (table, item) in enumerate(flat):
                (withheld if index in picked else kept).setdefault(table, []).append(item)
            context["orderpipe_withheld"] = withheld
            if kept:
                params["RequestItems"] = kept  # a new dict: the caller's stays whole
            else:
                context["orderpipe_withheld_all"] = True

        return handler

    def _break_stream(self, state: _RuleState) -> Callable[..., None]:
        rule = state.rule

        def handler(parsed: dict[str, Any], http_response: Any, **_: Any) -> None:
            body = parsed.get("Body")
            if body is None or http_response.status_code >= 300:
                return
            rng = self._roll(state, "GetObject")
            if rng is None:
                return
            length = int(parsed.get("ContentLength") or 0)
            cut = rng.randint(0, max(0, length - 1))
            url = getattr(http_response, "url", "") or ""
            broken = cast("IO[bytes]", _BrokenStream(body, cut, rule.kind, url))
            parsed["Body"] = StreamingBody(broken, length)

        return handler


def _first_attempt(header: str | bytes | None) -> bool:
    """``amz-sdk-request: [ttl=...; ]attempt=1; max=6`` (absent: treat it as the first)."""
    if header is None:
        return True
    if isinstance(header, bytes):
        header = header.decode()
    return "attempt=1" in (part.strip() for part in header.split(";"))


def _answer_all_unprocessed(
    context: dict[str, Any], params: dict[str, Any], **_: Any
) -> tuple[AWSResponse, dict[str, Any]] | None:
    """Every item was withheld: answer for DynamoDB without sending (an empty batch is invalid)."""
    if not context.pop("orderpipe_withheld_all", False):
        return None
    http = AWSResponse(params.get("url", ""), 200, cast(Any, {}), _RawBody(b"{}"))
    return http, {"UnprocessedItems": {}, "ResponseMetadata": {"HTTPStatusCode": 200}}


def _report_unprocessed(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    withheld = context.pop("orderpipe_withheld", None)
    if not withheld or "Error" in parsed:
        return
    unprocessed = parsed.setdefault("UnprocessedItems", {})
    for table, items in withheld.items():
        unprocessed.setdefault(table, []).extend(items)


class _RawBody:
    """The ``raw`` an AWSResponse reads its body from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Any:
        yield self._data


def error_response(request: Any, service: str, code: str, status: int, message: str) -> AWSResponse:
    """An error answer in the wire format of the service's protocol."""
    headers = {"x-amzn-RequestId": "orderpipe-fault"}
    if service in ("dynamodb", "sqs", "events", "glue"):  # JSON protocols
        body = json.dumps({"__type": f"com.amazonaws.{service}#{code}", "message": message})
        headers["Content-Type"] = "application/x-amz-json-1.0"
        if service == "sqs":  # SQS answers in JSON but keeps its query-era codes here
            headers["x-amzn-query-error"] = f"{code};Sender"
    elif service == "s3":
        body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    else:  # query protocols: ses, sns, cloudformation
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>orderpipe-fault</RequestId>"
            "</ErrorResponse>"
        )
    return AWSResponse(request.url, status, cast(Any, headers), _RawBody(body.encode()))


class _BrokenStream(io.RawIOBase):
    """A response body that delivers ``cut`` bytes and then fails as a dropped socket does."""

    def __init__(self, inner: Any, cut: int, kind: str, url: str) -> None:
        super().__init__()
        self._inner, self._left, self._kind, self._url = inner, cut, kind, url

    def readable(self) -> bool:
        return True

    def read(self, amt: int | None = -1) -> bytes:
        if self._left <= 0:
            self._fail()
        if amt is None or amt < 0:  # read-all fails as the socket drops, as urllib3's does
            self._inner.read(self._left)
            self._left = 0
            self._fail()
        data: bytes = self._inner.read(min(amt, self._left))
        self._left -= len(data)
        if not data:
            self._fail()
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _fail(self) -> NoReturn:
        if self._kind == "stream-timeout":
            raise URLLib3ReadTimeoutError(None, self._url, "Read timed out.")  # type: ignore[arg-type]
        raise ProtocolError(
            "Connection broken: ConnectionResetError(104, 'Connection reset by peer')",
            ConnectionResetError(104, "Connection reset by peer"),
        )

    def close(self) -> None:
        self._inner.close()
        super().close()


def clients_with(plan: FaultPlan, **options: Any) -> Clients:
    """``Clients(**options)`` whose every client carries ``plan``; other Clients stay clean."""
    return Clients(**options, _session=plan.session(options.get("region")))


# botocore registers these on every session it creates: the one process-wide hook there is.
_installed_lock = threading.Lock()


@contextlib.contextmanager
def installed(plan: FaultPlan) -> Iterator[FaultPlan]:
    """Give ``plan`` to every botocore session created inside the block (and so to every client
    built from one), as a real handler builds its own; sessions made before keep no faults."""
    specs = _builtin_specs(plan)
    with _installed_lock:
        botocore.handlers.BUILTIN_HANDLERS.extend(specs)
    try:
        yield plan
    finally:
        with _installed_lock:
            for spec in specs:
                botocore.handlers.BUILTIN_HANDLERS.remove(spec)


def install_from_env(env: Mapping[str, str] | None = None) -> FaultPlan | None:
    """For the whole process: the plan ``ORDERPIPE_FAULTS`` names, installed; None if unset."""
    try:
        plan = FaultPlan.from_env(env)
    except FaultSpecError as exc:
        raise FaultSpecError(f"{ENV_FAULTS}: {exc}") from None
    if plan is not None:
        botocore.handlers.BUILTIN_HANDLERS.extend(_builtin_specs(plan))
    return plan


def _builtin_specs(plan: FaultPlan) -> list[tuple[Any, ...]]:
    """The plan as ``BUILTIN_HANDLERS`` entries (which take no unique id: shared ones once)."""
    specs: list[tuple[Any, ...]] = []
    seen: set[tuple[str, str]] = set()
    for event, handler, first, unique_id in plan.handlers():
        if unique_id is not None:
            if (event, unique_id) in seen:
                continue
            seen.add((event, unique_id))
        specs.append(
            (event, handler, botocore.handlers.REGISTER_FIRST) if first else (event, handler)
        )
    return specs


def _whole(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FaultSpecError(f"{what} must be a whole number, got {text!r}") from None


def _rule(call: str, kind: str, rate: str, limit: str | None) -> FaultRule:
    service, dot, operation = call.partition(".")
    if not dot or not service or not operation:
        raise FaultSpecError(f"{call!r}: expected service.Operation, e.g. dynamodb.BatchWriteItem")
    try:
        rate_value = float(rate)
    except ValueError:
        raise FaultSpecError(f"{call}: rate must be a number, got {rate!r}") from None
    return FaultRule(
        service.lower(),
        operation,
        kind,
        rate_value,
        None if limit is None else _whole(limit, f"{call} limit"),
    )
