"""The second emulator: S3, SQS, SNS, EventBridge and SES on LocalStack, DynamoDB on moto.

``make compat`` (``tests/compat/run.sh``) starts both servers and runs these scenarios with
``ORDERPIPE_COMPAT_LOCALSTACK`` and ``ORDERPIPE_COMPAT_DYNAMODB`` set to their endpoints; without
them every test here is skipped, so ``make test`` and CI collect and skip them. The stack is
wired as on AWS: one general endpoint (LocalStack) and DynamoDB's own variable
(``AWS_ENDPOINT_URL_DYNAMODB``, which ``core.aws.clients`` ranks above the general one).
"""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest

from core import bootstrap
from core.aws.clients import Clients
from core.aws.settings import Settings
from core.aws.stack import StackNames, create_local_stack
from core.local.local_state import ENV_STATE_DIR
from core.local.worker import drain
from tests.integration.pipeline_kit import OrderFile, Pipeline

ENV_LOCALSTACK = "ORDERPIPE_COMPAT_LOCALSTACK"  # LocalStack's endpoint (S3, SQS, SNS, ...)
ENV_DYNAMODB = "ORDERPIPE_COMPAT_DYNAMODB"  # moto's endpoint, for DynamoDB only
ENV_RESULTS = "ORDERPIPE_COMPAT_RESULTS"  # where each scenario appends its JSON line
ENV_AWS_CLI = "ORDERPIPE_COMPAT_AWS_CLI"  # the `aws` CLI LocalStack's venv brings, if any
DRAIN_S = 120  # a ceiling: drain returns once both queues are idle
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(ENV_LOCALSTACK) and os.environ.get(ENV_DYNAMODB):
        return
    skip = pytest.mark.skip(reason="second-emulator scenarios: run them with `make compat`")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """One JSON line per scenario (outcome, seconds, its figures) for the docs section."""
    target = os.environ.get(ENV_RESULTS)
    if not target or not report.nodeid.startswith("tests/compat/"):
        return
    if report.when != "call" and not (report.failed or report.skipped):
        return
    figures = dict(report.user_properties)
    row = {
        "test": report.nodeid.rsplit("::", 1)[-1],
        "scenario": figures.pop("scenario", ""),
        "outcome": report.outcome if report.when == "call" else f"{report.when} {report.outcome}",
        "seconds": round(report.duration, 2),
        "figures": figures,
    }
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")


@pytest.fixture(scope="session")
def endpoints() -> Iterator[tuple[str, str]]:
    """Point this process at both emulators, as a deployed function's environment would."""
    localstack, dynamodb = os.environ[ENV_LOCALSTACK], os.environ[ENV_DYNAMODB]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", localstack)
        env.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb)
        # Handlers cache their clients by endpoint; others' tests may have built some.
        bootstrap.forget_warm_clients()
        yield localstack, dynamodb
    bootstrap.forget_warm_clients()


@dataclass
class CompatStack:
    endpoint: str  # LocalStack
    dynamodb_endpoint: str  # moto
    clients: Clients
    names: StackNames
    settings: Settings


@pytest.fixture
def stack(endpoints: tuple[str, str], tmp_path: Path) -> CompatStack:
    """A fresh, uniquely named stack: its resources on LocalStack, its tables on moto."""
    localstack, dynamodb = endpoints
    names = StackNames.for_env("c" + uuid.uuid4().hex[:10])
    clients = Clients(endpoint_url=localstack, max_attempts=2)
    settings = create_local_stack(clients, names, outbox_dir=str(tmp_path / "outbox"))
    return CompatStack(localstack, dynamodb, clients, names, settings)


class CompatPipeline(Pipeline):
    """The reliability kit, with files known by their S3 version id and SES read from LocalStack."""

    def __init__(self, stack: Any) -> None:
        super().__init__(stack)
        self.versions: dict[tuple[str, str], str] = {}

    def upload(self, *files: OrderFile) -> dict[str, float]:
        sent = {}
        for f in files:
            got = self.s3.put_object(Bucket=self.bucket, Key=f.key, Body=f.body)
            assert got.get("VersionId"), "the bucket is versioned: every put has a version id"
            self.versions[(f.key, f.etag)] = got["VersionId"]
            sent[self.file_id(f)] = time.time()
        return sent

    def take_events(self, count: int = 1, timeout_s: float = 20.0) -> list[str]:
        """The next ``count`` S3 event bodies: LocalStack delivers them after PutObject returns."""
        bodies: list[str] = []
        deadline = time.monotonic() + timeout_s
        while len(bodies) < count and time.monotonic() < deadline:
            bodies += super().take_events()
            if len(bodies) < count:
                time.sleep(0.1)
        time.sleep(0.5)  # then anything unexpected has arrived too, and is counted
        return bodies + super().take_events()

    def file_id(self, f: OrderFile) -> str:
        return f"{self.bucket}/{f.key}#{self.versions[(f.key, f.etag)]}"

    def ses_sent(self) -> list[str]:
        """The text of each email LocalStack's SES accepted about this stack's files.

        Read from ``GET /_aws/ses``, where LocalStack keeps every message it accepted.
        """
        with urlopen(f"{self.stack.endpoint}/_aws/ses") as response:  # nosec B310
            messages = json.load(response).get("messages", [])
        texts = [plain_text(m.get("RawData", "")) for m in messages]
        return [t for t in texts if f"s3://{self.bucket}/" in t]


def plain_text(raw: str) -> str:
    for part in email.message_from_string(raw).walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload.decode(part.get_content_charset() or "utf-8", "replace")
    return ""


@pytest.fixture
def pipe(stack: CompatStack) -> CompatPipeline:
    return CompatPipeline(stack)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Any:
    """``figures(name=value, ...)``: what the docs section reports for this scenario."""

    def record(**values: Any) -> None:
        request.node.user_properties.extend(values.items())

    return record


def run(pipe: CompatPipeline, settings: Settings | None = None) -> float:
    """The real handlers until both queues are idle, failed messages retried at once."""
    started = time.monotonic()
    drain(pipe.stack.clients, settings or pipe.stack.settings, DRAIN_S, retry_after_s=0)
    return round(time.monotonic() - started, 2)


def orderpipe(pipe: CompatPipeline, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a person runs it, pointed at the stack by its environment."""
    env = {**os.environ, **pipe.stack.settings.to_env(), ENV_STATE_DIR: str(tmp_path / "state")}
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
