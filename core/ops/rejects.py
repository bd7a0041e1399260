"""A file's rejects CSV, fetched from ``rejects/`` any time after its email (or its link) expired.

Ingest writes the rejected rows of ``incoming/<name>`` to ``rejects/<name>.csv`` (kept for the
stack's ``RejectsRetentionDays``). This adapter reads it back for ``orderpipe rejects``, or signs a
fresh link with the caller's own credentials and says when that link really expires.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from botocore.exceptions import ClientError

from core.aws.signing import presign_get
from core.pipeline.ingest import rejects_key_for

CHUNK_BYTES = 1 << 20


class NoRejectsError(LookupError):
    """The file has no rejects CSV in the bucket (none rejected, or expired by the lifecycle)."""


@dataclass(frozen=True)
class RejectsLink:
    url: str
    expires_at: datetime | None  # None: the signing credentials do not say


class RejectsObjects:
    """``rejects/`` of the orders bucket."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client, self.bucket = client, bucket

    def key_for(self, source_key: str) -> str:
        return rejects_key_for(source_key)

    def download(self, source_key: str, out: BinaryIO) -> int:
        """Copy the rejects CSV of ``source_key`` into ``out``; return the bytes written."""
        key = self.key_for(source_key)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            raise self._not_there(exc, source_key, key) from None
        written = 0
        for chunk in _chunks(body):
            out.write(chunk)
            written += len(chunk)
        return written

    def link(self, source_key: str, expires_s: int) -> RejectsLink:
        """A presigned GET signed with the caller's credentials, and when it really expires."""
        key = self.key_for(source_key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            raise self._not_there(exc, source_key, key) from None
        url, expires_at = presign_get(self.client, self.bucket, key, expires_s)
        return RejectsLink(url, expires_at)

    def _not_there(self, exc: ClientError, source_key: str, key: str) -> Exception:
        """What a failed read of ``key`` means for a person: no rejects, or ``exc`` itself.

        S3 answers 403, not 404, for a missing key to a caller who may not list the bucket
        there (the Viewer and Operator policies list incoming/ and reports/ only), so on AWS a
        file with nothing rejected usually shows as AccessDenied.
        """
        where = f"s3://{self.bucket}/{key}"
        code = exc.response.get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NoRejectsError(
                f"no rejects for {source_key}: {where} does not exist"
                " (nothing rejected, or removed after the retention period)"
            )
        if code in ("AccessDenied", "403", "Forbidden"):
            return NoRejectsError(
                f"no rejects for {source_key} that you may read: {where} does not exist"
                " (nothing rejected, or removed after the retention period), or your"
                " credentials may not read it"
            )
        return exc


def _chunks(body: Any) -> Iterator[bytes]:
    while True:
        chunk = body.read(CHUNK_BYTES)
        if not chunk:
            return
        yield chunk
