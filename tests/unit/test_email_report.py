"""The batch email, parsed back with the ``email`` package as a mail client would read it."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.pipeline.email_report import (
    LINK_EXPIRY_S,
    Link,
    compose,
    describe_reasons,
    subject_for,
)
from core.pipeline.notice import FileNotice, SampleRow
from core.validation.schema import default_schema

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
BUCKET = "orderpipe-test-orders"


class MemoryStore:
    """Rejects CSVs in a dict; records what was read and presigned."""

    def __init__(
        self, objects: dict[str, bytes] | None = None, link_expires: datetime | None = None
    ) -> None:
        self.objects = dict(objects or {})
        self.read_keys: list[str] = []
        self.presigned: list[tuple[str, int]] = []
        self.link_expires = link_expires

    def size(self, bucket: str, key: str) -> int | None:
        assert bucket == BUCKET
        body = self.objects.get(key)
        return None if body is None else len(body)

    def read(self, bucket: str, key: str) -> bytes:
        self.read_keys.append(key)
        return self.objects[key]

    def presign(self, bucket: str, key: str, expires_s: int) -> Link:
        self.presigned.append((key, expires_s))
        url = f"https://{bucket}.s3.amazonaws.com/{key}?X-Amz-Expires={expires_s}&X-Amz-Sig=ab"
        return Link(url, self.link_expires)


def rejects_csv(rows: list[tuple[int, str, str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["line", "Order_Id", "Order_Total", "reasons"])
    writer.writerows(rows)
    return out.getvalue().encode()


def notice(
    key: str = "incoming/orders-jan.csv",
    *,
    status: str = "PARTIAL",
    rows: int = 100,
    invalid: int = 2,
    reasons: dict[str, int] | None = None,
    sample: list[SampleRow] | None = None,
    rejects: bool = True,
    error: str | None = None,
) -> FileNotice:
    return FileNotice(
        file_id=f"{BUCKET}/{key}#etag:abc",
        bucket=BUCKET,
        key=key,
        version="etag:abc",
        status=status,
        rows=rows,
        valid=rows - invalid,
        invalid=invalid,
        reasons=reasons if reasons is not None else {"total_not_number": 1, "date_invalid": 1},
        error=error,
        rejects_key=f"rejects/{key}.csv" if rejects else None,
        sample=sample
        if sample is not None
        else [
            SampleRow(7, {"Order_Id": "A-7", "Order_Total": "12,50"}, ["total_not_number"]),
            SampleRow(42, {"Order_Id": "A-42", "Order_Total": None}, ["date_invalid"]),
        ],
        finished_at="2026-11-25T09:29:59.120Z",
    )


def parse(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def bodies(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()


def attachments(message: EmailMessage) -> dict[str, str]:
    return {a.get_filename() or "": a.get_content() for a in message.iter_attachments()}


def test_one_file_email_has_subject_bodies_and_the_rejects_attached() -> None:
    n = notice()
    store = MemoryStore(
        {
            "rejects/incoming/orders-jan.csv.csv": rejects_csv(
                [(7, "A-7", "12,50", "total_not_number"), (42, "A-42", "", "date_invalid")]
            )
        }
    )
    composed = compose([n], store, sender="orders@x.test", recipients=["ops@x.test"], now=NOW)
    message = parse(composed.data)

    assert (
        message["Subject"] == "orderpipe: orders-jan.csv partly accepted - 2 of 100 rows rejected"
    )
    assert message["From"] == "orders@x.test"
    assert message["To"] == "ops@x.test"
    assert message.get_content_type() == "multipart/mixed"
    text, html = bodies(message)
    for body in (text, html):
        assert "98 of 100 rows stored; 2 rejected." in body
        assert "total_not_number" in body
        assert "date_invalid" in body
        assert "A-42" in body
    assert "  7     A-7" in text  # line numbers lead each sample row
    assert ">7</td>" in html
    assert ">42</td>" in html

    files = attachments(message)
    assert list(files) == ["orders-jan-rejects.csv"]
    rows = list(csv.DictReader(io.StringIO(files["orders-jan-rejects.csv"])))
    assert [(r["line"], r["Order_Id"], r["reasons"]) for r in rows] == [
        ("7", "A-7", "total_not_number"),
        ("42", "A-42", "date_invalid"),
    ]
    assert composed.attached == ["rejects/incoming/orders-jan.csv.csv"]
    assert composed.linked == []
    assert store.presigned == []


def test_batch_subject_counts_files_rows_and_whole_rejections() -> None:
    notices = [
        notice("incoming/a.csv", invalid=3),
        notice("incoming/b.csv", invalid=1_200, rows=5_000),
        notice(
            "incoming/c.xlsx",
            status="REJECTED",
            rows=0,
            invalid=0,
            reasons={},
            sample=[],
            rejects=False,
            error="the file has no Order_Id column",
        ),
    ]
    assert subject_for(notices) == (
        "orderpipe: 3 files need attention - 1 rejected, 2 partly accepted, 1,203 rows rejected"
    )
    assert subject_for(notices[2:]) == "orderpipe: c.xlsx rejected - nothing stored"


def test_every_file_has_its_own_section_and_a_rejected_file_says_why() -> None:
    notices = [
        notice("incoming/a.csv"),
        notice(
            "incoming/c.xlsx",
            status="REJECTED",
            rows=0,
            invalid=0,
            reasons={},
            sample=[],
            rejects=False,
            error="the file has no Order_Id column",
        ),
    ]
    store = MemoryStore({"rejects/incoming/a.csv.csv": rejects_csv([(7, "A", "x", "r")])})
    message = parse(compose(notices, store, sender="s@x.test", recipients=["r@x.test"]).data)
    text, html = bodies(message)
    for body in (text, html):
        assert "incoming/a.csv" in body
        assert "incoming/c.xlsx" in body
        assert "no orders were stored: the file has no Order_Id column" in body
        assert "Rejected" in body
        assert "Partly accepted" in body
    assert list(attachments(message)) == ["a-rejects.csv"]


def test_values_and_keys_are_escaped_in_html_and_kept_verbatim_in_text() -> None:
    hostile = "<script>alert('x')</script>"
    n = notice(
        "incoming/<b>bold</b>.csv",
        sample=[SampleRow(3, {"Order_Id": hostile, "Order_Total": "1 & 2"}, ["bad<code>"])],
        invalid=1,
        reasons={"bad<code>": 1},
        rejects=False,
    )
    message = parse(compose([n], MemoryStore(), sender="s@x.test", recipients=["r@x.test"]).data)
    text, html = bodies(message)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "1 &amp; 2" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "bad&lt;code&gt;" in html
    assert "<b>bold</b>" not in html
    assert hostile in text  # plain text is not HTML: the value is shown as it was


def test_long_values_are_cut_in_the_body_but_not_in_the_attachment() -> None:
    long_value = "X" * 500
    n = notice(sample=[SampleRow(9, {"Order_Id": long_value}, ["id_too_long"])], invalid=1)
    key = "rejects/incoming/orders-jan.csv.csv"
    store = MemoryStore({key: rejects_csv([(9, long_value, "", "id_too_long")])})
    message = parse(compose([n], store, sender="s@x.test", recipients=["r@x.test"]).data)
    text, html = bodies(message)
    assert long_value not in html
    assert long_value not in text
    assert "X" * 79 + "…" in html
    assert long_value in attachments(message)["orders-jan-rejects.csv"]


def test_same_file_name_in_two_folders_gets_two_attachment_names() -> None:
    notices = [notice("incoming/eu/orders.csv"), notice("incoming/us/orders.csv")]
    store = MemoryStore(
        {
            "rejects/incoming/eu/orders.csv.csv": rejects_csv([(1, "EU", "", "r")]),
            "rejects/incoming/us/orders.csv.csv": rejects_csv([(1, "US", "", "r")]),
        }
    )
    files = attachments(parse(compose(notices, store, sender="s@x.test", recipients=["r"]).data))
    assert sorted(files) == ["orders-2-rejects.csv", "orders-rejects.csv"]
    assert "EU" in files["orders-rejects.csv"]
    assert "US" in files["orders-2-rejects.csv"]


def test_non_ascii_names_and_values_survive_the_round_trip() -> None:
    n = notice(
        "incoming/commandes-été.csv",
        sample=[SampleRow(4, {"Order_Id": "Zoë-№5"}, ["id_invalid"])],
        invalid=1,
    )
    store = MemoryStore(
        {"rejects/incoming/commandes-été.csv.csv": "line,Order_Id\n4,Zoë-№5\n".encode()}
    )
    message = parse(compose([n], store, sender="s@x.test", recipients=["r@x.test"]).data)
    text, html = bodies(message)
    assert "Zoë-№5" in text
    assert "Zoë-№5" in html
    assert "commandes-été" in str(message["Subject"])
    assert attachments(message) == {"commandes-été-rejects.csv": "line,Order_Id\n4,Zoë-№5\n"}


def test_missing_rejects_object_is_said_not_attached() -> None:
    message = parse(
        compose([notice()], MemoryStore(), sender="s@x.test", recipients=["r@x.test"]).data
    )
    text, _ = bodies(message)
    assert "rejects/incoming/orders-jan.csv.csv is no longer in the bucket" in text
    assert attachments(message) == {}


def test_past_the_size_cap_the_largest_rejects_become_presigned_links() -> None:
    big = rejects_csv([(i, f"ORD-{i}", "x", "total_not_number") for i in range(2, 40_000)])
    small = rejects_csv([(3, "S-3", "x", "date_invalid")])
    notices = [notice("incoming/big.csv"), notice("incoming/small.csv")]
    store = MemoryStore(
        {"rejects/incoming/big.csv.csv": big, "rejects/incoming/small.csv.csv": small}
    )
    cap = 200_000
    assert len(big) > cap  # the big CSV alone cannot be attached

    composed = compose(notices, store, sender="s@x.test", recipients=["r@x.test"], max_bytes=cap)
    message = parse(composed.data)

    assert len(composed.data) <= cap
    assert composed.linked == ["rejects/incoming/big.csv.csv"]
    assert composed.attached == ["rejects/incoming/small.csv.csv"]
    assert store.presigned == [("rejects/incoming/big.csv.csv", LINK_EXPIRY_S)]
    assert store.read_keys == ["rejects/incoming/small.csv.csv"]  # the big one never downloaded
    assert list(attachments(message)) == ["small-rejects.csv"]
    text, html = bodies(message)
    url = "https://orderpipe-test-orders.s3.amazonaws.com/rejects/incoming/big.csv.csv"
    assert f"{url}?X-Amz-Expires=604800&X-Amz-Sig=ab" in text
    assert f"href='{url}?X-Amz-Expires=604800&amp;X-Amz-Sig=ab'" in html
    assert "too large to attach" in text


def test_without_the_cap_the_same_batch_attaches_both() -> None:
    big = rejects_csv([(i, f"ORD-{i}", "x", "total_not_number") for i in range(2, 40_000)])
    store = MemoryStore(
        {"rejects/incoming/big.csv.csv": big, "rejects/incoming/small.csv.csv": b"line\n3\n"}
    )
    notices = [notice("incoming/big.csv"), notice("incoming/small.csv")]
    composed = compose(notices, store, sender="s@x.test", recipients=["r@x.test"])
    assert composed.linked == []
    files = attachments(parse(composed.data))
    assert files["big-rejects.csv"] == big.decode()


def test_an_email_needs_a_notice() -> None:
    with pytest.raises(ValueError, match="at least one notice"):
        compose([], MemoryStore(), sender="s@x.test", recipients=["r@x.test"])


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 60_000), min_size=1, max_size=6), cap=st.integers(40_000, 200_000)
)
def test_size_cap_holds_and_links_go_to_the_largest_files(sizes: list[int], cap: int) -> None:
    notices = [notice(f"incoming/f{i}.csv") for i in range(len(sizes))]
    store = MemoryStore(
        {f"rejects/incoming/f{i}.csv.csv": b"x" * size for i, size in enumerate(sizes)}
    )
    composed = compose(notices, store, sender="s@x.test", recipients=["r@x.test"], max_bytes=cap)
    assert len(composed.data) <= cap
    assert sorted(composed.attached + composed.linked) == sorted(store.objects)
    size_of = {k: len(v) for k, v in store.objects.items()}
    if composed.linked and composed.attached:
        assert min(size_of[k] for k in composed.linked) >= max(
            size_of[k] for k in composed.attached
        )
    message = parse(composed.data)
    assert len(attachments(message)) == len(composed.attached)


def test_every_reason_code_of_the_schema_has_a_sentence() -> None:
    schema = default_schema()
    texts = describe_reasons(schema)
    assert set(texts) == set(schema.reason_codes())
    assert all(texts.values())
    assert texts["Customer_Id.required"] == "Customer_Id is empty"
    assert "Pending, Completed, Inprogress" in texts["Order_Status.allowed"]
    assert "d/m/yy" in texts["Order_Date.format"]


def test_reason_sentences_appear_next_to_their_codes() -> None:
    n = notice(reasons={"Customer_Id.required": 2}, rejects=False)
    message = parse(
        compose(
            [n],
            MemoryStore(),
            sender="s@x.test",
            recipients=["r@x.test"],
            schema=default_schema(),
        ).data
    )
    text, html = bodies(message)
    assert "        2  Customer_Id.required  - Customer_Id is empty" in text
    assert "<code>Customer_Id.required</code></td><td" in html
    assert ">Customer_Id is empty</td>" in html


def test_sample_columns_follow_the_schema_order_not_the_notice_order() -> None:
    row = SampleRow(
        5,
        {"Customer_Id": "C1", "Order_Id": "O1", "Order_Total": "x", "Extra": "e"},
        ["Order_Total.format"],
    )
    n = notice(sample=[row], invalid=1, rejects=False)
    message = parse(
        compose(
            [n], MemoryStore(), sender="s@x.test", recipients=["r"], schema=default_schema()
        ).data
    )
    text, html = bodies(message)
    header = next(line for line in text.splitlines() if line.strip().startswith("Line"))
    assert header.split() == ["Line", "Order_Id", "Customer_Id", "Order_Total", "Extra", "Reasons"]
    assert (
        html.index(">Order_Id</th>") < html.index(">Customer_Id</th>") < html.index(">Extra</th>")
    )


def test_the_cells_a_row_was_rejected_for_are_tinted() -> None:
    row = SampleRow(5, {"Order_Id": "O1", "Order_Total": "abc"}, ["Order_Total.format"])
    n = notice(sample=[row], invalid=1, rejects=False)
    _, html = bodies(parse(compose([n], MemoryStore(), sender="s@x.test", recipients=["r"]).data))
    assert "<td bgcolor='#fee2e2'>abc</td>" in html
    assert "<td bgcolor='#fee2e2'>O1</td>" not in html
    assert "<td>O1</td>" in html


def test_an_outcome_badge_never_breaks_over_two_lines() -> None:
    n = notice(invalid=1, rejects=False)
    _, html = bodies(parse(compose([n], MemoryStore(), sender="s@x.test", recipients=["r"]).data))
    badges = re.findall(r"<span style='([^']*)'>Partly accepted</span>", html)
    assert len(badges) == 2  # the summary row and the file's heading
    assert all("white-space:nowrap" in style for style in badges)


def test_the_fetch_later_command_names_the_stack_the_email_came_from() -> None:
    csv_bytes = rejects_csv([(7, "A-7", "x", "total_not_number")])
    store = MemoryStore({"rejects/incoming/orders-jan.csv.csv": csv_bytes})
    command = "orderpipe rejects incoming/orders-jan.csv"
    for stack, expected in (("prod-orders", f"{command} --stack prod-orders"), ("", command)):
        data = compose([notice()], store, sender="s@x.test", recipients=["r"], stack_name=stack)
        text, html = bodies(parse(data.data))
        assert f"  {expected}\r\n" in text
        assert f"<code>{expected}</code>" in html
        assert "<stack>" not in text + html


def test_files_are_listed_worst_first() -> None:
    notices = [
        notice("incoming/few.csv", invalid=1),
        notice("incoming/many.csv", invalid=50),
        notice(
            "incoming/broken.xlsx",
            status="REJECTED",
            rows=0,
            invalid=0,
            reasons={},
            sample=[],
            rejects=False,
            error="not a readable order file",
        ),
    ]
    text, html = bodies(parse(compose(notices, MemoryStore(), sender="s", recipients=["r"]).data))
    for body in (text, html):
        assert body.index("broken.xlsx") < body.index("many.csv") < body.index("few.csv")
    assert "Rejected rows: none" not in text  # a file rejected whole has no rejects line


def test_an_impossible_date_is_described_as_not_a_real_date() -> None:
    text = describe_reasons(default_schema())["Order_Date.format"]
    assert text == (
        "Order_Date is not a real calendar date written as d/m/yy or d/m/yyyy or yyyy-mm-dd"
    )


def test_a_repeat_shows_where_its_value_first_appears_with_the_rule_explained() -> None:
    reason = "Order_Id.unique (first on line 2)"
    row = SampleRow(10, {"Order_Id": "R1"}, [reason])
    n = notice(reasons={"Order_Id.unique": 1}, sample=[row], rejects=False)
    composed = compose(
        [n], MemoryStore(), sender="s@x.test", recipients=["r@x.test"], schema=default_schema()
    )
    text, page = bodies(parse(composed.data))
    assert reason in text
    assert "repeats a value from an earlier line" in text
    sentence = describe_reasons(default_schema())["Order_Id.unique"]
    assert f"<code title='{sentence}'>{reason}</code>" in page


def test_a_long_subject_folds_at_a_space_never_leaving_the_first_line_empty() -> None:
    notices = [notice(f"incoming/file-{n}.csv", invalid=n + 1) for n in range(3)]
    notices.append(
        notice("incoming/x.csv", status="REJECTED", rows=0, invalid=0, reasons={}, sample=[],
               rejects=False, error="the file is empty")
    )  # fmt: skip
    composed = compose(notices, MemoryStore({}), sender="s@x.test", recipients=["r@x.test"])
    raw = composed.data.split(b"\r\n\r\n", 1)[0].decode()
    folded = raw[raw.index("Subject:") :].split("\r\nFrom:", 1)[0]
    first = folded.split("\r\n")[0]
    assert first.startswith("Subject: orderpipe: 4 files need attention")
    assert all(len(line) <= 78 for line in folded.split("\r\n"))
    assert parse(composed.data)["Subject"] == subject_for(notices)


def test_the_footer_says_when_there_is_no_version_and_spaces_around_values_show() -> None:
    padded = notice(sample=[SampleRow(3, {"Order_Id": " A-3 ", "Order_Total": "1"}, ["r"])])
    message = compose([padded], MemoryStore({}), sender="s@x.test", recipients=["r@x.test"])
    text, html = bodies(parse(message.data))
    for body in (text, html):
        assert "ETag abc, no S3 version id" in body  # the notice's version is "etag:abc"
        assert "version etag:" not in body
    assert '" A-3 "' in text
    assert "&#9251;</span>A-3<span class='sp'" in html


def test_a_file_rejected_whole_is_not_summarised_as_zero_rows_and_times_read_plainly() -> None:
    whole = notice("incoming/c.xlsx", status="REJECTED", rows=0, invalid=0, reasons={},
                   sample=[], rejects=False, error="the file is empty")  # fmt: skip
    message = compose([whole], MemoryStore({}), sender="s@x.test", recipients=["r@x.test"])
    text, html = bodies(parse(message.data))
    assert "<td class='n' align='right'>the file</td><td>see why below</td>" in html
    assert "Finished: 2026-11-25 09:29:59 UTC" in text
    assert "finished 2026-11-25 09:29:59 UTC" in html


def test_a_file_whose_every_row_failed_is_rejected_yet_lists_its_rows_and_attaches_them() -> None:
    none_valid = notice("incoming/all-bad.csv", status="REJECTED", rows=2, invalid=2)
    store = MemoryStore(
        {
            "rejects/incoming/all-bad.csv.csv": rejects_csv(
                [(7, "A-7", "12,50", "total_not_number"), (42, "A-42", "", "date_invalid")]
            )
        }
    )
    composed = compose([none_valid], store, sender="s@x.test", recipients=["r@x.test"], now=NOW)
    message = parse(composed.data)
    assert message["Subject"] == (
        "orderpipe: all-bad.csv rejected - nothing stored, 2 of 2 rows rejected"
    )
    text, html = bodies(message)
    for body in (text, html):
        assert "No row was valid, so no orders were stored: 2 of 2 rows rejected." in body
        assert "whole file" not in body  # refused for its rows, not as a file
        assert "total_not_number" in body
        assert "A-42" in body
    assert "all-bad.csv  [Rejected]" in text
    assert "  7     A-7" in text  # its rows, by line
    assert ">42</td>" in html
    assert "the file</td>" not in html  # the summary counts its rows
    assert "<td class='n' align='right'>2</td><td class='n' align='right'>0</td>" in html
    assert list(attachments(message)) == ["all-bad-rejects.csv"]
    assert composed.attached == ["rejects/incoming/all-bad.csv.csv"]
