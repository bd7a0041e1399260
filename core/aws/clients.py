"""The one place that builds boto3 clients.

Adapters take a client in their constructor and never build one. Every client honours
``AWS_ENDPOINT_URL`` (boto3 reads it itself) or an explicit ``endpoint_url``, so the same code
talks to AWS or to the local emulator. A service's own variable (``AWS_ENDPOINT_URL_DYNAMODB``,
``AWS_ENDPOINT_URL_SQS``, ...) wins over both, as boto3 ranks it over ``AWS_ENDPOINT_URL``: one
stack can then span two emulators (``make compat``: DynamoDB on moto, the rest on LocalStack).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

try:
    from botocore.utils import (
        CLIENT_NAME_TO_HYPHENIZED_SERVICE_ID_OVERRIDES,
        SERVICE_NAME_ALIASES,
    )
except ImportError:  # botocore before 1.31, such as a Glue Python shell job's preloaded one
    CLIENT_NAME_TO_HYPHENIZED_SERVICE_ID_OVERRIDES, SERVICE_NAME_ALIASES = {}, {}

from core.aws import dynamo_json

DEFAULT_REGION = "us-east-1"


def endpoint_variable(service: str) -> str:
    """The variable boto3 reads for one service: named after its service id, not client name."""
    name = SERVICE_NAME_ALIASES.get(service, service)
    service_id = CLIENT_NAME_TO_HYPHENIZED_SERVICE_ID_OVERRIDES.get(name, name)
    return "AWS_ENDPOINT_URL_" + service_id.replace("-", "_").upper()  # events: ..._EVENTBRIDGE


def service_endpoint(service: str, env: Mapping[str, str] | None = None) -> str | None:
    """That variable's value, unless configured endpoints are ignored (as boto3 does)."""
    env = os.environ if env is None else env
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
        return None
    return env.get(endpoint_variable(service)) or None


@dataclass
class Clients:
    """Lazily built, cached clients sharing one session and configuration."""

    endpoint_url: str | None = None
    region: str | None = None
    max_attempts: int = 5
    max_pool_connections: int = 32
    _session: boto3.session.Session | None = field(default=None, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def session(self) -> boto3.session.Session:
        if self._session is None:
            region = (
                self.region
                or os.environ.get("AWS_REGION")
                or os.environ.get("AWS_DEFAULT_REGION")
                or DEFAULT_REGION
            )
            self._session = boto3.session.Session(region_name=region)
        return self._session

    def client(self, service: str, *, validate: bool = True) -> Any:
        cache_key = service if validate else f"{service}:unvalidated"
        cached = self._cache.get(cache_key)
        if cached is None:
            config = Config(
                retries={"max_attempts": self.max_attempts, "mode": "standard"},
                max_pool_connections=self.max_pool_connections,
                parameter_validation=validate,
            )
            if service == "s3":
                # Presigned URLs default to SigV2, which newer regions and buckets refuse.
                config = config.merge(Config(signature_version="s3v4"))
            kwargs: dict[str, Any] = {"config": config}
            endpoint = service_endpoint(service) or self.endpoint_url
            if endpoint:
                kwargs["endpoint_url"] = endpoint
            cached = self.session.client(service, **kwargs)  # type: ignore[call-overload]
            if service == "dynamodb" and not validate:
                dynamo_json.install(cached)  # the writer's bulk calls: C-encoded bodies
            self._cache[cache_key] = cached
        return cached

    # Named accessors keep call sites readable and typed at the edge.
    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    @property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @property
    def dynamodb_bulk(self) -> Any:
        """DynamoDB without client-side parameter checks, for the orders writer's hot path.

        The writer builds every item itself; the checks cost about half the CPU of a 25-item
        BatchWriteItem, and CPU (one GIL) is what bounds parallel writers. Its BatchWriteItem and
        BatchGetItem bodies are encoded by ``json.dumps`` (``core/aws/dynamo_json.py``), which
        halves the CPU per item again, and it takes rows the writer had polars encode.
        """
        return self.client("dynamodb", validate=False)

    @property
    def ses(self) -> Any:
        return self.client("ses")

    @property
    def sns(self) -> Any:
        return self.client("sns")

    @property
    def events(self) -> Any:
        return self.client("events")

    @property
    def cloudformation(self) -> Any:
        return self.client("cloudformation")

    @property
    def glue(self) -> Any:
        return self.client("glue")
