"""One email for a batch of file notices: what was rejected, why, and the rows themselves.

The message is a ``multipart/mixed`` MIME document: a ``multipart/alternative`` body (plain
text first, HTML second, carrying the same facts) followed by each file's rejects CSV. SES v1
refuses messages over 10 MB, so when the CSVs would not fit, the largest are replaced one by one
with a presigned URL until the rest fit. A link states when it really stops working (the signing
credentials' expiry, when sooner than asked, or no date when that is unknown), and every file's
rejects name their S3 location and the ``orderpipe rejects`` command that fetches them later.
Composition reads S3 only through ``RejectsStore``, so it is tested with an in-memory store.
"""

from __future__ import annotations

import html
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, make_msgid
from typing import Protocol

from core.pipeline.notice import FileNotice, SampleRow
from core.validation.outcome import reason_code
from core.validation.schema import (
    ALLOWED,
    FIELD_COUNT_CODE,
    FORMAT,
    RANGE,
    REQUIRED,
    UNIQUE,
    Column,
    Schema,
)
from core.validation.verdict import refused_whole, word
from core.validation.visible import visible, visible_line

# SES v1 (send_raw_email) refuses a message over 10 MB; SES adds its own headers (DKIM,
# Message-ID, feedback ids) on top of ours, so keep a margin below the hard limit.
SES_MAX_MESSAGE_BYTES = 10 * 1024 * 1024
SES_HEADROOM_BYTES = 256 * 1024
DEFAULT_MAX_BYTES = SES_MAX_MESSAGE_BYTES - SES_HEADROOM_BYTES
LINK_EXPIRY_S = 7 * 24 * 3600  # asked for; the signing credentials may allow less
# A presigned URL (~1 KB on AWS) appears in both bodies, escaped and quoted-printable wrapped.
LINK_COST_BYTES = 3 * 1024
CELL_CHARS = 80  # a longer value is cut in the body (the CSV keeps it whole)
TEXT_CELL_CHARS = 28
SUBJECT_KEY_CHARS = 80  # a key in the Subject is cut; the body shows it whole
# Characters a mail client or file system may refuse in an attachment's name.
_FILENAME_UNSAFE = str.maketrans(dict.fromkeys('\\/:*?"<>|', "_"))

