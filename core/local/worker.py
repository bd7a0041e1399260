"""Run the Lambda handlers off their SQS queues, the way the Lambda event source mapping does.

The worker long-polls the ingest and notify queues, builds Lambda-shaped SQS batch events and
calls the very handler functions AWS would call. It honours partial batch failures: only the
messages the handler reports as failed stay on the queue, and it leaves their visibility as the
handler set it (the retry backoff of core/pipeline/retry.py, scaled by ``LOCAL_TIMINGS``), so
retries and the redrive to the DLQ after five receives work exactly as on AWS. While a handler
runs, the visibility of its in-flight messages is extended, so a long file is not redelivered
half-way (a beat landing between the handler's backoff and its return would restore the queue
timeout; with a beat every 4 s and that gap in milliseconds, it is rare and only delays).

Used three ways: ``orderpipe worker`` (``Worker.run``), the child process of ``orderpipe local``,
and in-process from tests (``drain``: process until both queues are idle).
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.aws.clients import Clients
from core.aws.settings import Settings
from core.aws.stack import LOCAL_TIMINGS

Handler = Callable[[dict[str, Any], Any], Any]
Log = Callable[[str], None]

INGEST = "ingest"
NOTIFY = "notify"
HANDLER_PATHS = {INGEST: "handlers.ingest:handler", NOTIFY: "handlers.notify:handler"}
SQS_RECEIVE_MAX = 10  # SQS hands out at most 10 messages per ReceiveMessage
LAMBDA_MAX_TIMEOUT_S = 900
DEFAULT_WAIT_TIME_S = 10


class WorkerError(RuntimeError):
    """The worker cannot start: a handler is missing or a queue cannot be reached."""


def _quiet(_: str) -> None:
    return None


def load_handler(path: str) -> Handler:
    """Import ``module:function``; a missing handler is a WorkerError with one clear line."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        handler = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise WorkerError(f"cannot load handler {path}: {exc}") from None
    if not callable(handler):
        raise WorkerError(f"handler {path} is not callable")
    return handler  # type: ignore[no-any-return]


class LambdaContext:
    """The attributes of the Lambda context object that handlers and powertools read."""

    def __init__(self, function_name: str, region: str, timeout_s: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:000000000000:function:{function_name}"
        self.memory_limit_in_mb = 1769
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "orderpipe-worker"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class QueueSpec:
    """One event source mapping: a queue, its handler and how it batches."""

    name: str
    url: str
    handler: Handler
    batch_size: int = 10
    window_s: float = 0.0  # batching window: wait this long to fill a batch


@dataclass
class BatchResult:
    queue: str
    received: int
    failed: int
    seconds: float
    error: str | None = None  # the handler raised or answered malformed: whole batch failed


def _lambda_message_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """SQS API attribute spelling → the camel-case shape Lambda puts in the event."""
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        binary = value.get("BinaryValue")
        out[name] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": base64.b64encode(binary).decode() if binary is not None else None,
            "stringListValues": list(value.get("StringListValues", [])),
            "binaryListValues": [
                base64.b64encode(b).decode() for b in value.get("BinaryListValues", [])
            ],
            "dataType": value.get("DataType", "String"),
        }
    return out


def lambda_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One SQS message as a record of a Lambda SQS event."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": {str(k): str(v) for k, v in message.get("Attributes", {}).items()},
        "messageAttributes": _lambda_message_attributes(message.get("MessageAttributes", {})),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def failed_ids(response: Any, message_ids: Sequence[str]) -> set[str]:
    """The IDs the handler reported as failed, read as Lambda reads them.

    No answer (or no ``batchItemFailures``) means all succeeded; an answer Lambda could not parse
    fails the whole batch.
    """
    if response is None:
        return set()
    if not isinstance(response, Mapping):
        raise ValueError(f"handler answered {type(response).__name__}, not a mapping")
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        raise ValueError("batchItemFailures is not a list")
    known = set(message_ids)
    out: set[str] = set()
    for item in failures:
        ident = item.get("itemIdentifier") if isinstance(item, Mapping) else None
        if not isinstance(ident, str) or ident not in known:
            raise ValueError(f"batchItemFailures names an unknown message: {item!r}")
        out.add(ident)
    return out


