"""``orderpipe rejects``' adapter: what a failed read of rejects/… means for a person."""

from __future__ import annotations

import io
from typing import Any

import pytest
from botocore.exceptions import ClientError

from core.ops.rejects import NoRejectsError, RejectsObjects


class RefusingS3:
    """An S3 client whose reads of the rejects object all fail with ``code``."""

    def __init__(self, code: str) -> None:
        self.code = code

    def _refuse(self, operation: str) -> ClientError:
        return ClientError({"Error": {"Code": self.code, "Message": "no"}}, operation)

    def get_object(self, **_: Any) -> Any:
        raise self._refuse("GetObject")

    def head_object(self, **_: Any) -> Any:
        raise self._refuse("HeadObject")


@pytest.mark.parametrize("code", ["NoSuchKey", "404"])
def test_a_missing_rejects_csv_is_no_rejects(code: str) -> None:
    objects = RejectsObjects(RefusingS3(code), "b")
    with pytest.raises(NoRejectsError, match=r"^no rejects for incoming/a\.csv: s3://b/rejects/a"):
        objects.download("incoming/a.csv", io.BytesIO())
    with pytest.raises(NoRejectsError, match="does not exist"):
        objects.link("incoming/a.csv", 3600)


def test_access_denied_says_missing_or_not_readable_as_aws_means_it() -> None:
    # On AWS a missing key reads as 403 to whoever may not list that part of the bucket (the
    # Viewer and Operator policies list incoming/ and reports/ only); moto answers 404.
    objects = RejectsObjects(RefusingS3("AccessDenied"), "b")
    for call in (
        lambda: objects.download("incoming/a.csv", io.BytesIO()),
        lambda: objects.link("incoming/a.csv", 3600),
    ):
        with pytest.raises(NoRejectsError, match=r"does not exist .* or your credentials may not"):
            call()


def test_other_errors_are_not_dressed_up() -> None:
    objects = RejectsObjects(RefusingS3("SlowDown"), "b")
    with pytest.raises(ClientError, match="SlowDown"):
        objects.download("incoming/a.csv", io.BytesIO())
