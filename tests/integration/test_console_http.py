"""The console over HTTP against a moto stack with a worker: upload → outcome → rows, redrive."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx2
import pytest

from core.ops.event_messages import ObjectVersion, s3_event_body
from core.pipeline.ingest import rejects_key_for
from tests.integration.console_kit import ingest_dlq, running_worker, serve_console, wait_for

pytestmark = pytest.mark.integration


def _login(console: Any) -> httpx2.Client:
    client = httpx2.Client(base_url=console.base, follow_redirects=True, timeout=30)
    assert client.get(console.login_url).status_code == 200
    return client


def test_token_and_cross_site_posts_are_refused_over_http(stack: Any) -> None:
    with serve_console(stack) as console:
        bare = httpx2.get(f"{console.base}/files", timeout=10)
        assert bare.status_code == 403
        client = _login(console)
        assert client.get("/files").status_code == 200
        cross = client.post(
            "/dlq/redrive",
            data={"csrf": console.keys.csrf, "queue": "ingest", "all": "1"},
            headers={"origin": "http://attacker.example"},
        )
        assert cross.status_code == 403
        port = console.base.rsplit(":", 1)[1]
        rebinding = client.get("/files", headers={"host": f"attacker.example:{port}"})
        assert rebinding.status_code == 421


def test_upload_follow_file_rows_and_download(
    stack: Any, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (fixtures_dir / "test_data1.csv").read_bytes()
    with running_worker(stack, monkeypatch), serve_console(stack) as console:
        client = _login(console)
        page = client.get("/upload").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        answer = client.post(
            "/upload",
            data={"csrf": csrf.group(1)},
            files=[("files", ("test_data1.csv", data))],
            headers={"origin": console.base},
        )
        assert answer.status_code == 200
        follow = str(answer.url).replace("/upload?", "/upload/rows?")

        def final_rows() -> str | None:
            text = client.get(follow).text
            return text if "all-final" in text else None

        rows = wait_for(final_rows)
        assert ">partly accepted</span>" in rows
        link = re.search(r'<a href="(/file\?id=[^"]+)">incoming/test_data1.csv</a>', rows)
        assert link is not None

        file_page = client.get(link.group(1).replace("&amp;", "&")).text
        assert "Rejected rows" in file_page
        assert re.search(r'<tr><td class="n">\d+</td>', file_page)
        csv_link = re.search(r'href="(/file/rejects.csv\?id=[^"]+)"', file_page)
        assert csv_link is not None
        download = client.get(csv_link.group(1))
        stored = stack.clients.s3.get_object(
            Bucket=stack.settings.bucket, Key=rejects_key_for("incoming/test_data1.csv")
        )["Body"].read()
        assert download.content == stored
        assert stored.startswith(b"line,")


def test_dead_letters_listed_and_redriven_over_http(stack: Any) -> None:
    s3 = stack.clients.s3
    put = s3.put_object(Bucket=stack.settings.bucket, Key="elsewhere/x.csv", Body=b"order_id\n")
    body = s3_event_body(
        ObjectVersion(
            stack.settings.bucket, "elsewhere/x.csv", f"etag:{put['ETag'].strip(chr(34))}",
            put["ETag"].strip('"'), 9, "2026-12-04T09:00:00.000Z",
        ),
        source="test",
    )  # fmt: skip
    dlq = ingest_dlq(stack)
    stack.clients.sqs.send_message(QueueUrl=dlq.url, MessageBody=body)
    stack.clients.sqs.send_message(QueueUrl=dlq.url, MessageBody="garbage")
    with serve_console(stack) as console:
        client = _login(console)
        page = client.get("/dlq?queue=ingest").text
        assert "2 message(s) in the ingest dead-letter queue" in page
        assert (
            "cannot succeed: not an S3 event (nor a replay of one): ingest cannot read it" in page
        )
        assert "elsewhere/x.csv" in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        ids = re.findall(r'name="ids" value="([^"]+)"', page)
        assert len(ids) == 2
        health = client.get("/health").text
        assert "ingest DLQ" in health
        assert "notify queue" in health

        moved = client.post(
            "/dlq/redrive",
            data={"csrf": csrf.group(1), "queue": "ingest", "all": "1"},
            headers={"origin": console.base},
        )
        assert (
            "moved 1 message(s) back to the ingest queue; left 1 that can never succeed"
            in moved.text
        )
        assert "1 message(s) in the ingest dead-letter queue" in moved.text
    (left,) = dlq.peek()
    assert left.body == "garbage"


def test_the_command_serves_loopback_with_its_printed_token(stack: Any, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = dict(os.environ, ORDERPIPE_STATE_DIR=str(tmp_path), AWS_ENDPOINT_URL=stack.endpoint)
    env.update(stack.settings.to_env())
    command = [sys.executable, "-m", "core.cli", "console", "--no-open", "--port", "0"]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
        assert found is not None, line
        base, token = found.groups()
        assert line.startswith("orderpipe console for environment: ")
        bare = httpx2.get(f"{base}/files", timeout=10)
        assert bare.status_code == 403
        client = httpx2.Client(base_url=base, follow_redirects=True, timeout=30)
        page = client.get(f"/?token={token}")
        assert page.status_code == 200
        assert "<title>Files" in page.text
        assert str(page.url) == f"{base}/files"  # the token left the address at once
    finally:
        proc.terminate()
        proc.wait(10)
