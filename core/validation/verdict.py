"""The words a person reads for a file's outcome, defined once for every command and the email.

The pipeline records SUCCEEDED / PARTIAL / REJECTED in the ledger (core/pipeline/ledger.py);
``orderpipe validate`` reaches the same verdict without storing anything. Scripts read the codes
(``--json``); people read the words below, in tables, one-line reports and email subjects.
"""

from __future__ import annotations

from typing import Final, Protocol

from core.validation.outcome import ACCEPTED

SUCCEEDED: Final = "SUCCEEDED"
PARTIAL: Final = "PARTIAL"
REJECTED: Final = "REJECTED"

# Every status a file can show, code → word. Verdicts first, then the states before one.
WORDS: Final[dict[str, str]] = {
    SUCCEEDED: "accepted",
    PARTIAL: "partly accepted",
    REJECTED: "rejected",
    "FAILED": "failed",
    "PROCESSING": "processing",
    "PENDING": "waiting",
}

# What each verdict means, for help texts and docs.
MEANINGS: Final[dict[str, str]] = {
    SUCCEEDED: "every row valid; all of them stored",
    PARTIAL: "some rows rejected; the valid ones stored",
    REJECTED: "nothing stored: the file refused, or every row rejected",
}


VERDICTS: Final = (SUCCEEDED, PARTIAL, REJECTED)


def verdict_code(status: str) -> str | None:
    """A ledger status as ``--json``'s ``outcome``: the verdict, or None before there is one."""
    code = str(status).upper()
    return code if code in VERDICTS else None


def word(status: str) -> str:
    """The person's word for a ledger status or verdict (unknown codes pass through)."""
    return WORDS.get(str(status).upper(), str(status).lower())


class Judged(Protocol):
    """What a verdict is read from: a validation Outcome, or anything shaped like one."""

    @property
    def status(self) -> str: ...
    @property
    def valid(self) -> int: ...
    @property
    def invalid(self) -> int: ...


def verdict_of(outcome: Judged) -> str:
    """SUCCEEDED, PARTIAL or REJECTED: what the pipeline records for this outcome.

    A file whose rows were all rejected is REJECTED, not PARTIAL: nothing of it was stored,
    which is what a person reads "rejected" to mean. It keeps its counts and rejected rows.
    """
    if outcome.status != ACCEPTED:
        return REJECTED
    if not outcome.invalid:
        return SUCCEEDED
    return PARTIAL if outcome.valid else REJECTED


def refused_whole(status: str, error: str | None) -> bool:
    """True for a file refused as a file (unreadable, too big, not orders): no row was judged.

    A REJECTED file whose every row failed has no file-level error; it has rejected rows."""
    return str(status).upper() == REJECTED and bool(error)
