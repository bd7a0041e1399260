"""What validating one file produced: the counts, the reasons, a sample of rejected rows.

``to_json_dict`` is the ``orderpipe validate --json`` object; ingest copies the same counts and
reasons into the ledger, and the sample into the notice a person reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

import polars as pl

Status = Literal["accepted", "rejected"]
ACCEPTED: Final = "accepted"
REJECTED: Final = "rejected"

# A repeat's reason carries where the value first appeared: "Order_Id.unique (first on line 2)".
FIRST_ON_LINE: Final = "first on line"

SAMPLE_REJECTS = 20  # rejected rows kept in memory for people to read; the rest stream out


def reason_code(reason: str) -> str:
    """The rule's code in a rejected row's reason, without the detail some carry."""
    return reason.split(" (", 1)[0]


@dataclass(frozen=True)
class RejectedRow:
    line: int
    values: dict[str, str | None]  # the original text of each schema column
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ChunkResult:
    """One bounded chunk of a file, split in two (columns described in engine.py)."""

    valid: pl.DataFrame
    rejects: pl.DataFrame


@dataclass(frozen=True)
class Outcome:
    file: str
    status: Status
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    sample_rejects: tuple[RejectedRow, ...] = ()

    @classmethod
    def rejected(cls, file: str, error: str) -> Outcome:
        """A file-level rejection: nothing in it counts as a row."""
        return cls(file=file, status=REJECTED, error=error)

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED

    @property
    def clean(self) -> bool:
        """Accepted with every row valid."""
        return self.accepted and self.invalid == 0

    def top_reasons(self, limit: int = 3) -> list[tuple[str, int]]:
        return sorted(self.reasons.items(), key=lambda item: (-item[1], item[0]))[:limit]

    def to_json_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "file": self.file,
            "status": self.status,
            "rows": self.rows,
            "valid": self.valid,
            "invalid": self.invalid,
            "reasons": dict(self.reasons),
        }
        if self.error is not None:
            body["error"] = self.error
        return body
