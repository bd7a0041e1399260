"""Per-service endpoint variables: the names boto3 reads, and their rank over ``endpoint_url``."""

from __future__ import annotations

import boto3
import pytest

from core.aws.clients import Clients, endpoint_variable, service_endpoint

SERVICES = ("s3", "sqs", "dynamodb", "ses", "sns", "events", "cloudformation", "glue", "sts")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL") or name == "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return monkeypatch


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_variable_is_the_one_boto3_reads(
    clean_env: pytest.MonkeyPatch, service: str
) -> None:
    # Set under the name orderpipe derives: a plain boto3 client must read the same variable.
    clean_env.setenv(endpoint_variable(service), "http://127.0.0.1:1")
    assert service_endpoint(service) == "http://127.0.0.1:1"
    plain = boto3.session.Session().client(service)  # type: ignore[call-overload]
    assert plain.meta.endpoint_url == "http://127.0.0.1:1"


def test_eventbridge_is_named_after_its_service_id() -> None:
    assert endpoint_variable("events") == "AWS_ENDPOINT_URL_EVENTBRIDGE"
    assert endpoint_variable("dynamodb") == "AWS_ENDPOINT_URL_DYNAMODB"


def test_service_variable_wins_over_the_general_endpoint(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:2")
    clients = Clients(endpoint_url="http://127.0.0.1:3")
    assert clients.dynamodb.meta.endpoint_url == "http://127.0.0.1:2"
    assert clients.dynamodb_bulk.meta.endpoint_url == "http://127.0.0.1:2"
    assert clients.sqs.meta.endpoint_url == "http://127.0.0.1:3"
    assert clients.events.meta.endpoint_url == "http://127.0.0.1:3"


def test_ignored_when_configured_endpoints_are_ignored(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:2")
    clean_env.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert service_endpoint("sqs") is None
    assert Clients(endpoint_url="http://127.0.0.1:3").sqs.meta.endpoint_url == "http://127.0.0.1:3"


def test_no_variable_leaves_the_explicit_endpoint(clean_env: pytest.MonkeyPatch) -> None:
    assert service_endpoint("dynamodb") is None
    assert Clients(endpoint_url="http://127.0.0.1:3").dynamodb.meta.endpoint_url == (
        "http://127.0.0.1:3"
    )


def test_the_glue_closure_imports_with_a_botocore_older_than_service_endpoints() -> None:
    # A Glue Python shell job runs its preloaded boto3/botocore, which may predate per-service
    # endpoint variables (botocore 1.31); the reconcile job must still import.
    import pathlib
    import subprocess
    import sys

    old_botocore = (
        "import boto3, botocore.handlers, botocore.utils as u\n"  # botocore's own use first
        "names = ('CLIENT_NAME_TO_HYPHENIZED_SERVICE_ID_OVERRIDES', 'SERVICE_NAME_ALIASES')\n"
        "for n in names: delattr(u, n)\n"
        "import handlers.reconcile_job\n"
        "from core.aws.clients import endpoint_variable\n"
        "assert endpoint_variable('sqs') == 'AWS_ENDPOINT_URL_SQS'\n"
    )
    root = pathlib.Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", old_botocore], cwd=root, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
