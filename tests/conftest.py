"""Shared fixtures: a moto server over HTTP for integration tests, one per test session.

Each integration test gets its own stack with unique names on that server, so tests never see
each other's data and can run in any order.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.aws.clients import Clients
from core.aws.settings import Settings
from core.aws.stack import StackNames, create_local_stack

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# Integration tests must never reach a real account, whatever the developer's shell holds.
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_var, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ.pop("AWS_ENDPOINT_URL", None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration ``integration``: ``make check`` leaves it out."""
    integration = Path(__file__).resolve().parent / "integration"
    for item in items:
        if integration in item.path.parents:
            item.add_marker(pytest.mark.integration)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _describable_multipart_parts() -> None:
    """moto's whole-state dump (``/moto-api/data.json``, where tests read what SES accepted)
    describes every S3 key it holds, a multipart upload's parts too. A part has no bucket, so
    its ``status`` raises NoSuchBucket and the dump answers HTTP 500 to every later reader.
    A part has no status to show: report none."""
    from moto.s3.models import FakeKey

    status = FakeKey.status
    if getattr(status.fget, "orderpipe_patched", False):
        return

    def part_safe(key: FakeKey) -> str | None:
        return None if key.bucket_name is None else status.fget(key)  # type: ignore

    part_safe.orderpipe_patched = True  # type: ignore
    FakeKey.status = property(part_safe, status.fset)  # type: ignore


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    _describable_multipart_parts()
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@dataclass
class LocalStack:
    endpoint: str
    clients: Clients
    names: StackNames
    settings: Settings


@pytest.fixture
def stack(moto_endpoint: str, tmp_path: Path) -> LocalStack:
    """A fresh, uniquely named stack on the shared moto server."""
    names = StackNames.for_env("t" + uuid.uuid4().hex[:10])
    clients = Clients(endpoint_url=moto_endpoint, max_attempts=2)
    settings = create_local_stack(clients, names, outbox_dir=str(tmp_path / "outbox"))
    return LocalStack(moto_endpoint, clients, names, settings)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
