"""A link's stated expiry is never later than the signing credentials' own."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from typing import Any

import boto3
import pytest
from botocore.credentials import Credentials, RefreshableCredentials
from hypothesis import given
from hypothesis import strategies as st

from core.aws.signing import (
    SIGV4_MAX_EXPIRY_S,
    SignerLifetime,
    lifetime_of,
    link_expiry,
    presign_get,
)
from core.pipeline.email_report import LINK_EXPIRY_S, compose
from core.pipeline.ingest import rejects_key_for
from core.pipeline.notice import FileNotice
from core.pipeline.notify import S3RejectsStore

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
BUCKET = "orderpipe-unit-orders"


def refreshable(expires: datetime) -> RefreshableCredentials:
    def refresh() -> dict[str, str]:
        return {
            "access_key": "AKIDNEW",
            "secret_key": "s",
            "token": "t2",
            "expiry_time": (expires + timedelta(hours=1)).isoformat(),
        }

    return RefreshableCredentials("AKID", "s", "t", expires, refresh, "assume-role")


def s3_client(credentials: Any) -> Any:
    client = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="x", region_name="eu-west-1"
    ).client("s3", config=boto3.session.Config(signature_version="s3v4"))
    client._request_signer._credentials = credentials  # the role's, as on Lambda
    return client


def test_long_term_keys_give_the_full_requested_lifetime() -> None:
    lifetime = lifetime_of(Credentials("AKID", "secret"))
    assert lifetime == SignerLifetime(temporary=False, expires_at=None)
    assert link_expiry(NOW, LINK_EXPIRY_S, lifetime) == NOW + timedelta(days=7)
    # SigV4 allows 7 days at most, whatever is asked.
    assert link_expiry(NOW, 30 * 86400, lifetime) == NOW + timedelta(seconds=SIGV4_MAX_EXPIRY_S)


def test_temporary_credentials_that_do_not_say_when_they_expire_promise_nothing() -> None:
    lifetime = lifetime_of(Credentials("ASIA", "secret", token="session"))
    assert lifetime == SignerLifetime(temporary=True, expires_at=None)
    assert link_expiry(NOW, LINK_EXPIRY_S, lifetime) is None


def test_role_credentials_cut_the_link_to_their_own_expiry() -> None:
    expires = datetime.now(UTC) + timedelta(hours=3)
    lifetime = lifetime_of(refreshable(expires))
    assert lifetime.expires_at == expires
    assert link_expiry(datetime.now(UTC), LINK_EXPIRY_S, lifetime) == expires


@given(
    requested=st.integers(min_value=1, max_value=10 * 86400),
    lives=st.lists(
        st.one_of(st.none(), st.integers(min_value=-3600, max_value=20 * 86400)), max_size=3
    ),
)
def test_the_stated_expiry_is_never_later_than_any_signers_or_the_request(
    requested: int, lives: list[int | None]
) -> None:
    lifetimes = [
        SignerLifetime(True, None if s is None else NOW + timedelta(seconds=s)) for s in lives
    ]
    until = link_expiry(NOW, requested, *lifetimes)
    if any(lt.expires_at is None for lt in lifetimes):
        assert until is None
        return
    assert until is not None
    assert until <= NOW + timedelta(seconds=min(requested, SIGV4_MAX_EXPIRY_S))
    for lt in lifetimes:
        assert lt.expires_at is not None
        assert until <= lt.expires_at


def test_a_presigned_url_is_signed_by_the_credentials_whose_expiry_it_reports() -> None:
    expires = datetime.now(UTC) + timedelta(hours=2)
    url, until = presign_get(s3_client(refreshable(expires)), BUCKET, "rejects/a.csv", 604800)
    assert "X-Amz-Credential=AKID%2F" in url
    assert "X-Amz-Security-Token=t" in url
    assert until == expires


def notice(key: str) -> FileNotice:
    return FileNotice(
        file_id=f"{BUCKET}/{key}#v1",
        bucket=BUCKET,
        key=key,
        version="v1",
        status="PARTIAL",
        rows=3,
        valid=1,
        invalid=2,
        reasons={"total_not_number": 2},
        rejects_key=rejects_key_for(key),
        finished_at="2026-12-04T14:59:00.000Z",
    )


class SizedStore(S3RejectsStore):
    """S3RejectsStore's presign on a real client; sizes and bodies from memory."""

    def __init__(self, client: Any, objects: dict[str, bytes]) -> None:
        super().__init__(client)
        self.objects = objects

    def size(self, bucket: str, key: str) -> int | None:
        return len(self.objects[key]) if key in self.objects else None

    def read(self, bucket: str, key: str) -> bytes:
        return self.objects[key]


def email_text(credentials: Any, key: str = "incoming/big orders (ü).csv") -> str:
    rejects = notice(key).rejects_key or ""
    store = SizedStore(s3_client(credentials), {rejects: b"line,x\n" + b"9,y\n" * 20_000})
    composed = compose(
        [notice(key)], store, sender="s@x.test", recipients=["r@x.test"], max_bytes=40_000
    )
    assert composed.linked == [rejects]
    message = message_from_bytes(composed.data, policy=policy.default)
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    return text.get_content() + "\n" + html.get_content()


@pytest.mark.parametrize("hours", [1, 6, 12, 36])
def test_the_email_never_states_an_expiry_later_than_the_signing_credentials(hours: int) -> None:
    expires = datetime.now(UTC) + timedelta(hours=hours, minutes=7)
    body = email_text(refreshable(expires))
    stated = re.findall(r"valid until (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", body)
    assert stated  # both bodies say when
    for when in stated:
        moment = datetime.strptime(when, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
        assert moment <= expires
        assert expires - moment < timedelta(minutes=1)  # the real expiry, not a vague one
    assert "7 days" not in body


def test_without_a_known_expiry_the_email_promises_no_date_but_says_how_to_fetch_later() -> None:
    body = email_text(Credentials("ASIA", "secret", token="session"))
    assert "valid until" not in body
    assert "valid for a short time only" in body
    assert f"s3://{BUCKET}/{rejects_key_for('incoming/big orders (ü).csv')}" in body
    command = "orderpipe rejects 'incoming/big orders (ü).csv'"  # no stack name: local
    assert command in body  # the text part
    assert html.escape(command) in body  # the HTML part


def test_long_term_keys_state_the_full_seven_days() -> None:
    before = datetime.now(UTC)
    body = email_text(Credentials("AKID", "secret"))
    (first, *_) = re.findall(r"valid until (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", body)
    moment = datetime.strptime(first, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert before + timedelta(days=7) - timedelta(minutes=1) <= moment
