"""How long a presigned URL really works: the shorter of what was asked and the signer's own life.

S3 refuses a presigned URL once the credentials that signed it have expired, whatever
``X-Amz-Expires`` says. Long-term keys (an IAM user's) have no expiry: the URL lives as long as
asked (SigV4 allows at most 7 days). Temporary credentials (a role's, a Lambda function's) carry a
session token and die with it. botocore knows when refreshable credentials expire (assumed roles,
container and instance credentials, and environment credentials with
``AWS_CREDENTIAL_EXPIRATION``); for temporary credentials that say nothing, the lifetime is
unknown and no expiry may be promised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

SIGV4_MAX_EXPIRY_S = 7 * 24 * 3600


@dataclass(frozen=True)
class SignerLifetime:
    """What the signing credentials tell about themselves."""

    temporary: bool  # a session token: they expire
    expires_at: datetime | None  # when, if they say (UTC)


def lifetime_of(credentials: Any) -> SignerLifetime:
    """The lifetime of botocore credentials (``Credentials`` or ``RefreshableCredentials``)."""
    if credentials is None:
        return SignerLifetime(temporary=True, expires_at=None)
    # Refreshable credentials refresh here when close to expiry, so the expiry read next is
    # that of the credentials a signature made now uses.
    frozen = credentials.get_frozen_credentials()
    expiry = getattr(credentials, "_expiry_time", None)
    if isinstance(expiry, datetime):
        return SignerLifetime(temporary=True, expires_at=expiry.astimezone(UTC))
    return SignerLifetime(temporary=bool(frozen.token), expires_at=None)


def link_expiry(now: datetime, requested_s: int, *lifetimes: SignerLifetime) -> datetime | None:
    """When a URL signed now for ``requested_s`` stops working; None when nobody can say.

    ``lifetimes`` are the signer's, read before and after signing (a refresh in between may
    have changed them): the earliest wins.
    """
    until = now + timedelta(seconds=min(requested_s, SIGV4_MAX_EXPIRY_S))
    for lifetime in lifetimes:
        if not lifetime.temporary:
            continue
        if lifetime.expires_at is None:
            return None
        until = min(until, lifetime.expires_at)
    return until


def presign_get(
    client: Any,
    bucket: str,
    key: str,
    expires_s: int,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[str, datetime | None]:
    """A presigned GET of ``bucket/key`` and when it really stops working (None: unknown)."""
    now = clock()
    before = lifetime_of(client._get_credentials())
    url: str = client.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": key},
        ExpiresIn=min(expires_s, SIGV4_MAX_EXPIRY_S),
    )
    after = lifetime_of(client._get_credentials())
    return url, link_expiry(now, expires_s, before, after)
