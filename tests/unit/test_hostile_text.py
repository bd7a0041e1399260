"""Hostile text stays text on every surface a person reads: the email's Subject, text and
HTML parts, and the CLI's tables. Each string of tests/hostile_strings.py goes through each
surface as a key, as a value and as an error, and must come out escaped and still visible."""

from __future__ import annotations

import html
import io
import posixpath
import subprocess
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from core.cli import cli
from core.cli.status import ledger_table
from core.cli.tables import Column, cell, emit_table
from core.pipeline.email_report import compose, fetch_command
from core.pipeline.ledger import LedgerEntry, Status
from core.pipeline.notice import FileNotice, SampleRow
from core.validation.schema import default_schema
from core.validation.visible import visible, visible_line
from tests.hostile_strings import HOSTILE, Hostile, acting_in
from tests.unit.test_notify import FakeLedger, msg, world

BUCKET = "orderpipe-test-orders"
NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
IDS = [h.name for h in HOSTILE]


def test_visible_escapes_what_acts_and_keeps_the_rest() -> None:
    assert visible("a\nb\r\tc\x00\x1b[0m") == "a\\nb\\r\\tc\\x00\\x1b[0m"
    assert visible("invoice\u202ecod.exe") == "invoice\\u202ecod.exe"
    assert visible("\ufeffOrd\u200b1") == "\\ufeffOrd\\u200b1"
    assert visible("📦 طلب <b> [red]") == "📦 طلب <b> [red]"
    assert visible(None) == ""
    assert visible_line("x" * 10, 5) == "xxxx…"


@pytest.mark.parametrize("hostile", HOSTILE, ids=IDS)
def test_visible_leaves_no_acting_character(hostile: Hostile) -> None:
    shown = visible(hostile.text)
    assert acting_in(shown) == []
    assert hostile.shown in shown or hostile.shown in hostile.text.replace("\x00", "")


class Store:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def size(self, bucket: str, key: str) -> int | None:
        return len(self.objects[key]) if key in self.objects else None

    def read(self, bucket: str, key: str) -> bytes:
        return self.objects[key]

    def presign(self, bucket: str, key: str, expires_s: int) -> str:
        return f"https://{bucket}.example/x?e={expires_s}"


def _notice(text: str) -> FileNotice:
    key = f"incoming/{text}.csv"
    return FileNotice(
        file_id=f"{BUCKET}/{key}#v1",
        bucket=BUCKET,
        key=key,
        version="v1",
        status="PARTIAL",
        rows=3,
        valid=2,
        invalid=1,
        reasons={"Order_Id.unique": 1},
        rejects_key=f"rejects/{key}.csv",
        sample=[SampleRow(2, {"Order_Id": text, "Customer_Id": "C1"}, ["Order_Id.unique"])],
        finished_at="2026-11-25T09:00:00.000Z",
    )


def _parts(data: bytes) -> tuple[EmailMessage, str, str]:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    assert text is not None
    assert page is not None
    # The message's own line ends are CRLF; a lone CR or LF inside a line would be a leak.
    return (
        message,
        str(text.get_content()).replace("\r\n", "\n"),
        str(page.get_content()).replace("\r\n", "\n"),
    )


@pytest.mark.parametrize("hostile", HOSTILE, ids=IDS)
def test_email_shows_a_hostile_key_and_value_escaped(hostile: Hostile) -> None:
    notice = _notice(hostile.text)
    rejects = notice.rejects_key or ""
    composed = compose(
        [notice],
        Store({rejects: b"line,Order_Id\n2,x\n"}),
        sender="orders@x.test",
        recipients=["ops@x.test"],
        now=NOW,
        schema=default_schema(),
    )
    message, text, page = _parts(composed.data)
    subject = str(message["Subject"])
    shown = visible(hostile.text)
    # Subject: one line, the key escaped (cut at 80 characters).
    assert acting_in(subject) == []
    base = posixpath.basename(f"incoming/{hostile.text}.csv")
    assert visible_line(base, 80)[:40] in subject
    # Text part: the key whole, the value cut in the table; nothing acts but the layout's
    # own line ends.
    assert acting_in(text, allowed="\n") == []
    assert f"incoming/{shown}.csv" in text
    assert visible_line(hostile.text, 28)[:20] in text
    # HTML: escaped markup, no raw control or bidi character anywhere.
    assert acting_in(page, allowed="\n") == []
    assert html.escape(f"incoming/{shown}.csv") in page
    assert html.escape(visible_line(hostile.text, 80)) in page
    assert "<script>" not in page
    assert "<img" not in page
    # The attachment keeps a usable name.
    (attachment,) = list(message.iter_attachments())
    filename = attachment.get_filename() or ""
    assert filename.endswith("-rejects.csv")
    assert acting_in(filename) == []


def test_html_entities_are_shown_as_typed_not_rendered() -> None:
    _, _, page = _parts(_compose_one(_notice("&lt;b&gt;bold&lt;/b&gt;")))
    assert "&amp;lt;b&amp;gt;bold" in page