class QueueConsumer:
    """Poll one queue and hand its batches to one handler."""

    def __init__(
        self,
        sqs: Any,
        spec: QueueSpec,
        *,
        region: str,
        wait_time_s: int = DEFAULT_WAIT_TIME_S,
        failed_visibility_s: int | None = None,
        handler_timeout_s: float = LAMBDA_MAX_TIMEOUT_S,
        log: Log = _quiet,
    ) -> None:
        self.sqs = sqs
        self.spec = spec
        self.region = region
        self.wait_time_s = wait_time_s
        self.failed_visibility_s = failed_visibility_s
        self.handler_timeout_s = handler_timeout_s
        self.log = log
        attrs = sqs.get_queue_attributes(
            QueueUrl=spec.url, AttributeNames=["QueueArn", "VisibilityTimeout"]
        )["Attributes"]
        self.arn: str = attrs["QueueArn"]
        self.visibility_s = int(attrs.get("VisibilityTimeout", "30"))
        self.function_name = spec.url.rstrip("/").rsplit("/", 1)[-1]
        self.busy = threading.Event()

    # -- receiving ----------------------------------------------------------------------------

    def _receive(self, count: int, wait_s: int) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.spec.url,
            MaxNumberOfMessages=max(1, min(SQS_RECEIVE_MAX, count)),
            WaitTimeSeconds=wait_s,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def poll(self, wait_s: int | None = None) -> list[dict[str, Any]]:
        """Long-poll for a first message, then fill the batch within the batching window."""
        wait = self.wait_time_s if wait_s is None else wait_s
        batch = self._receive(self.spec.batch_size, wait)
        if not batch:
            return batch
        window_end = time.monotonic() + self.spec.window_s
        while len(batch) < self.spec.batch_size:
            left = window_end - time.monotonic()
            # Past the window, take only what is already there; within it, wait for more.
            try:
                more = self._receive(self.spec.batch_size - len(batch), 1 if left >= 1 else 0)
            except (ClientError, BotoCoreError) as exc:
                # The messages already received are ours until their visibility runs out:
                # dropping them here would only spend one of their 5 receives for nothing.
                self.log(f"{self.spec.name}: receive failed while filling a batch ({exc})")
                break
            batch.extend(more)
            if not more:
                if left <= 0:
                    break
                if left < 1:
                    time.sleep(min(left, 0.2))
        return batch

    def release(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Make received messages visible again at once (the worker is stopping)."""
        self._set_visibility([m["ReceiptHandle"] for m in messages], 0)

    # -- running a batch ----------------------------------------------------------------------

    def process(self, messages: Sequence[Mapping[str, Any]]) -> BatchResult:
        """Call the handler on one batch; delete what succeeded, leave what failed."""
        started = time.monotonic()
        event = {"Records": [lambda_record(m, self.arn, self.region) for m in messages]}
        ids = [m["MessageId"] for m in messages]
        context = LambdaContext(self.function_name, self.region, self.handler_timeout_s)
        error: str | None = None
        with self._keep_invisible(messages):
            try:
                failed = failed_ids(self.spec.handler(event, context), ids)
            except Exception as exc:  # a Lambda invocation error fails the whole batch
                error = f"{type(exc).__name__}: {exc}"
                self.log(
                    f"{self.spec.name}: handler error, whole batch retried\n"
                    + traceback.format_exc().rstrip()
                )
                failed = set(ids)
        done = [m for m in messages if m["MessageId"] not in failed]
        self._delete(done)
        retry = [m["ReceiptHandle"] for m in messages if m["MessageId"] in failed]
        if retry and self.failed_visibility_s is not None:
            self._set_visibility(retry, self.failed_visibility_s)
        result = BatchResult(
            self.spec.name, len(messages), len(failed), time.monotonic() - started, error
        )
        self.log(
            f"{self.spec.name}: {result.received} message(s), {result.failed} failed, "
            f"{result.seconds:.2f} s"
        )
        return result

    @contextlib.contextmanager
    def _keep_invisible(self, messages: Sequence[Mapping[str, Any]]) -> Iterator[None]:
        """Extend the batch's visibility while the handler runs (a heartbeat thread)."""
        handles = [m["ReceiptHandle"] for m in messages]
        done = threading.Event()
        interval = max(0.5, self.visibility_s / 3)

        def beat() -> None:
            while not done.wait(interval):
                try:
                    self._set_visibility(handles, self.visibility_s)
                except Exception as exc:  # a missed beat is logged, not fatal
                    self.log(f"{self.spec.name}: could not extend visibility: {exc}")

        thread = threading.Thread(target=beat, name=f"{self.spec.name}-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _set_visibility(self, handles: Sequence[str], seconds: int) -> None:
        for start in range(0, len(handles), SQS_RECEIVE_MAX):
            chunk = handles[start : start + SQS_RECEIVE_MAX]
            response = self.sqs.change_message_visibility_batch(
                QueueUrl=self.spec.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": seconds}
                    for i, h in enumerate(chunk)
                ],
            )
            for failure in response.get("Failed", []):
                self.log(f"{self.spec.name}: visibility change failed: {failure.get('Message')}")

    def _delete(self, messages: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(messages), SQS_RECEIVE_MAX):
            chunk = messages[start : start + SQS_RECEIVE_MAX]
            try:
                response = self.sqs.delete_message_batch(
                    QueueUrl=self.spec.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(chunk)
                    ],
                )
            except (ClientError, BotoCoreError) as exc:
                # Like a per-entry failure: the batch comes back and is recognised as done.
                self.log(f"{self.spec.name}: delete failed ({exc}); messages will be redelivered")
                continue
            for failure in response.get("Failed", []):
                # The message comes back and is handled again; handlers are idempotent.
                self.log(f"{self.spec.name}: delete failed: {failure.get('Message')}")

    # -- loops --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll and process until ``stop`` is set; transient errors back off and retry."""
        backoff = 1.0
        while not stop.is_set():
            try:
                messages = self.poll()
            except Exception as exc:  # the endpoint may come back
                self.log(f"{self.spec.name}: receive failed ({exc}); retrying in {backoff:.0f} s")
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            if not messages:
                continue
            # Busy before looking at ``stop``: ``Worker.run`` sets stop, then waits while busy,
            # so a batch is either handed back or processed to the end, never cut off.
            self.busy.set()
            try:
                if stop.is_set():
                    self.release(messages)
                    return
                self.process(messages)
            except Exception as exc:  # the poll thread must outlive one bad batch
                # Whatever was not deleted comes back after the visibility timeout.
                self.log(f"{self.spec.name}: batch not completed ({exc}); it will be redelivered")
                stop.wait(backoff)
            finally:
                self.busy.clear()

    def pending(self) -> int:
        """Messages on the queue, visible or in flight."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.spec.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs.get("ApproximateNumberOfMessages", 0)) + int(
            attrs.get("ApproximateNumberOfMessagesNotVisible", 0)
        )


@dataclass
class DrainReport:
    idle: bool
    seconds: float
    batches: list[BatchResult] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return sum(b.received for b in self.batches)

    @property
    def failed(self) -> int:
        return sum(b.failed for b in self.batches)


class Worker:
    """The local stand-in for the two Lambda event source mappings."""

    def __init__(
        self,
        clients: Clients,
        settings: Settings,
        *,
        handlers: Mapping[str, Handler] | None = None,
        queues: Sequence[str] = (INGEST, NOTIFY),
        ingest_batch_size: int = LOCAL_TIMINGS.ingest_batch_size,
        notify_batch_size: int = LOCAL_TIMINGS.notify_batch_size,
        notify_window_s: float = LOCAL_TIMINGS.notify_batch_window_s,
        wait_time_s: int = DEFAULT_WAIT_TIME_S,
        failed_visibility_s: int | None = None,
        handler_timeout_s: float = LAMBDA_MAX_TIMEOUT_S,
        log: Log = _quiet,
    ) -> None:
        settings.require(*(f"{q}_queue_url" for q in queues))
        region = clients.session.region_name or "us-east-1"
        urls = {INGEST: settings.ingest_queue_url, NOTIFY: settings.notify_queue_url}
        sizes = {INGEST: ingest_batch_size, NOTIFY: notify_batch_size}
        windows = {INGEST: 0.0, NOTIFY: notify_window_s}
        handlers = dict(handlers or {})
        self.consumers: list[QueueConsumer] = []
        for name in queues:
            if name not in urls:
                raise WorkerError(f"unknown queue {name!r}: expected ingest or notify")
            handler = handlers.get(name) or load_handler(HANDLER_PATHS[name])
            spec = QueueSpec(name, urls[name], handler, sizes[name], windows[name])
            try:
                consumer = QueueConsumer(
                    clients.sqs,
                    spec,
                    region=region,
                    wait_time_s=wait_time_s,
                    failed_visibility_s=failed_visibility_s,
                    handler_timeout_s=handler_timeout_s,
                    log=log,
                )
            except Exception as exc:
                raise WorkerError(f"cannot reach the {name} queue {urls[name]}: {exc}") from None
            self.consumers.append(consumer)
        self.log = log

    def run(self, stop: threading.Event) -> None:
        """Poll every queue on its own thread until ``stop``; let in-flight batches finish.

        Poll threads are daemons: one blocked in a long poll is abandoned at exit, and a message
        it may still receive simply becomes visible again after the queue's timeout.
        """
        threads = [
            threading.Thread(target=c.run, args=(stop,), name=f"poll-{c.spec.name}", daemon=True)
            for c in self.consumers
        ]
        for thread in threads:
            thread.start()
        stop.wait()
        for consumer, thread in zip(self.consumers, threads, strict=True):
            while consumer.busy.is_set() and thread.is_alive():
                thread.join(0.1)

    def drain(self, timeout_s: float, *, raise_on_timeout: bool = True) -> DrainReport:
        """Process on this thread until every queue is empty, nothing in flight; or time out."""
        started = time.monotonic()
        deadline = started + timeout_s
        report = DrainReport(idle=False, seconds=0.0)
        # SQS's message counts are approximate (eventually consistent on AWS; the emulator reads
        # its visible and in-flight counts at two instants, so a message turning visible between
        # them is in neither): idle only when two readings a poll apart both say empty.
        empty_readings = 0
        while True:
            worked = False
            for consumer in self.consumers:
                messages = consumer.poll(wait_s=0)
                if messages:
                    report.batches.append(consumer.process(messages))
                    worked = True
            quiet = not worked and all(c.pending() == 0 for c in self.consumers)
            empty_readings = empty_readings + 1 if quiet else 0
            if empty_readings >= 2:
                report.idle = True
                break
            if time.monotonic() >= deadline:
                break
            if not worked:
                time.sleep(0.2)  # failed messages are invisible until their timeout
        report.seconds = time.monotonic() - started
        if not report.idle and raise_on_timeout:
            raise TimeoutError(
                f"queues not idle after {timeout_s:g} s "
                f"({report.messages} message(s) handled, {report.failed} failed)"
            )
        return report


@contextlib.contextmanager
def handler_environment(clients: Clients, settings: Settings) -> Iterator[None]:
    """Give in-process handlers the environment a deployed function has; restore it after."""
    wanted = dict(settings.to_env())
    if clients.endpoint_url:
        wanted["AWS_ENDPOINT_URL"] = clients.endpoint_url
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def drain(
    clients: Clients,
    settings: Settings,
    timeout_s: float = 60.0,
    *,
    handlers: Mapping[str, Handler] | None = None,
    retry_after_s: int | None = None,
    raise_on_timeout: bool = True,
    handler_timeout_s: float = LAMBDA_MAX_TIMEOUT_S,
    log: Log = _quiet,
) -> DrainReport:
    """Run the real handlers in this process until both queues are idle.

    ``retry_after_s`` makes a failed message visible again after that many seconds, overriding
    the handler's backoff (0: at once), so a poison message reaches the DLQ at once in tests;
    None keeps the backoff, as on AWS. ``handler_timeout_s`` is what the handlers' context says
    they have (a Lambda's timeout; nothing stops a handler that overruns it). Raises
    TimeoutError when the queues are still busy after ``timeout_s``, unless
    ``raise_on_timeout`` is false.
    """
    with handler_environment(clients, settings):
        worker = Worker(
            clients,
            settings,
            handlers=handlers,
            notify_window_s=0.0,
            failed_visibility_s=retry_after_s,
            handler_timeout_s=handler_timeout_s,
            log=log,
        )
        return worker.drain(timeout_s, raise_on_timeout=raise_on_timeout)
