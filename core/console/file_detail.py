"""A file's page: its rejected rows (paged from the rejects CSV), its e-mail, its timeline."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from core.pipeline.ingest import rejects_key_for
from core.pipeline.ledger import LedgerEntry
from core.validation.engine import REASONS
from core.validation.rules import LINE

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


def find_email(outbox: Path | None, message_id: str | None) -> Email | None:
    """The e-mail as sent, from the local outbox, by the Message-ID the ledger recorded."""
    if outbox is None or not message_id or not outbox.is_dir():
        return None
    parser = BytesParser(policy=policy.default)
    for path in sorted(outbox.glob("*.eml"), reverse=True):
        with path.open("rb") as stream:
            headers = parser.parse(stream, headersonly=True)
        if str(headers.get("Message-ID", "")).strip() != message_id.strip():
            continue
        with path.open("rb") as stream:
            message = parser.parse(stream)
        assert isinstance(message, EmailMessage)  # the default policy builds these  # nosec B101
        text_part = message.get_body(preferencelist=("plain",))
        html_part = message.get_body(preferencelist=("html",))
        return Email(
            subject=str(message.get("Subject", "")),
            sent_to=str(message.get("To", "")),
            text=text_part.get_content() if isinstance(text_part, EmailMessage) else "",
            html=html_part.get_content() if isinstance(html_part, EmailMessage) else None,
        )
    return None


def timeline(entry: LedgerEntry) -> list[tuple[str, str]]:
    """Received, started, finished, notified and each replay, oldest first."""
    events = [
        (entry.event_time, "uploaded (S3 event time)"),
        (entry.received_at, "received by the pipeline"),
        (entry.started_at, f"attempt {entry.attempts or 1} started"),
        (entry.finished_at or "", f"finished: {entry.status}"),
        (entry.notified_at or "", "e-mail sent"),
        *((r.at, f"replay requested: {r.reason}") for r in entry.replay_log),
    ]
    return sorted((at, what) for at, what in events if at)
