"""The message ingest puts on the notify queue when a file needs a person's attention.

One notice per file outcome (PARTIAL or REJECTED). It carries everything the email needs, so
the notify function never re-reads the source file; the full rejects CSV stays in S3.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

NOTICE_TYPE = "orderpipe.file_outcome"
SAMPLE_ROWS = 20  # rejected rows quoted in the notice (and the email body)


@dataclass(frozen=True)
class SampleRow:
    line: int
    values: dict[str, str | None]
    reasons: list[str]


@dataclass(frozen=True)
class FileNotice:
    file_id: str
    bucket: str
    key: str
    version: str
    status: str  # "PARTIAL" | "REJECTED"
    rows: int
    valid: int
    invalid: int
    reasons: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    rejects_key: str | None = None
    rejects_bytes: int = 0
    sample: list[SampleRow] = field(default_factory=list)
    finished_at: str = ""

    def to_json(self) -> str:
        body = asdict(self)
        body["type"] = NOTICE_TYPE
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> FileNotice:
        """Parse a notice; raise ValueError on anything that is not one."""
        try:
            body: dict[str, Any] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"notice is not JSON: {exc.msg}") from None
        if not isinstance(body, dict) or body.pop("type", None) != NOTICE_TYPE:
            raise ValueError("message is not an orderpipe file notice")
        try:
            sample = [SampleRow(**row) for row in body.pop("sample", [])]
            return cls(**body, sample=sample)
        except TypeError as exc:
            raise ValueError(f"malformed notice: {exc}") from None
