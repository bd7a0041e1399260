"""A file's page: its rejected rows (paged from the rejects CSV), its e-mail, its timeline."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from core.ops.event_messages import iso_now, parse_iso
from core.pipeline.ingest import rejects_key_for
from core.pipeline.ledger import LedgerEntry
from core.validation.engine import REASONS
from core.validation.rules import LINE
from core.validation.verdict import word

__all__ = ["RejectsPage", "find_email", "rejects_key_for", "rejects_page", "timeline"]


@dataclass(frozen=True)
class RejectsPage:
    columns: list[str]  # the schema columns' original text (line and reasons apart)
    rows: list[tuple[str, list[str], list[str]]]  # (line, values, reason codes)
    more: bool


def _decoded(lines: Iterator[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for raw in lines:
        yield decoder.decode(raw)


def rejects_page(lines: Iterator[bytes], offset: int, size: int) -> RejectsPage:
    """Rows ``offset`` to ``offset + size`` of a rejects CSV; reads no further than it shows."""
    reader = csv.reader(_decoded(lines))
    header = next(reader, [])
    line_at = header.index(LINE) if LINE in header else None
    reasons_at = header.index(REASONS) if REASONS in header else None
    value_at = [i for i in range(len(header)) if i not in (line_at, reasons_at)]
    rows: list[tuple[str, list[str], list[str]]] = []
    more = False
    for n, record in enumerate(reader):
        if n < offset:
            continue
        if len(rows) == size:
            more = True
            break
        reasons = [r for r in _cell(record, reasons_at).split(";") if r]
        rows.append((_cell(record, line_at), [_cell(record, i) for i in value_at], reasons))
    return RejectsPage([header[i] for i in value_at], rows, more)


def _cell(record: list[str], at: int | None) -> str:
    return record[at] if at is not None and at < len(record) else ""


@dataclass(frozen=True)
class Email:
    subject: str
    sent_to: str
    text: str
    html: str | None


def find_email(outbox: Path | None, entry: LedgerEntry) -> Email | None:
    """The e-mail as sent for this file version, from the local outbox (None elsewhere).

    The ledger keeps SES's message id, which the saved copy does not carry; the copy names
    each file as ``s3://bucket/key (version V)``. Only copies written between the file's
    outcome and a minute after its notice are opened.
    """
    if outbox is None or not entry.notified_at or not outbox.is_dir():
        return None
    start = _stamp(entry.finished_at or entry.notified_at)
    end = _stamp(iso_now(parse_iso(entry.notified_at) + timedelta(minutes=1)))
    source = f"s3://{entry.bucket}/{entry.object_key} (version {entry.version})"
    parser = BytesParser(policy=policy.default)
    for path in sorted(outbox.glob("*.eml"), reverse=True):
        if not start <= path.name[: len(start)] <= end:
            continue
        with path.open("rb") as stream:
            message = parser.parse(stream)
        if not isinstance(message, EmailMessage):
            continue
        text_part = message.get_body(preferencelist=("plain",))
        text = text_part.get_content() if isinstance(text_part, EmailMessage) else ""
        if source not in " ".join(text.split()):
            continue
        html_part = message.get_body(preferencelist=("html",))
        return Email(
            subject=str(message.get("Subject", "")),
            sent_to=str(message.get("To", "")),
            text=text,
            html=html_part.get_content() if isinstance(html_part, EmailMessage) else None,
        )
    return None


def _stamp(iso: str) -> str:
    """An ISO time in the outbox's file-name form (``20261204T151707``), to the second."""
    return parse_iso(iso).strftime("%Y%m%dT%H%M%S")


def timeline(entry: LedgerEntry) -> list[tuple[str, str]]:
    """Received, started, finished, notified and each replay, oldest first."""
    events = [
        (entry.event_time, "uploaded (S3 event time)"),
        (entry.received_at, "received by the pipeline"),
        (entry.started_at, f"attempt {entry.attempts or 1} started"),
        (entry.finished_at or "", f"finished: {word(entry.status)}"),
        (entry.notified_at or "", "e-mail sent"),
        *((r.at, f"replay requested: {r.reason}") for r in entry.replay_log),
    ]
    return sorted(((at, what) for at, what in events if at), key=lambda e: e[0])