def test_an_error_with_hostile_text_is_escaped_in_both_parts() -> None:
    error = "this does not look like an order file: found <script>x</script>\n\u202eevil"
    notice = _notice("ok")
    notice = FileNotice(**{**notice.__dict__, "status": "REJECTED", "error": error,
                           "rejects_key": None, "sample": []})  # fmt: skip
    _, text, page = _parts(_compose_one(notice))
    assert "found <script>x</script>\\n\\u202eevil" in text
    assert "found &lt;script&gt;x&lt;/script&gt;\\n\\u202eevil" in page
    assert acting_in(text, allowed="\n") == []
    assert acting_in(page, allowed="\n") == []


def _compose_one(notice: FileNotice) -> bytes:
    store = Store({notice.rejects_key: b"line\n"} if notice.rejects_key else {})
    return compose([notice], store, sender="orders@x.test", recipients=["ops@x.test"], now=NOW).data


@pytest.mark.parametrize("key", ["orders\n.csv", "a\r\nBcc: victim@example.com.csv"])
def test_a_key_with_a_newline_is_emailed_not_dead_lettered(key: str) -> None:
    w = world("placeholder.csv")
    notice = FileNotice(**{**w.notices[0].__dict__, "key": f"incoming/{key}"})
    w.ledger.items = FakeLedger(notice.file_id).items
    w.store.objects[notice.rejects_key or ""] = b"line\n5,x\n"
    report = w.notifier.handle([msg(notice, "m1")])
    assert report.failed == {}
    assert report.emails_sent == 1
    (data,) = w.mailer.sent
    message = message_from_bytes(data, policy=policy.default)
    assert message["Bcc"] is None
    assert visible(key)[:30] in str(message["Subject"])
    assert w.ledger.items[notice.file_id].notified_at is not None


def _render(renderable: object) -> str:
    out = io.StringIO()
    Console(file=out, width=400, color_system=None, force_terminal=False).print(renderable)
    return out.getvalue()


@pytest.mark.parametrize("hostile", HOSTILE, ids=IDS)
def test_status_table_shows_a_hostile_key_and_error_as_text(hostile: Hostile) -> None:
    entry = LedgerEntry(
        "id", BUCKET, f"incoming/{hostile.text[:200]}", "v1", "e", Status.REJECTED,
        error=f"bad: {hostile.text[:200]}", received_at="2026-11-25T09:00:00.000Z",
    )  # fmt: skip
    rendered = _render(ledger_table([entry]))
    assert acting_in(rendered, allowed="\n") == []
    flat = "".join(line.strip(" │┃|") for line in rendered.splitlines())
    assert visible(hostile.text[:200])[:24] in flat.replace(" ", "") or visible(hostile.text[:200])[
        :24
    ].replace(" ", "") in flat.replace(" ", "")


@pytest.mark.parametrize("hostile", HOSTILE, ids=IDS)
def test_validate_table_shows_hostile_values_as_text(hostile: Hostile, tmp_path: Path) -> None:
    value = hostile.text[:300].replace('"', '""')
    source = tmp_path / "orders.csv"
    source.write_text(
        "Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
        f'"{value}",C1,19/04/23,Pending,1\n'
        f'"{value}",C1,19/04/23,Pending,1\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["validate", str(source)], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert acting_in(result.output, allowed="\n") == []
    if "\x00" in hostile.text:  # a NUL byte makes the whole file binary: refused, not shown
        assert "looks binary" in result.output
        return
    first = visible(hostile.text.strip())[:3]
    assert first in result.output


@pytest.mark.parametrize(
    "hostile", [h for h in HOSTILE if "\x00" not in h.text], ids=lambda h: h.name
)
def test_the_fetch_command_names_the_exact_key_on_one_visible_line(hostile: Hostile) -> None:
    key = f"incoming/{hostile.text}.csv"
    command = fetch_command(key)
    assert acting_in(command) == []
    word = command.removeprefix("orderpipe rejects ")
    echoed = subprocess.run(
        ["bash", "-c", f"printf %s {word}"], capture_output=True, check=True
    ).stdout
    assert echoed.decode("utf-8") == key


@pytest.mark.parametrize("hostile", HOSTILE, ids=IDS)
def test_piped_table_lines_keep_one_row_per_line_and_one_tab_per_gap(
    hostile: Hostile, capsys: pytest.CaptureFixture[str]
) -> None:
    columns = [Column("Key"), Column("Error")]
    piped = Console(file=io.StringIO(), force_terminal=False)
    emit_table("t", columns, [[hostile.text, "x"], [cell(hostile.text), "y"]], console=piped)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert all(line.count("\t") == 1 for line in lines)
    assert acting_in("".join(lines), allowed="\t") == []
    assert lines[0] == lines[1].replace("\ty", "\tx") == f"{visible(hostile.text)}\tx"
