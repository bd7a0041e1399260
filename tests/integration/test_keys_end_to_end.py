"""A file named in someone's own language goes through the whole local stack unchanged.

The key has a space, an en dash, a ``+``, accents, brackets and an emoji. It arrives by a
multipart upload (``upload_file`` of a file over 8 MB: the emulator sends two events for it)
and by a server-side copy (``ObjectCreated:Copy``), and must reach the ledger, ``rejects/…``,
the email, ``status``, ``replay`` and ``dlq`` exactly as it was written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from click.testing import CliRunner

from core.cli import cli
from core.local.worker import drain
from core.pipeline.events import header_safe
from core.pipeline.ingest import MULTIPART_THRESHOLD, rejects_key_for
from tests.integration.pipeline_kit import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "incoming/Q4 orders – Zürich+Genève (final) 📦.csv"
COPY = "incoming/كشف الطلبات ٢ – copie de Genève+Zürich #2 ?v=1 📦.csv"
GONE = "incoming/שלום 'gone' %41 📦.csv"
HEADER = "Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total"
VALID = 5


def big_order_file(path: Path) -> int:
    """A CSV over the multipart threshold: 5 good orders, then rows with a bad date."""
    lines = [HEADER] + [f"K{i},C{i},1/2/23,Pending,{i}.50" for i in range(VALID)]
    bad = 0
    size = sum(len(line) + 1 for line in lines)
    while size <= MULTIPART_THRESHOLD + 512 * 1024:
        line = f"BAD{bad:07d},Customer-{bad:07d},not-a-date,Pending,1"
        lines.append(line)
        size += len(line) + 1
        bad += 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return bad


def run_cli(stack: Any, tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    env = {**stack.settings.to_env(), "AWS_ENDPOINT_URL": stack.endpoint}
    env["ORDERPIPE_STATE_DIR"] = str(tmp_path / "no-local-state")
    result = CliRunner().invoke(cli, [*args, "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.strip()]


def test_a_non_ascii_key_uploaded_multipart_and_copied_goes_through_unchanged(
    stack: Any, tmp_path: Path
) -> None:
    pipe = Pipeline(stack)
    s3, bucket = stack.clients.s3, stack.names.bucket
    source = tmp_path / "orders.csv"
    invalid = big_order_file(source)
    assert source.stat().st_size > MULTIPART_THRESHOLD

    s3.upload_file(str(source), bucket, KEY, Config=TransferConfig())  # multipart, 2 parts
    assert s3.head_object(Bucket=bucket, Key=KEY)["ETag"].strip('"').endswith("-2")
    # moto gives a copy of a multipart object the wrong CRC32 (any GetObject of it then fails
    # botocore's checksum check) unless the copy names its algorithm; S3 computes it right.
    s3.copy_object(
        Bucket=bucket,
        Key=COPY,
        CopySource={"Bucket": bucket, "Key": KEY},
        ChecksumAlgorithm="CRC32",
    )
    drain(stack.clients, stack.settings, 180)

    # One outcome per key, whatever number of events the upload produced.
    ledger = pipe.ledger()
    assert sorted(e["object_key"] for e in ledger.values()) == sorted([KEY, COPY])
    for entry in ledger.values():
        assert entry["status"] == "PARTIAL", entry.get("last_error")
        assert (int(entry["valid"]), int(entry["invalid"])) == (VALID, invalid)
        assert int(entry["attempts"]) == 1
    assert len(pipe.orders()) == VALID

    # rejects/… under the same name; the key in user metadata only percent-encoded.
    for key in (KEY, COPY):
        head = s3.head_object(Bucket=bucket, Key=rejects_key_for(key))
        assert head["Metadata"]["source-key"] == header_safe(key)
        assert head["ContentLength"] > MULTIPART_THRESHOLD  # stored by a multipart upload too

    # One email per file, naming the key exactly.
    mails = [_text_of(m) for m in pipe.emails()]
    for key in (KEY, COPY):
        assert sum(f"s3://{bucket}/{key}" in text for text in mails) == 1, key

    # status, replay and dlq name it exactly too.
    (shown,) = run_cli(stack, tmp_path, "status", KEY)
    assert (shown["key"], shown["status"]) == (KEY, "PARTIAL")
    replayed = run_cli(stack, tmp_path, "replay", COPY, "--reason", "key check")
    assert [r["key"] for r in replayed] == [COPY]
    drain(stack.clients, stack.settings, 180)
    (again,) = run_cli(stack, tmp_path, "status", COPY)
    assert (again["key"], again["status"]) == (COPY, "PARTIAL")
    assert int(again["attempts"]) >= 2

    s3.put_object(Bucket=bucket, Key=GONE, Body=f"{HEADER}\nG1,C1,1/2/23,Pending,1\n".encode())
    for v in s3.list_object_versions(Bucket=bucket, Prefix=GONE)["Versions"]:
        s3.delete_object(Bucket=bucket, Key=GONE, VersionId=v["VersionId"])
    drain(stack.clients, stack.settings, 60, retry_after_s=0)
    (letter,) = run_cli(stack, tmp_path, "dlq", "list")
    assert letter["keys"] == [GONE]
    assert letter["ledger_status"] == ["FAILED"]
    assert letter["last_error"]


def _text_of(message: Any) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            return str(payload.decode(part.get_content_charset() or "utf-8"))
    return ""
