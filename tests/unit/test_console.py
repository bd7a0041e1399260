"""The console's views on in-memory fakes: pages, filters, actions, and the guard around them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from markupsafe import escape
from starlette.testclient import TestClient

from core.console.app import build_app
from core.console.files import page_number
from core.console.security import NotLoopback, Secrets, check_bind_host
from core.ops.alerts import Alert
from core.ops.event_messages import ObjectVersion, s3_event_body
from core.pipeline.ingest import rejects_key_for
from core.pipeline.ledger import LedgerEntry, Status
from core.validation.visible import visible
from tests.hostile_strings import HOSTILE, Hostile, acting_in
from tests.unit.console_fakes import B, Fakes, make_fakes
from tests.unit.test_dlq import DLQ

ORIGIN = "http://127.0.0.1:8123"
KEYS = Secrets(token="tok-" + "a" * 40, csrf="csrf-" + "b" * 40)


def client_for(fakes: Fakes, *, read_only: bool = False, login: bool = True) -> TestClient:
    app = build_app(
        fakes.backend, keys=KEYS, read_only=read_only, hosts=frozenset({"127.0.0.1:8123"})
    )
    client = TestClient(app, base_url=ORIGIN, raise_server_exceptions=False)
    if login:
        first = client.get(f"/files?token={KEYS.token}", follow_redirects=False)
        assert first.status_code == 303
        assert first.headers["location"] == "/files"  # the token leaves the address bar
    return client


def post(client: TestClient, url: str, data: dict[str, object], **kw: object):  # type: ignore[no-untyped-def]
    return client.post(url, data={"csrf": KEYS.csrf, **data}, headers={"origin": ORIGIN}, **kw)  # type: ignore[arg-type]


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return make_fakes(outbox=tmp_path / "outbox")


# ---- the guard -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/files", "/files/rows", "/dlq", "/health", "/static/console.js"])
def test_requests_without_the_token_are_refused(fakes: Fakes, path: str) -> None:
    client = client_for(fakes, login=False)
    answer = client.get(path)
    assert answer.status_code == 403
    assert "token" in answer.text
    assert client.get(f"{path}?token=wrong").status_code == 403


def test_the_token_becomes_a_strict_http_only_cookie(fakes: Fakes) -> None:
    client = client_for(fakes, login=False)
    answer = client.get(f"/health?token={KEYS.token}", follow_redirects=False)
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert answer.headers["location"] == "/health"
    assert client.get("/health").status_code == 200


def test_unknown_host_headers_are_refused(fakes: Fakes) -> None:
    client = client_for(fakes)
    assert client.get("/files", headers={"host": "evil.example:8123"}).status_code == 421


def test_cross_site_and_csrf_less_posts_are_refused(fakes: Fakes) -> None:
    fakes.bucket.objects["incoming/a.csv"] = b"x"
    fakes.sqs["ingest"].put(DLQ, _event("incoming/a.csv"))
    client = client_for(fakes)
    form = {"queue": "ingest", "all": "1"}
    cross = client.post(
        "/dlq/redrive", data={"csrf": KEYS.csrf, **form}, headers={"origin": "http://evil.example"}
    )
    no_origin = client.post("/dlq/redrive", data={"csrf": KEYS.csrf, **form})
    bad_referer = client.post(
        "/dlq/redrive",
        data={"csrf": KEYS.csrf, **form},
        headers={"referer": "http://evil.example/x"},
    )
    no_csrf = client.post("/dlq/redrive", data=form, headers={"origin": ORIGIN})
    wrong_csrf = client.post(
        "/dlq/redrive", data={**form, "csrf": "nope"}, headers={"origin": ORIGIN}
    )
    for answer in (cross, no_origin, bad_referer, no_csrf, wrong_csrf):
        assert answer.status_code == 403, answer.text
    assert len(fakes.sqs["ingest"].queues[DLQ]) == 1  # nothing moved
    ok = post(client, "/dlq/redrive", form)
    assert ok.status_code == 200
    assert fakes.sqs["ingest"].queues[DLQ] == []


def test_pages_carry_a_content_security_policy(fakes: Fakes) -> None:
    answer = client_for(fakes).get("/files")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    assert "<script>" not in answer.text  # no inline script: the policy forbids it


def test_only_loopback_binds_unless_asked() -> None:
    assert check_bind_host("127.0.0.1", allow_remote=False) == "127.0.0.1"
    assert check_bind_host("::1", allow_remote=False) == "::1"
    assert check_bind_host("localhost", allow_remote=False) == "localhost"
    for host in ("0.0.0.0", "192.168.1.4", "example.com"):
        with pytest.raises(NotLoopback):
            check_bind_host(host, allow_remote=False)
    assert check_bind_host("0.0.0.0", allow_remote=True) == "0.0.0.0"


# ---- Files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "page"), [("3", 3), ("0", 0), ("", 0), ("-2", 0), ("x", 0), ("1.5", 0)]
)
def test_a_page_number_is_a_whole_number_from_zero_or_zero(raw: str, page: int) -> None:
    assert page_number({"rpage": raw}, "rpage") == page
    assert page_number({}) == 0


def _keys_in(html: str) -> list[str]:
    return re.findall(r'<td class="key"><a href="/file\?id=[^"]+">([^<]+)</a>', html)


def test_files_newest_first_with_filters_and_pages(fakes: Fakes) -> None:
    for n in range(60):
        fakes.ledger.add(f"incoming/f{n:02}.csv", Status.SUCCEEDED, n, rows=5, valid=5)
    fakes.ledger.add("incoming/bad.csv", Status.REJECTED, 30, rows=2, invalid=2,
                     reasons={"missing_required": 2})  # fmt: skip
    client = client_for(fakes)

    first = _keys_in(client.get("/files").text)
    second = _keys_in(client.get(_older(client.get("/files").text)).text)
    rejected = _keys_in(client.get("/files?status=rejected").text)
    by_key = _keys_in(client.get("/files?key=f07.csv").text)

    assert len(first) == 50
    assert first[0] == "incoming/f59.csv"
    assert second[-1] == "incoming/f00.csv"
    assert len(first) + len(second) == 61
    assert "older →" in client.get("/files").text
    assert rejected == ["incoming/bad.csv"]
    assert by_key == ["incoming/f07.csv"]
    filtered = client.get("/files?status=REJECTED").text
    assert "missing_required ×2" in filtered
    assert '<option value="REJECTED" selected>rejected</option>' in filtered  # word, not code


def _older(html: str) -> str:
    link = re.search(r'<a href="(/files\?[^"]+)">older →</a>', html)
    assert link is not None, "no older page"
    return link.group(1).replace("&amp;", "&")


def test_deep_pages_read_only_what_they_show_and_lose_no_tie(fakes: Fakes) -> None:
    same = "2026-12-04T09:30:00.000Z"  # 30 files updated in one millisecond, across a page end
    for n in range(130):
        fakes.ledger.add(f"incoming/g{n:03}.csv", Status.SUCCEEDED, n,
                         **({"updated_at": same} if 40 <= n < 70 else {}))  # fmt: skip
    client = client_for(fakes)
    seen: list[str] = []
    url = "/files?status=SUCCEEDED"
    while True:
        fakes.ledger.calls.clear()
        html = client.get(url).text
        seen += _keys_in(html)
        assert all(c.endswith(f" {50 + 1 + 10} " + c.split()[-1]) for c in fakes.ledger.calls)
        if "older →" not in html:
            break
        url = _older(html)
    assert len(seen) == 130
    assert len(set(seen)) == 130  # every file once, ties included


def test_files_since_filter_uses_update_time(fakes: Fakes) -> None:
    fakes.ledger.add("incoming/old.csv", Status.SUCCEEDED, 0, updated_at="2020-01-01T00:00:00.000Z")
    fakes.ledger.add("incoming/new.csv", Status.SUCCEEDED, 1, updated_at="2099-01-01T00:00:00.000Z")
    client = client_for(fakes)
    assert _keys_in(client.get("/files?since=2h").text) == ["incoming/new.csv"]
    bad = client.get("/files?since=soon")
    assert bad.status_code == 200
    assert "not a duration" in bad.text


def test_the_rows_fragment_polls_with_the_same_filters(fakes: Fakes) -> None:
    fakes.ledger.add("incoming/a.csv", Status.FAILED, 1)
    client = client_for(fakes)
    page = client.get("/files?status=FAILED").text
    assert 'hx-get="/files/rows?status=FAILED"' in page
    fragment = client.get("/files/rows?status=FAILED").text
    assert "<html" not in fragment
    assert _keys_in(fragment) == ["incoming/a.csv"]


def test_processing_files_show_progress_when_the_ledger_has_it(fakes: Fakes) -> None:
    fakes.ledger.add("incoming/plain.csv", Status.PROCESSING, 1)  # no rows judged yet
    fakes.ledger.add(
        "incoming/big.csv", Status.PROCESSING, 2, rows_judged=40_000, rows_written=25_000
    )
    html = client_for(fakes).get("/files").text
    assert '<progress max="40000" value="25000">' in html
    assert "40,000 judged, 25,000 written" in html
    assert "<progress></progress> <small>working</small>" in html  # no counts: no guess


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.name for h in HOSTILE])
def test_hostile_keys_and_values_show_as_text(fakes: Fakes, hostile: Hostile) -> None:
    text = hostile.text
    key = f"incoming/{text}.csv"
    entry = fakes.ledger.add(
        key, Status.REJECTED, 1, rows=1, invalid=1, reasons={text: 1}, error=text
    )
    quoted = '"' + text.replace('"', '""') + '"'
    fakes.bucket.objects[rejects_key_for(key)] = (
        f"line,order_id,reasons\n2,{quoted},{quoted}\n".encode()
    )
    client = client_for(fakes)
    pages = [client.get("/files").text, client.get("/file", params={"id": entry.file_id}).text]
    for page in pages:
        assert acting_in(page, allowed="\n") == []
        assert str(escape(visible(hostile.shown))) in page
        assert "<script>" not in page
        assert "<img" not in page
    assert "49" not in pages[1].split("<main>")[1] or "49" in text  # template text never runs
    download = client.get("/file/rejects.csv", params={"id": entry.file_id})
    assert download.status_code == 200
    assert acting_in(download.headers["content-disposition"]) == []


def test_template_syntax_in_a_key_is_shown_not_run(fakes: Fakes) -> None:
    entry = fakes.ledger.add("incoming/{{7*7}}{% raw %}.csv", Status.SUCCEEDED, 1)
    page = client_for(fakes).get("/file", params={"id": entry.file_id}).text
    assert "{{7*7}}{% raw %}" in page
    assert ">49" not in page


# ---- a file --------------------------------------------------------------------------------

REJECTS = (
    b"line,order_id,amount,reasons\n"
    + b"".join(f"{n + 2},O{n},x{n},bad_amount;missing_date\n".encode() for n in range(120))
    + b'999,"multi\nline",1,dup_key\n'
)


def _partial(fakes: Fakes) -> LedgerEntry:
    entry = fakes.ledger.add(
        "incoming/orders.csv",
        Status.PARTIAL,
        5,
        rows=300,
        valid=179,
        invalid=121,
        reasons={"bad_amount": 120, "missing_date": 120, "dup_key": 1},
        finished_at="2026-12-04T09:00:09.000Z",
        notified_at="2026-12-04T09:00:12.000Z",
    )
    fakes.bucket.objects[rejects_key_for("incoming/orders.csv")] = REJECTS
    return entry


def test_file_page_shows_outcome_reasons_rejects_and_timeline(fakes: Fakes) -> None:
    entry = _partial(fakes)
    client = client_for(fakes)
    page = client.get("/file", params={"id": entry.file_id}).text
    # The badge says the word every command and the email use; the code stays in its title.
    assert '<span class="status s-partial" title="PARTIAL">partly accepted</span>' in page
    assert "179" in page
    assert "121" in page
    assert re.search(r"<th>bad_amount</th><td><meter min=\"0\" max=\"120\" value=\"120\">", page)
    rows = re.findall(r'<tr><td class="n">(\d+)</td>', page)
    assert rows[:2] == ["2", "3"]
    assert len(rows) == 50
    assert "rows 1–50 of 121" in page
    assert "finished: partly accepted" in page
    assert "e-mail sent" in page

    last = client.get("/file", params={"id": entry.file_id, "rpage": 2}).text
    assert re.findall(r'<tr><td class="n">(\d+)</td>', last) == [
        str(n + 2) for n in range(100, 120)
    ] + ["999"]
    assert "multi\\nline" in last  # the line end inside a value, made visible
    assert "next →" not in last


def test_rejects_csv_downloads_whole(fakes: Fakes) -> None:
    entry = _partial(fakes)
    answer = client_for(fakes).get("/file/rejects.csv", params={"id": entry.file_id})
    assert answer.status_code == 200
    assert answer.content == REJECTS
    name = rejects_key_for("incoming/orders.csv").rsplit("/", 1)[1]
    assert f'filename="{name}"' in answer.headers["content-disposition"]


def test_missing_rejects_csv_is_a_readable_message(fakes: Fakes) -> None:
    entry = _partial(fakes)
    del fakes.bucket.objects[rejects_key_for("incoming/orders.csv")]
    client = client_for(fakes)
    page = client.get("/file", params={"id": entry.file_id})
    assert page.status_code == 200
    assert "cannot read the rejects CSV: AWS said NoSuchKey" in page.text
    download = client.get("/file/rejects.csv", params={"id": entry.file_id})
    assert download.status_code == 502
    assert "NoSuchKey" in download.text
    assert "Traceback" not in download.text


def test_the_email_as_sent_is_found_in_the_outbox(fakes: Fakes, tmp_path: Path) -> None:
    from email.message import EmailMessage

    entry = _partial(fakes)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    mine = f"s3://{B}/incoming/orders.csv (version v5)"
    other = f"s3://{B}/incoming/other.csv (version v5)"
    for name, subject, source in [
        ("20261204T090010000000Z-a.eml", "someone else's", other),
        ("20261204T090011000000Z-b.eml", "ours", mine),
        ("20261204T120000000000Z-c.eml", "ours, but far too late", mine),
    ]:  # fmt: skip
        msg = EmailMessage()
        msg["Subject"], msg["To"] = subject, "ops@example.com"
        msg.set_content(f"Source: {source}\n")
        msg.add_alternative(f"<p style='color:red'>the <b>html</b> {source}</p>", subtype="html")
        (outbox / name).write_bytes(msg.as_bytes())
    client = client_for(fakes)
    page = client.get("/file", params={"id": entry.file_id}).text
    assert "<strong>ours</strong>" in page
    assert '<iframe class="email" sandbox' in page
    frame = client.get("/file/email", params={"id": entry.file_id})
    assert "<b>html</b>" in frame.text
    assert "sandbox" in frame.headers["content-security-policy"]
    assert "script-src" not in frame.headers["content-security-policy"]


def test_unknown_file_is_a_404_page(fakes: Fakes) -> None:
    answer = client_for(fakes).get("/file", params={"id": "nope"})
    assert answer.status_code == 404
    assert "no such file" in answer.text


# ---- replay --------------------------------------------------------------------------------


def test_replay_previews_first_then_sends_once(fakes: Fakes) -> None:
    entry = _partial(fakes)
    fakes.bucket.objects["incoming/orders.csv"] = b"x"
    fakes.bucket.versions["incoming/orders.csv"] = "e5"
    fakes.ledger.entries[f"{B}/incoming/orders.csv#etag:e5"] = fakes.ledger.entries.pop(
        entry.file_id
    ).__class__(**{**entry.__dict__, "file_id": f"{B}/incoming/orders.csv#etag:e5"})
    client = client_for(fakes)

    preview = client.get("/replay", params={"key": "incoming/orders.csv"})
    assert "would replay" in preview.text
    assert "dry run" in preview.text
    assert fakes.queue.sent == []

    done = post(client, "/replay", {"key": "incoming/orders.csv", "reason": "rule fixed"})
    assert done.status_code == 200
    assert "replayed" in done.text
    assert len(fakes.queue.sent) == 1
    replayed = fakes.ledger.entries[f"{B}/incoming/orders.csv#etag:e5"]
    assert replayed.replays == 1
    assert replayed.replay_log[0].reason == "rule fixed"


# ---- upload --------------------------------------------------------------------------------


def test_upload_puts_files_under_incoming_and_follows_them(fakes: Fakes) -> None:
    client = client_for(fakes)
    answer = client.post(
        "/upload",
        data={"csrf": KEYS.csrf, "prefix": "shop-7"},
        files=[("files", ("a.csv", b"id\n1\n")), ("files", ("../../etc/b.csv", b"id\n2\n"))],
        headers={"origin": ORIGIN},
    )
    assert answer.status_code == 200
    assert sorted(fakes.bucket.objects) == ["incoming/shop-7/a.csv", "incoming/shop-7/b.csv"]
    assert ">partly accepted</span>" in answer.text
    assert "Every upload has its outcome" in answer.text
    assert 'hx-trigger="every 1s"' not in answer.text  # all final: no more polling


def test_upload_while_waiting_polls(fakes: Fakes) -> None:
    fakes.uploader.outcome = None
    client = client_for(fakes)
    answer = client.post(
        "/upload",
        data={"csrf": KEYS.csrf},
        files=[("files", ("a.csv", b"id\n1\n"))],
        headers={"origin": ORIGIN},
    )
    assert ">waiting</span>" in answer.text
    assert 'hx-trigger="every 1s"' in answer.text


# ---- dead letters --------------------------------------------------------------------------


def _event(key: str) -> str:
    return s3_event_body(
        ObjectVersion(B, key, "etag:e", "e", 42, "2026-12-04T09:00:00.000Z"), source="test"
    )


def test_dead_letters_list_marks_what_can_never_succeed(fakes: Fakes) -> None:
    fakes.bucket.objects["incoming/here.csv"] = b"x"
    sqs = fakes.sqs["ingest"]
    sqs.put(DLQ, _event("incoming/here.csv"))
    sqs.put(DLQ, _event("incoming/gone.csv"))
    sqs.put(DLQ, "not json at all")
    page = client_for(fakes).get("/dlq?queue=ingest").text
    assert "3 message(s) in the ingest dead-letter queue" in page
    assert page.count('class="never"') == 2
    assert "cannot succeed: its object is gone from the bucket" in page
    assert "cannot succeed: not an S3 event (nor a replay of one): ingest cannot read it" in page
    assert all(not m.hidden for m in sqs.queues[DLQ])  # listing consumed nothing


def test_dead_letters_are_paged_and_a_page_receives_only_what_it_shows(fakes: Fakes) -> None:
    sqs = fakes.sqs["ingest"]
    for n in range(120):
        sqs.put(DLQ, _event(f"incoming/d{n:03}.csv"))
    client = client_for(fakes)
    first = client.get("/dlq?queue=ingest").text
    assert "120 message(s) in the ingest dead-letter queue" in first
    assert first.count('name="ids"') == 50
    assert "next →" in first
    assert sum(m.receives > 0 for m in sqs.queues[DLQ]) == 51  # not the whole queue
    last = client.get("/dlq?queue=ingest&page=2").text
    assert last.count('name="ids"') == 20
    assert "next →" not in last
    assert all(not m.hidden for m in sqs.queues[DLQ])


def test_redrive_selected_moves_only_those(fakes: Fakes) -> None:
    sqs = fakes.sqs["ingest"]
    keep = sqs.put(DLQ, _event("incoming/keep.csv"))
    move = sqs.put(DLQ, _event("incoming/move.csv"))
    client = client_for(fakes)
    answer = post(client, "/dlq/redrive", {"queue": "ingest", "ids": [move.id]})
    assert "moved 1 message(s) back to the ingest queue" in answer.text
    assert [m.id for m in sqs.queues[DLQ]] == [keep.id]
    assert not keep.hidden
    assert sqs.log == [f"send {move.body}", f"delete {move.body}"]  # send before delete


def test_purge_needs_its_confirmation(fakes: Fakes) -> None:
    sqs = fakes.sqs["notify"]
    sqs.put(DLQ, "x")
    client = client_for(fakes)
    confirm = client.get("/dlq/purge?queue=notify")
    assert "deletes 1 message(s) for good" in confirm.text
    assert len(sqs.queues[DLQ]) == 1
    unconfirmed = post(client, "/dlq/purge", {"queue": "notify", "confirm": "yes"})
    assert unconfirmed.status_code == 400
    assert len(sqs.queues[DLQ]) == 1
    done = post(client, "/dlq/purge", {"queue": "notify", "confirm": "notify"})
    assert "deleted 1 message(s)" in done.text
    assert sqs.queues[DLQ] == []


def test_dead_letter_detail_shows_body_and_history(fakes: Fakes) -> None:
    fakes.ledger.add("incoming/a.csv", Status.FAILED, 1, attempts=5, last_error="Throttled")
    msg = fakes.sqs["ingest"].put(DLQ, _event("incoming/a.csv"))
    page = client_for(fakes).get("/dlq/message", params={"queue": "ingest", "id": msg.id}).text
    assert "incoming/a.csv" in page
    assert "Throttled" in page
    assert "ObjectCreated" in page


def test_read_only_hides_and_refuses_every_action(fakes: Fakes) -> None:
    entry = _partial(fakes)
    fakes.sqs["ingest"].put(DLQ, _event("incoming/a.csv"))
    client = client_for(fakes, read_only=True)
    for url in ("/dlq?queue=ingest", "/upload", "/file?id=" + entry.file_id):
        page = client.get(url).text
        assert 'method="post"' not in page, url
    assert client.get("/dlq/purge?queue=ingest").status_code == 403
    for url, form in [
        ("/dlq/redrive", {"queue": "ingest", "all": "1"}),
        ("/dlq/purge", {"queue": "ingest", "confirm": "ingest"}),
        ("/replay", {"key": "incoming/orders.csv"}),
        ("/upload", {}),
    ]:
        assert post(client, url, form).status_code == 403, url
    assert len(fakes.sqs["ingest"].queues[DLQ]) == 1
    assert fakes.queue.sent == []


# ---- health and failures -------------------------------------------------------------------


def test_health_shows_queues_dead_letters_alerts_and_reconcile(fakes: Fakes) -> None:
    fakes.sqs["ingest"].put(DLQ, _event("incoming/a.csv"))
    fakes.alerts.append(Alert("m1", "2026-12-04T09:00:00.000Z", "glue-job", "Glue job x FAILED"))
    report = {"started_at": "2026-12-04T08:00:00.000Z", "finished_at": "2026-12-04T08:00:01.000Z",
              "objects_checked": 7, "counts": {"missing": 0, "stuck": 0, "drift": 1, "failed": 0},
              "drift": [{"key": "incoming/d.csv", "valid": 5, "stored": 4}]}  # fmt: skip
    fakes.bucket.objects["reports/reconcile/2026/12/04/080000Z-a.json"] = json.dumps(
        report
    ).encode()
    fakes.bucket.objects["reports/reconcile/2026/12/03/080000Z-b.json"] = b"{}"
    page = client_for(fakes).get("/health").text
    assert "ingest queue" in page
    assert "ingest DLQ" in page
    assert "Glue job x FAILED" in page
    assert "7 object(s) checked" in page
    assert "incoming/d.csv: valid 5, stored 4" in page


def test_an_aws_failure_is_a_readable_line_without_secrets(fakes: Fakes) -> None:
    def broken(limit: int = 50, until: str | None = None) -> list[LedgerEntry]:
        raise EndpointConnectionError(
            endpoint_url="http://user:hunter2@127.0.0.1:9/path?X-Amz-Signature=abc"
        )

    fakes.ledger.recent = broken  # type: ignore[method-assign]
    answer = client_for(fakes).get("/files")
    assert answer.status_code == 502
    assert "cannot reach AWS" in answer.text
    assert "http://127.0.0.1:9" in answer.text
    assert "hunter2" not in answer.text
    assert "abc" not in answer.text
    assert "Traceback" not in answer.text


def test_an_access_denied_is_shown_as_aws_said_it(fakes: Fakes) -> None:
    def denied(file_id: str) -> LedgerEntry | None:
        raise ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, "GetItem"
        )

    fakes.ledger.get = denied  # type: ignore[method-assign]
    answer = client_for(fakes).get("/file", params={"id": "x"})
    assert answer.status_code == 502
    assert "AWS said AccessDeniedException: not allowed" in answer.text


def test_a_bug_is_a_plain_500_without_a_traceback(fakes: Fakes) -> None:
    def bug(limit: int = 50, until: str | None = None) -> list[LedgerEntry]:
        raise KeyError("secret-internal-detail")

    fakes.ledger.recent = bug  # type: ignore[method-assign]
    answer = client_for(fakes).get("/files")
    assert answer.status_code == 500
    assert "secret-internal-detail" not in answer.text
    assert "Traceback" not in answer.text


def test_the_command_refuses_a_non_loopback_address_in_one_line() -> None:
    from click.testing import CliRunner

    from core.cli import cli

    answer = CliRunner().invoke(cli, ["console", "--host", "0.0.0.0", "--no-open"])
    assert answer.exit_code == 2
    assert "binds loopback only" in answer.output
    assert "Traceback" not in answer.output


def test_file_page_says_what_its_version_is_and_names_other_versions_in_words(
    fakes: Fakes,
) -> None:
    # Without an S3 version id the ledger keys a file by its ETag; say so, as the email does.
    old = fakes.ledger.add("incoming/o.csv", Status.PARTIAL, 1, version="etag:abc123")
    new = fakes.ledger.add("incoming/o.csv", Status.SUCCEEDED, 2)
    client = client_for(fakes)
    page = client.get("/file", params={"id": old.file_id}).text
    assert "ETag abc123, no S3 version id" in page
    assert "etag:abc123" not in page
    newer = client.get("/file", params={"id": new.file_id}).text
    assert '<dd class="mono">version v2</dd>' in newer
    other = newer.split("Other versions of this key", 1)[1]
    assert '<span class="status s-partial" title="PARTIAL">partly accepted</span>' in other
