"""The template's policies for people, enforced: moto's IAM checks a user who holds only one.

moto evaluates identity policies when its auth switch is on (``/moto-api/reset-auth``) and
maps S3 requests to the IAM actions AWS uses (a multipart upload's calls are ``s3:PutObject``).
The policy documents are the template's own, with this bucket's ARN filled in.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from core.release.template import load_template

pytestmark = pytest.mark.integration
ACCOUNT = "123456789012"  # moto's default account


def rendered(policy: str, bucket: str) -> dict[str, Any]:
    """The template's policy document with this stack's values in place of its references."""
    values = {
        "AWS::Partition": "aws",
        "AWS::Region": "us-east-1",
        "AWS::AccountId": ACCOUNT,
        "AWS::StackName": "orderpipe-test",
        "EnvName": "test",
        "OrdersBucket.Arn": f"arn:aws:s3:::{bucket}",
    }

    def resolve(value: Any) -> Any:
        if isinstance(value, dict) and "Fn::Sub" in value:
            text = str(value["Fn::Sub"])
            for name, filled in values.items():
                text = text.replace("${" + name + "}", filled)
            if "${" in text:  # another resource of the stack: a name that matches nothing here
                text = "arn:aws:sqs:us-east-1:" + ACCOUNT + ":not-in-this-test"
            return text
        if isinstance(value, dict) and ("Fn::GetAtt" in value or "Ref" in value):
            name = value.get("Ref") or ".".join(value["Fn::GetAtt"])
            return values.get(name, "arn:aws:sqs:us-east-1:" + ACCOUNT + ":not-in-this-test")
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    document = load_template()["Resources"][policy]["Properties"]["PolicyDocument"]
    return dict(resolve(document))


def set_auth(endpoint: str, free_requests: str) -> None:
    request = Request(
        f"{endpoint}/moto-api/reset-auth",
        data=free_requests.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},  # a form body would not reach moto as data
    )
    with urlopen(request) as response:  # the emulator on loopback
        assert response.status == 200


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """An emulator process of this module's own: switching moto's auth checks on and off, and
    the IAM users it creates, stay out of the shared server every other test uses."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urlopen(f"{endpoint}/moto-api/"):  # the emulator on loopback
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    name = f"orderpipe-policy-{uuid.uuid4().hex[:10]}"
    admin = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    admin.create_bucket(Bucket=name)
    admin.put_object(Bucket=name, Key="incoming/old.csv", Body=b"a\n")
    admin.put_object(Bucket=name, Key="rejects/old.csv", Body=b"line\n")
    return name


def person(endpoint: str, policy: str, bucket: str) -> Any:
    """An S3 client for a new IAM user whose only permission is ``policy``."""
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    user = f"{policy.lower()}-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user, PolicyName=policy, PolicyDocument=json.dumps(rendered(policy, bucket))
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        config=Config(retries={"max_attempts": 1}),
    )


def denied(call: Any, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
    except ClientError as exc:
        return exc.response["Error"]["Code"] in ("AccessDenied", "403")  # HEAD has no body
    return False


def test_an_uploader_puts_under_incoming_and_can_do_nothing_else(
    moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    s3 = person(moto_endpoint, "UploaderPolicy", bucket)
    big = tmp_path / "Q4 orders.csv"
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # over the CLI's 8 MB: a multipart upload
    set_auth(moto_endpoint, "0")
    try:
        s3.put_object(Bucket=bucket, Key="incoming/small.csv", Body=b"Order_Id\n1\n")
        s3.upload_file(
            str(big),
            bucket,
            "incoming/Q4 orders.csv",
            Config=TransferConfig(multipart_threshold=8 * 1024 * 1024),
        )
        assert denied(s3.get_object, Bucket=bucket, Key="incoming/small.csv")
        assert denied(s3.head_object, Bucket=bucket, Key="incoming/old.csv")
        assert denied(s3.list_objects_v2, Bucket=bucket, Prefix="incoming/")
        assert denied(s3.delete_object, Bucket=bucket, Key="incoming/old.csv")
        assert denied(s3.put_object, Bucket=bucket, Key="rejects/x.csv", Body=b"x")
        assert denied(s3.get_object, Bucket=bucket, Key="rejects/old.csv")
    finally:
        set_auth(moto_endpoint, "inf")
    admin = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    assert admin.head_object(Bucket=bucket, Key="incoming/Q4 orders.csv")["ContentLength"] == (
        9 * 1024 * 1024
    )


def test_a_viewer_reads_rejects_and_lists_incoming_but_cannot_write(
    moto_endpoint: str, bucket: str
) -> None:
    s3 = person(moto_endpoint, "ViewerPolicy", bucket)
    set_auth(moto_endpoint, "0")
    try:
        assert s3.get_object(Bucket=bucket, Key="rejects/old.csv")["Body"].read() == b"line\n"
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="incoming/")
        assert [o["Key"] for o in listed["Contents"]] == ["incoming/old.csv"]
        assert denied(s3.put_object, Bucket=bucket, Key="incoming/x.csv", Body=b"x")
        assert denied(s3.delete_object, Bucket=bucket, Key="rejects/old.csv")
    finally:
        set_auth(moto_endpoint, "inf")