# The badge and bracket label: the same words every command uses (core/validation/verdict.py).
STATUS_LABEL = {code: word(code).capitalize() for code in ("PARTIAL", "REJECTED", "SUCCEEDED")}
# Badges carry inline styles (they hold meaning); table cosmetics sit in one <style> block
# with HTML attributes as the fallback, so a 50-file email is not a megabyte of repeated CSS.
_STATUS_STYLE = {
    "PARTIAL": "background:#fef3c7;color:#92400e",
    "REJECTED": "background:#fee2e2;color:#991b1b",
}
_CSS = (
    "table.op{border-collapse:collapse;font-size:13px;margin:6px 0 14px}"
    ".op th{text-align:left;padding:4px 8px;border-bottom:2px solid #d1d5db;background:#f3f4f6}"
    ".op td{padding:4px 8px;border-bottom:1px solid #e5e7eb;vertical-align:top}"
    ".op td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".empty{color:#9ca3af}.sp{color:#9ca3af}"
)
_TABLE = "<table class='op' cellpadding='4' cellspacing='0'>"
_TD = "<td>"
_NUM = "<td class='n' align='right'>"
_BAD = "<td bgcolor='#fee2e2'>"  # a value the row was rejected for


class RejectsStore(Protocol):
    """Where the rejects CSVs live (S3 in production, a dict in unit tests)."""

    def size(self, bucket: str, key: str) -> int | None:
        """Bytes of the object, or None when it does not exist."""

    def read(self, bucket: str, key: str) -> bytes: ...

    def presign(self, bucket: str, key: str, expires_s: int) -> Link:
        """A download link valid for at most ``expires_s``, and when it really expires."""


@dataclass(frozen=True)
class Link:
    url: str
    expires_at: datetime | None  # when the URL stops working; None: nobody can say (see signing)


@dataclass
class Rejects:
    """How one file's rejects CSV travels: attached, linked, or gone from the bucket."""

    bucket: str
    key: str
    filename: str
    size: int | None  # None: the object is missing
    content: bytes | None = None
    link: Link | None = None
    source_key: str = ""  # the uploaded object's key, for the fetch-later command
    stack_name: str = ""  # the command's --stack; empty on the local stack, found by itself


@dataclass(frozen=True)
class Section:
    notice: FileNotice
    rejects: Rejects | None


@dataclass(frozen=True)
class Composed:
    message: EmailMessage
    data: bytes
    attached: list[str] = field(default_factory=list)  # rejects keys attached
    linked: list[str] = field(default_factory=list)  # rejects keys sent as links

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


def compose(
    notices: Sequence[FileNotice],
    store: RejectsStore,
    *,
    sender: str,
    recipients: Sequence[str],
    max_bytes: int = DEFAULT_MAX_BYTES,
    now: datetime | None = None,
    schema: Schema | None = None,
    stack_name: str = "",
) -> Composed:
    """Build the batch's email; past ``max_bytes`` the largest CSVs become links."""
    if not notices:
        raise ValueError("an email needs at least one notice")
    now = now or datetime.now(UTC)
    # Worst first: files rejected whole, then by rejected rows.
    ordered = sorted(notices, key=lambda n: (n.status != "REJECTED", -n.invalid, n.key))
    sections = [
        Section(n, _rejects_of(n, store, name, stack_name)) for n, name in _filenames(ordered)
    ]
    present = [s.rejects for s in sections if s.rejects is not None and s.rejects.size is not None]
    # Link the largest CSVs until the rest fit, so as many files as possible keep their
    # attachment. Estimated from sizes first (nothing downloaded), then verified below.
    draft = _build(
        sections,
        msgid="<draft@orderpipe>",
        sender=sender,
        recipients=recipients,
        now=now,
        schema=schema,
    )
    over = len(draft.as_bytes()) + sum(_attachment_cost(r) for r in present) - max_bytes
    for rejects in sorted(present, key=lambda r: r.size or 0, reverse=True):
        if over <= 0:
            rejects.content = store.read(rejects.bucket, rejects.key)
            continue
        over -= _attachment_cost(rejects) - LINK_COST_BYTES
        rejects.link = store.presign(rejects.bucket, rejects.key, LINK_EXPIRY_S)
    msgid = make_msgid(domain=_domain(sender))
    while True:
        message = _build(
            sections,
            msgid=msgid,
            sender=sender,
            recipients=recipients,
            now=now,
            schema=schema,
        )
        data = message.as_bytes()
        attached = [r for r in present if r.content is not None]
        if len(data) <= max_bytes or not attached:
            break
        largest = max(attached, key=lambda r: len(r.content or b""))
        largest.content = None
        largest.link = store.presign(largest.bucket, largest.key, LINK_EXPIRY_S)
    return Composed(
        message=message,
        data=data,
        attached=[r.key for r in present if r.content is not None],
        linked=[r.key for r in present if r.link is not None],
    )


def subject_for(notices: Sequence[FileNotice]) -> str:
    """``orderpipe: a.csv partly accepted - 2 of 100 rows rejected`` for one file; for several,
    how many files came out how, and the rows rejected in all."""
    if len(notices) == 1:
        n = notices[0]
        name = visible_line(_basename(n.key), SUBJECT_KEY_CHARS)
        if refused_whole(n.status, n.error):
            return f"orderpipe: {name} {word(n.status)} - nothing stored"
        rejected = f"{n.invalid:,} of {n.rows:,} {_plural(n.rows, 'row')} rejected"
        if not n.valid:  # every row failed: rejected, though each row has its reasons
            rejected = f"nothing stored, {rejected}"
        return f"orderpipe: {name} {word(n.status)} - {rejected}"
    rows = sum(n.invalid for n in notices)
    outcomes = []
    for status in ("REJECTED", "PARTIAL"):
        files = sum(1 for n in notices if n.status == status)
        if files:
            outcomes.append(f"{files:,} {word(status)}")
    if rows:
        outcomes.append(f"{rows:,} {_plural(rows, 'row')} rejected")
    count = len(notices)
    return f"orderpipe: {count:,} files need attention - {', '.join(outcomes) or 'see details'}"


class _MailPolicy(EmailPolicy):
    """The SMTP policy, but an ASCII Subject folds at its spaces.

    CPython's folder moves some subjects just over 78 characters whole onto a continuation
    line, leaving ``Subject:`` empty on the first, which some clients show as a blank subject.
    """

    def fold(self, name: str, value: str) -> str:
        if _folds_plainly(name, value):
            return _fold_words(name, value, self.linesep)
        return str(super().fold(name, value))

    def fold_binary(self, name: str, value: str) -> bytes:
        if _folds_plainly(name, value):
            return _fold_words(name, value, self.linesep).encode("ascii")
        return bytes(super().fold_binary(name, value))


def _folds_plainly(name: str, value: str) -> bool:
    return name.lower() == "subject" and value.isascii() and value.isprintable()


def _fold_words(name: str, value: str, linesep: str, limit: int = 78) -> str:
    """``Name: value`` folded before spaces so no line passes ``limit`` when it can help."""
    lines = [f"{name}:"]
    for word_ in value.split(" "):
        if len(lines[-1]) + 1 + len(word_) > limit and lines[-1].strip() not in ("", f"{name}:"):
            lines.append("")
        lines[-1] += " " + word_
    return linesep.join(lines) + linesep


MAIL_POLICY: EmailPolicy = _MailPolicy(linesep="\r\n")


def _finished(iso: str | None) -> str:
    """``2026-12-04T15:53:26.363Z`` as ``2026-12-04 15:53:26 UTC``, the footer's own style."""
    if not iso:
        return "unknown"
    return iso[:19].replace("T", " ") + " UTC" if iso.endswith("Z") else iso


def version_text(version: str) -> str:
    """A ledger version as people read it: the S3 version id, or that there is none."""
    if version.startswith("etag:"):
        return f"ETag {visible(version[5:])}, no S3 version id"
    return f"version {visible(version)}"


def shown_value(value: str) -> str:
    """A value for the text body: quoted when spaces around it would be invisible."""
    return f'"{value}"' if value != value.strip() else value


def describe_reasons(schema: Schema) -> dict[str, str]:
    """A sentence for each reason code the schema can produce, shown next to the code."""
    texts = {FIELD_COUNT_CODE: f"the row does not have the {len(schema.columns)} expected fields"}
    for column in schema.columns:
        for rule in column.rules():
            texts[column.code(rule)] = _rule_text(column, rule)
    return texts


def _rule_text(column: Column, rule: str) -> str:
    name = column.name
    if rule == REQUIRED:
        return f"{name} is empty"
    if rule == UNIQUE:
        return (
            f"{name} repeats a value from an earlier line of the file; each such row names "
            f"the line where the value first appears"
        )
    if rule == FORMAT and column.type == "date":
        # One code covers both a wrong spelling and an impossible date (31/02/23), so the
        # sentence must fit both: a real calendar date, written in one of these ways.
        return f"{name} is not a real calendar date written as " + " or ".join(
            f.spec for f in column.date_formats
        )
    if rule == FORMAT:
        comma = " after a decimal comma" if column.decimal_mark == "," else ""
        return f"{name} is not a number with at most {column.scale} decimals{comma}"
    if rule == ALLOWED:
        case = "" if column.case_sensitive else " (any case)"
        return f"{name} is not one of {', '.join(column.allowed)}{case}"
    if rule == RANGE:
        low, high = column.minimum, column.maximum
        if low is not None and high is not None:
            return f"{name} is outside {low} to {high}"
        return f"{name} is below {low}" if low is not None else f"{name} is above {high}"
    return ""


# --- building -------------------------------------------------------------------------------


def _build(
    sections: Sequence[Section],
    *,
    sender: str,
    recipients: Sequence[str],
    now: datetime,
    schema: Schema | None,
    msgid: str,
) -> EmailMessage:
    notices = [s.notice for s in sections]
    message = EmailMessage(policy=MAIL_POLICY)
    message["Subject"] = subject_for(notices)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = msgid
    message["X-Orderpipe-Files"] = str(len(notices))
    vocab = _Vocabulary.of(schema)
    # Quoted-printable keeps both bodies readable in the raw message and in the .eml outbox.
    message.set_content(_text_body(sections, now, vocab), cte="quoted-printable")
    message.add_alternative(
        _html_body(sections, now, vocab), subtype="html", cte="quoted-printable"
    )
    for section in sections:
        rejects = section.rejects
        if rejects is not None and rejects.content is not None:
            message.add_attachment(
                rejects.content,
                maintype="text",
                subtype="csv",
                filename=rejects.filename,
                params={"charset": "utf-8"},  # the rejects CSV is written as UTF-8
            )
    return message


def _rejects_of(
    notice: FileNotice, store: RejectsStore, filename: str, stack_name: str
) -> Rejects | None:
    if not notice.rejects_key:
        return None
    size = store.size(notice.bucket, notice.rejects_key)
    return Rejects(
        notice.bucket,
        notice.rejects_key,
        filename,
        size,
        source_key=notice.key,
        stack_name=stack_name,
    )


def _attachment_cost(rejects: Rejects) -> int:
    # base64: 4 bytes per 3, 76-character lines ending in CRLF; plus the part's own headers.
    encoded = 4 * -(-(rejects.size or 0) // 3)
    return encoded + 2 * -(-encoded // 76) + 300 + 2 * len(rejects.filename.encode())


def _filenames(notices: Sequence[FileNotice]) -> list[tuple[FileNotice, str]]:
    """A readable, unique attachment name per file: ``<stem>-rejects.csv``."""
    seen: dict[str, int] = {}
    out = []
    for notice in notices:
        stem = _basename(notice.key).rsplit(".", 1)[0] or "file"
        stem = visible_line(stem, SUBJECT_KEY_CHARS).translate(_FILENAME_UNSAFE)
        name = f"{stem}-rejects.csv"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{stem}-{seen[name]}-rejects.csv"
        out.append((notice, name))
    return out


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip("> ") or "orderpipe.local"


def _basename(key: str) -> str:
    return posixpath.basename(key.rstrip("/")) or key


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


@dataclass(frozen=True)
class _Vocabulary:
    """What the schema lends the email: a sentence per reason code, the columns' order."""

    texts: Mapping[str, str]
    order: tuple[str, ...]

    @classmethod
    def of(cls, schema: Schema | None) -> _Vocabulary:
        if schema is None:
            return cls({}, ())
        return cls(describe_reasons(schema), schema.column_names)

    def describe(self, code: str) -> str:
        return self.texts.get(reason_code(code), "")

    def columns(self, sample: Sequence[SampleRow]) -> list[str]:
        """The sample's columns in the schema's order (notices carry them sorted by name)."""
        seen: dict[str, None] = {}
        for row in sample:
            seen.update(dict.fromkeys(row.values))
        rank = {name: i for i, name in enumerate(self.order)}
        return sorted(seen, key=lambda c: (rank.get(c, len(rank)), c))


def _cut(value: str | None, limit: int) -> str:
    return visible_line(value, limit)


def _headline(notice: FileNotice) -> str:
    if refused_whole(notice.status, notice.error):
        why = visible(notice.error) or "the file could not be accepted"
        return f"The whole file was rejected and no orders were stored: {why}"
    if not notice.valid:
        return (
            f"No row was valid, so no orders were stored: {notice.invalid:,} of "
            f"{notice.rows:,} {_plural(notice.rows, 'row')} rejected."
        )
    return (
        f"{notice.valid:,} of {notice.rows:,} {_plural(notice.rows, 'row')} stored; "
        f"{notice.invalid:,} rejected."
    )


def _sorted_reasons(notice: FileNotice) -> list[tuple[str, int]]:
    return sorted(notice.reasons.items(), key=lambda kv: (-kv[1], kv[0]))


def _rejects_line(rejects: Rejects | None) -> str:
    if rejects is None:
        return "none"
    if rejects.size is None:
        return f"{visible(rejects.key)} is no longer in the bucket"
    if rejects.content is not None:
        return f"attached as {rejects.filename}"
    return f"too large to attach ({rejects.size:,} bytes): {_link_validity(rejects.link)}"


def _link_validity(link: Link | None) -> str:
    if link is None or link.expires_at is None:
        # Temporary credentials that do not say when they expire: promise nothing.
        return "download link below, valid for a short time only"
    return f"download link below, valid until {_when(link.expires_at)}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def fetch_command(source_key: str, stack_name: str = "") -> str:
    """The command that fetches a file's rejects CSV at any time, quoted for a shell.

    Without a stack name (the local stack) the command finds the running stack by itself."""
    stack = f" --stack {_shell_word(stack_name)}" if stack_name else ""
    return f"orderpipe rejects {_shell_word(source_key)}{stack}"


def _shell_word(text: str) -> str:
    """``text`` quoted for a shell, on one visible line: a key holding control or bidi
    characters becomes an ANSI-C ``$'...'`` word (bash, zsh), whose escapes are exactly the
    ones ``visible`` writes, so the command still fetches that key."""
    if visible(text) == text:
        return shlex.quote(text)
    return "$'" + visible(text.replace("\\", "\\\\").replace("'", "\\'")) + "'"


def _stored_lines(rejects: Rejects) -> list[str]:
    """Where the rejects live and how to fetch them once a link has expired."""
    if rejects.size is None:
        return []
    return [
        f"Stored as s3://{rejects.bucket}/{visible(rejects.key)}; any time later:",
        f"  {fetch_command(rejects.source_key or rejects.key, rejects.stack_name)}",
    ]


# --- plain text -----------------------------------------------------------------------------


def _text_body(sections: Sequence[Section], now: datetime, vocab: _Vocabulary) -> str:
    notices = [s.notice for s in sections]
    lines = [subject_for(notices).removeprefix("orderpipe: "), ""]
    for section in sections:
        n = section.notice
        lines += [
            "-" * 72,
            f"{visible(n.key)}  [{STATUS_LABEL.get(n.status, n.status)}]",
            "",
            _headline(n),
        ]
        if n.reasons:
            lines += ["", "Reasons:"]
            for code, count in _sorted_reasons(n):
                text = vocab.describe(code)
                lines.append(f"  {count:>9,}  {code}" + (f"  - {text}" if text else ""))
        if n.sample:
            lines += ["", _sample_caption(n), *_text_table(n.sample, vocab)]
        if section.rejects is not None:
            lines += ["", f"Rejected rows: {_rejects_line(section.rejects)}"]
        if section.rejects is not None and section.rejects.link:
            lines.append(f"  {section.rejects.link.url}")
        if section.rejects is not None:
            lines += _stored_lines(section.rejects)
        lines += [
            "",
            f"Source: s3://{n.bucket}/{visible(n.key)} ({version_text(n.version)})",
            f"Finished: {_finished(n.finished_at)}",
            "",
        ]
    lines += _text_footer(now)
    return "\n".join(lines) + "\n"


def _text_table(sample: Sequence[SampleRow], vocab: _Vocabulary) -> list[str]:
    columns = vocab.columns(sample)
    header = ["Line", *columns, "Reasons"]
    rows = [
        [
            str(r.line),
            *(_cut(shown_value(r.values.get(c) or ""), TEXT_CELL_CHARS) for c in columns),
            ", ".join(r.reasons),
        ]
        for r in sample
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    rule = ["-" * w for w in widths[:-1]] + ["-" * min(widths[-1], 30)]
    return [fmt(header).rstrip(), fmt(rule).rstrip(), *(fmt(r).rstrip() for r in rows)]


def _sample_caption(n: FileNotice) -> str:
    shown = len(n.sample)
    if shown < n.invalid:
        return f"First {shown:,} of {n.invalid:,} rejected rows (line = line in the uploaded file):"
    return f"Rejected {_plural(shown, 'row')} (line = line in the uploaded file):"


def _text_footer(now: datetime) -> list[str]:
    return [
        "-" * 72,
        "Rows that were stored stay stored. Correct the rejected rows and upload them",
        "again under incoming/; a newer upload of an order replaces the older one.",
        f"Sent by orderpipe at {now.strftime('%Y-%m-%d %H:%M:%S UTC')}.",
    ]


# --- HTML -----------------------------------------------------------------------------------


def _html_body(sections: Sequence[Section], now: datetime, vocab: _Vocabulary) -> str:
    e = html.escape
    notices = [s.notice for s in sections]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{e(subject_for(notices))}</title><style>{_CSS}</style></head>",
        "<body style='font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;"
        "color:#111827;margin:0;padding:16px;max-width:960px'>",
        f"<h1 style='font-size:20px;margin:0 0 8px'>"
        f"{e(subject_for(notices).removeprefix('orderpipe: '))}</h1>",
        _html_summary(sections),
    ]
    for index, section in enumerate(sections, 1):
        parts.append(_html_section(index, section, vocab))
    parts.append(
        "<p style='font-size:12px;color:#6b7280;border-top:1px solid #e5e7eb;padding-top:8px'>"
        "Rows that were stored stay stored. Correct the rejected rows and upload them again "
        "under <code>incoming/</code>; a newer upload of an order replaces the older one.<br>"
        f"Sent by orderpipe at {e(now.strftime('%Y-%m-%d %H:%M:%S UTC'))}.</p></body></html>"
    )
    return "".join(parts)


def _badge(status: str) -> str:
    style = _STATUS_STYLE.get(status, "background:#e5e7eb;color:#111827")
    label = html.escape(STATUS_LABEL.get(status, status))
    return (
        # nowrap: in a narrow summary column the pill otherwise breaks into two half-pills.
        f"<span style='{style};padding:2px 8px;border-radius:10px;font-size:12px;"
        f"font-weight:600;white-space:nowrap'>{label}</span>"
    )


def _html_summary(sections: Sequence[Section]) -> str:
    e = html.escape
    head = "".join(
        f"<th>{h}</th>" for h in ("File", "Outcome", "Rows", "Stored", "Rejected", "Rejected rows")
    )
    rows = []
    for index, s in enumerate(sections, 1):
        n = s.notice
        whole = refused_whole(n.status, n.error)  # no row was counted: the file was refused
        rows.append(
            f"<tr>{_TD}<a href='#f{index}'>{e(visible(n.key))}</a></td>"
            f"{_TD}{_badge(n.status)}</td>"
            f"{_NUM}{'–' if whole else f'{n.rows:,}'}</td>{_NUM}{n.valid:,}</td>"
            f"{_NUM}{'the file' if whole else f'{n.invalid:,}'}</td>"
            f"{_TD}{'see why below' if whole else _html_rejects(s.rejects)}</td></tr>"
        )
    return f"{_TABLE}<tr>{head}</tr>{''.join(rows)}</table>"


def _html_rejects(rejects: Rejects | None) -> str:
    e = html.escape
    if rejects is not None and rejects.link:
        validity = _link_validity(rejects.link).removeprefix("download link below, ")
        return (
            f"<a href='{e(rejects.link.url, quote=True)}'>download {e(rejects.filename)}</a> "
            f"({rejects.size or 0:,} bytes, too large to attach; link {e(validity)})"
        )
    return e(_rejects_line(rejects))


def _html_stored(rejects: Rejects) -> str:
    if rejects.size is None:
        return ""
    e = html.escape
    command = fetch_command(rejects.source_key or rejects.key, rejects.stack_name)
    return (
        f"<p style='font-size:12px;color:#6b7280;margin:4px 0'>Stored as "
        f"<code>s3://{e(rejects.bucket)}/{e(visible(rejects.key))}</code>; any time later: "
        f"<code>{e(command)}</code></p>"
    )


def _html_section(index: int, section: Section, vocab: _Vocabulary) -> str:
    e = html.escape
    n = section.notice
    out = [
        f"<h2 id='f{index}' style='font-size:16px;margin:22px 0 4px'>{e(visible(n.key))} "
        f"{_badge(n.status)}</h2>",
        f"<p style='margin:4px 0'>{e(_headline(n))}</p>",
    ]
    if n.reasons:
        rows = "".join(
            f"<tr>{_TD}<code>{e(code)}</code></td>"
            f"{_TD}{e(vocab.describe(code))}</td>"
            f"{_NUM}{count:,}</td></tr>"
            for code, count in _sorted_reasons(n)
        )
        out.append(f"{_TABLE}<tr><th>Reason</th><th></th><th>Rows</th></tr>{rows}</table>")
    if n.sample:
        columns = vocab.columns(n.sample)
        head = "".join(f"<th>{e(h)}</th>" for h in ("Line", *columns, "Reasons"))
        body = "".join(_html_sample_row(r, columns, vocab) for r in n.sample)
        out.append(f"<p style='margin:8px 0 0;font-weight:600'>{e(_sample_caption(n))}</p>")
        out.append(f"{_TABLE}<tr>{head}</tr>{body}</table>")
    if section.rejects is not None:
        out.append(f"<p style='margin:4px 0'>Rejected rows: {_html_rejects(section.rejects)}</p>")
        out.append(_html_stored(section.rejects))
    out.append(
        f"<p style='font-size:12px;color:#6b7280;margin:4px 0'>"
        f"s3://{e(n.bucket)}/{e(visible(n.key))} &middot; {e(version_text(n.version))} &middot; "
        f"finished {e(_finished(n.finished_at))}</p>"
    )
    return "".join(out)


_SPACE = "<span class='sp' title='a space'>&#9251;</span>"  # ␣: a space that would not show


def _html_value(value: str) -> str:
    """A value as HTML, cut to CELL_CHARS; spaces around it shown as ␣ (HTML would hide them)."""
    cut = _cut(value, CELL_CHARS)
    core = cut.strip(" ")
    lead = len(cut) - len(cut.lstrip(" "))
    trail = len(cut) - len(cut.rstrip(" ")) if core else 0
    return _SPACE * lead + html.escape(core) + _SPACE * trail


def _html_sample_row(row: SampleRow, columns: Sequence[str], vocab: _Vocabulary) -> str:
    e = html.escape
    # Reason codes are "<Column>.<rule>": tint the cells the row was rejected for.
    flagged = {code.split(".", 1)[0] for code in row.reasons}
    cells = []
    for column in columns:
        value = row.values.get(column)
        cell = _BAD if column in flagged else _TD
        shown = "<span class='empty'>(empty)</span>" if value in (None, "") else _html_value(value)
        cells.append(f"{cell}{shown}</td>")
    reasons = "<br>".join(
        f"<code title='{e(vocab.describe(r), quote=True)}'>{e(r)}</code>" for r in row.reasons
    )
    return f"<tr>{_NUM}{row.line}</td>{''.join(cells)}{_TD}{reasons}</td></tr>"
