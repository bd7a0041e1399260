"""One vocabulary: each ledger status has one word, and validate reaches the pipeline's verdict."""

from __future__ import annotations

from core.pipeline.ledger import Status
from core.validation.outcome import Outcome
from core.validation.verdict import WORDS, refused_whole, verdict_of, word


def test_every_ledger_status_has_a_word_and_no_two_share_one() -> None:
    assert {str(s) for s in Status} <= set(WORDS)
    assert len(set(WORDS.values())) == len(WORDS)
    assert [word(s) for s in ("SUCCEEDED", "PARTIAL", "REJECTED")] == [
        "accepted",
        "partly accepted",
        "rejected",
    ]
    assert word("partial") == "partly accepted"  # any case


def test_the_verdict_is_what_ingest_records() -> None:
    assert verdict_of(Outcome("f", "accepted", rows=3, valid=3)) == "SUCCEEDED"
    assert verdict_of(Outcome("f", "accepted", rows=3, valid=1, invalid=2)) == "PARTIAL"
    assert verdict_of(Outcome("f", "accepted", rows=0)) == "SUCCEEDED"
    assert verdict_of(Outcome.rejected("f", "the file is empty")) == "REJECTED"


def test_a_file_with_rows_but_none_valid_is_rejected_not_partly_accepted() -> None:
    none_valid = Outcome("f", "accepted", rows=3, valid=0, invalid=3)
    assert verdict_of(none_valid) == "REJECTED"
    assert word(verdict_of(none_valid)) == "rejected"
    # Rejected for its rows, not refused as a file: it has rejected rows to show.
    assert not refused_whole(verdict_of(none_valid), none_valid.error)
    assert refused_whole("REJECTED", "the file is empty")
    assert not refused_whole("PARTIAL", None)
    assert not refused_whole("FAILED", "AccessDenied")
