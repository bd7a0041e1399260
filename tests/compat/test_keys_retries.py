"""Any key, the retry backoff and busy files, on LocalStack's S3 and SQS (DynamoDB on moto).

The same promises the moto scenarios check (tests/integration/test_faults.py), where LocalStack
is closer to AWS: one ``CompleteMultipartUpload`` event per multipart upload (moto sends two),
real version ids, its own key encoding in events, and SQS visibility and redrive written by
someone other than moto's authors.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from core.aws.stack import LOCAL_TIMINGS, MAX_RECEIVE_COUNT
from core.local.worker import INGEST, drain
from core.pipeline.events import decode_key, encode_key, header_safe
from core.pipeline.ingest import MULTIPART_THRESHOLD, rejects_key_for
from tests.compat.conftest import (
    DRAIN_S,
    ENV_AWS_CLI,
    CompatPipeline,
    orderpipe,
    run,
)
from tests.integration.pipeline_kit import OrderFile, handler_faults, newest, order_file
from tests.support.faults import FaultPlan

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Every way a key can trip an encoder: spaces, "+", "%", "#", "?", brackets, accents, an en
# dash, right-to-left script and an emoji (4 bytes of UTF-8).
PUT_KEY = "incoming/كشف الطلبات ٢ – #3 ?v=1 +50% 📦.csv"
MULTIPART_KEY = "incoming/Q4 orders – Zürich+Genève (final) 📦.csv"
COPY_KEY = "incoming/עותק – Genève+Zürich #2 ?x=1 %41 📦.csv"
CLI_KEY = "incoming/aws cli – Ωmega+été 50% #1 🧾.csv"


def _events_by_key(bodies: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Decoded key → (event name, the record's s3.object), one record per body."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for body in bodies:
        (record,) = json.loads(body)["Records"]
        obj = record["s3"]["object"]
        key = decode_key(obj["key"])
        assert key not in out, f"two events for {key!r}"
        out[key] = (record["eventName"], obj)
    return out


def _check_every_reader(
    pipe: CompatPipeline, tmp_path: Path, files: dict[str, tuple[OrderFile, str]]
) -> None:
    """Ledger, rejects/…, SES and `orderpipe status` name each key exactly (key → file, version)."""
    bucket = pipe.bucket
    ledger = pipe.ledger()
    for key, (f, version) in files.items():
        entry = ledger[f"{bucket}/{key}#{version}"]
        assert entry["object_key"] == key
        assert (int(entry["valid"]), int(entry["invalid"])) == (len(f.ids), f.invalid), entry
        head = pipe.s3.head_object(Bucket=bucket, Key=rejects_key_for(key))
        assert head["Metadata"]["source-key"] == header_safe(key)
    texts = pipe.ses_sent()
    for key, (_, version) in files.items():
        named = sum(f"s3://{bucket}/{key} (version {version})" in t for t in texts)
        assert named == 1, f"{named} emails accepted by SES name {key!r}"
    for key, (f, version) in files.items():
        shown = orderpipe(pipe, tmp_path, "status", key, "--json")
        assert shown.returncode == 0, shown.stderr
        (line,) = [json.loads(x) for x in shown.stdout.splitlines() if x.strip()]
        assert (line["key"], line["status"], line["version"]) == (key, f.status, version), line


def test_non_ascii_keys_put_multipart_and_copied(
    pipe: CompatPipeline, tmp_path: Path, figures: Any
) -> None:
    figures(scenario="any key: put, multipart (10 MB) and copy of non-ASCII keys with # ? + %")
    small = order_file(PUT_KEY, "A-", 40, invalid=2)
    # Five good orders, then bad rows up to past boto3's 8 MB multipart threshold.
    big = order_file(MULTIPART_KEY, "Z-", 5, invalid=310_000, variant=3)
    source = tmp_path / "big.csv"
    source.write_bytes(big.body)
    assert MULTIPART_THRESHOLD < source.stat().st_size < 2 * MULTIPART_THRESHOLD

    put = pipe.s3.put_object(Bucket=pipe.bucket, Key=PUT_KEY, Body=small.body)
    pipe.s3.upload_file(str(source), pipe.bucket, MULTIPART_KEY, Config=TransferConfig())
    head = pipe.s3.head_object(Bucket=pipe.bucket, Key=MULTIPART_KEY)
    assert head["ETag"].strip('"').endswith("-2"), head["ETag"]  # two parts
    copied = pipe.s3.copy_object(
        Bucket=pipe.bucket, Key=COPY_KEY, CopySource={"Bucket": pipe.bucket, "Key": MULTIPART_KEY}
    )
    bodies = pipe.take_events(3)
    events = _events_by_key(bodies)
    versions = {
        PUT_KEY: put["VersionId"],
        MULTIPART_KEY: head["VersionId"],
        COPY_KEY: copied["VersionId"],
    }
    assert {k: (name, obj.get("versionId")) for k, (name, obj) in events.items()} == {
        PUT_KEY: ("ObjectCreated:Put", versions[PUT_KEY]),
        MULTIPART_KEY: ("ObjectCreated:CompleteMultipartUpload", versions[MULTIPART_KEY]),
        COPY_KEY: ("ObjectCreated:Copy", versions[COPY_KEY]),
    }
    assert len(bodies) == 3  # one event for the multipart upload (moto sends two)
    # How the emulator spells keys in events (AWS: quote_plus, "+" for a space); any spelling
    # that decodes back to the key is fine, and _events_by_key decoded all three.
    spelled = {k: obj["key"] for k, (_, obj) in events.items()}
    raw = spelled[MULTIPART_KEY]
    figures(
        event_keys_spelled_as_aws=f"{sum(spelled[k] == encode_key(k) for k in spelled)} of 3",
        space_spelled="+" if raw.startswith("incoming/Q4+") else raw[len("incoming/Q4") :][:3],
    )
    for body in bodies:
        pipe.deliver(body)
    figures(processing_s=run(pipe))

    copy = OrderFile(COPY_KEY, big.ids, big.invalid, big.variant)
    files = {
        PUT_KEY: (small, versions[PUT_KEY]),
        MULTIPART_KEY: (big, versions[MULTIPART_KEY]),
        COPY_KEY: (copy, versions[COPY_KEY]),
    }
    pipe.assert_end_state(
        newest(small, big), {f"{pipe.bucket}/{k}#{v}": f.status for k, (f, v) in files.items()}
    )
    _check_every_reader(pipe, tmp_path, files)
    figures(file_mb=round(source.stat().st_size / 2**20, 1), keys=len(files))


def test_a_key_uploaded_by_the_aws_cli(pipe: CompatPipeline, tmp_path: Path, figures: Any) -> None:
    figures(scenario="any key: `aws s3 cp` (AWS's own CLI) of a non-ASCII key with # + %")
    aws = os.environ.get(ENV_AWS_CLI, "")
    if not aws or not Path(aws).is_file():
        pytest.skip("no aws CLI (LocalStack's venv brings one; `make compat` names it)")
    f = order_file(CLI_KEY, "CLI-", 25, invalid=1)
    source = tmp_path / "from-cli.csv"
    source.write_bytes(f.body)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        "AWS_DEFAULT_REGION": pipe.s3.meta.region_name,
    }
    env.pop("PYTHONPATH", None)  # the CLI runs in LocalStack's venv, not orderpipe's
    cp = subprocess.run(
        [
            aws,
            "--endpoint-url",
            pipe.stack.endpoint,
            "s3",
            "cp",
            str(source),
            f"s3://{pipe.bucket}/{CLI_KEY}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
    version = pipe.s3.head_object(Bucket=pipe.bucket, Key=CLI_KEY)["VersionId"]
    bodies = pipe.take_events(1)
    assert list(_events_by_key(bodies)) == [CLI_KEY]
    for body in bodies:
        pipe.deliver(body)
    figures(processing_s=run(pipe))

    pipe.assert_end_state(f.orders, {f"{pipe.bucket}/{CLI_KEY}#{version}": "PARTIAL"})
    _check_every_reader(pipe, tmp_path, {CLI_KEY: (f, version)})
    figures(client="aws-cli " + _cli_version(aws, env))


def _cli_version(aws: str, env: dict[str, str]) -> str:
    out = subprocess.run([aws, "--version"], env=env, capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).split(" ", 1)[0].partition("/")[2]


# -- retries: the backoff set by ChangeMessageVisibility, not the queue's timeout ---------------

Receipts = list[tuple[float, int]]  # (monotonic time the handler got it, receive count)


def _timed_ingest(receipts: Receipts) -> Callable[[dict[str, Any], Any], Any]:
    """The real ingest handler, noting when each record reached it and on which receive."""
    from handlers.ingest import handler

    def timed(event: dict[str, Any], context: Any) -> Any:
        for record in event["Records"]:
            count = int(record["attributes"]["ApproximateReceiveCount"])
            receipts.append((time.monotonic(), count))
        return handler(event, context)

    return timed


def _gaps(receipts: Receipts) -> list[float]:
    return [round(b[0] - a[0], 2) for a, b in itertools.pairwise(receipts)]


def test_a_transient_failure_comes_back_after_its_backoff(
    pipe: CompatPipeline, figures: Any
) -> None:
    schedule, visibility = LOCAL_TIMINGS.retry_schedule_s, LOCAL_TIMINGS.ingest_visibility_s
    figures(
        scenario=f"backoff: GetObject reset twice; back after {schedule[0]} s, {schedule[1]} s "
        f"(queue visibility {visibility} s)"
    )
    url = pipe.stack.settings.ingest_queue_url
    attrs = pipe.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert int(attrs["Attributes"]["VisibilityTimeout"]) == visibility
    f = order_file("incoming/backoff transient.csv", "BT-", 40, invalid=1)
    assert pipe.take_events(0) == []  # only the s3:TestEvent was there: every receipt is ours
    pipe.upload(f)
    receipts: Receipts = []
    plan = FaultPlan.parse("s3.GetObject=stream-reset:1:2")
    with handler_faults(plan):
        report = drain(
            pipe.stack.clients,
            pipe.stack.settings,
            DRAIN_S,
            handlers={INGEST: _timed_ingest(receipts)},
        )

    pipe.assert_end_state(f.orders, {pipe.file_id(f): "PARTIAL"})
    assert plan.counts() == {"s3.GetObject:stream-reset": 2}
    assert [count for _, count in receipts] == [1, 2, 3]
    gaps = _gaps(receipts)
    for gap, wait in zip(gaps, schedule, strict=False):
        assert wait <= gap < visibility, (gaps, schedule)  # the backoff, not the visibility
    assert all(b.error is None for b in report.batches)  # failed records, no handler error
    assert int(pipe.ledger()[pipe.file_id(f)]["attempts"]) == 3
    figures(redelivered_after_s="/".join(map(str, gaps)), to_outcome_s=round(report.seconds, 2))


def test_a_persistent_failure_reaches_the_dlq_after_the_schedule(
    pipe: CompatPipeline, tmp_path: Path, figures: Any
) -> None:
    schedule, visibility = LOCAL_TIMINGS.retry_schedule_s, LOCAL_TIMINGS.ingest_visibility_s
    figures(
        scenario=f"backoff: object gone; {MAX_RECEIVE_COUNT} receives "
        f"{'/'.join(map(str, schedule))} s apart, then the DLQ; the ledger says why"
    )
    f = order_file("incoming/backoff gone.csv", "BG-", 10)
    assert pipe.take_events(0) == []  # only the s3:TestEvent was there: every receipt is ours
    pipe.upload(f)
    for v in pipe.s3.list_object_versions(Bucket=pipe.bucket, Prefix=f.key)["Versions"]:
        pipe.s3.delete_object(Bucket=pipe.bucket, Key=f.key, VersionId=v["VersionId"])
    receipts: Receipts = []
    started = time.monotonic()
    report = drain(
        pipe.stack.clients, pipe.stack.settings, DRAIN_S, handlers={INGEST: _timed_ingest(receipts)}
    )
    seconds = time.monotonic() - started

    pipe.assert_end_state({}, {pipe.file_id(f): "FAILED"}, ingest_dlq=1)
    assert [count for _, count in receipts] == list(range(1, MAX_RECEIVE_COUNT + 1))
    gaps = _gaps(receipts)
    for gap, wait in zip(gaps, schedule, strict=True):
        assert wait <= gap < visibility, (gaps, schedule)
    # The last failure waits for nothing: the next receive moves it to the DLQ.
    last_to_dlq = started + seconds - receipts[-1][0]
    assert last_to_dlq < visibility, last_to_dlq
    assert all(b.error is None for b in report.batches)
    entry = pipe.ledger()[pipe.file_id(f)]
    assert int(entry["attempts"]) == MAX_RECEIVE_COUNT
    assert "gone" in str(entry["last_error"]), entry["last_error"]
    listed = orderpipe(pipe, tmp_path, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (letter,) = [json.loads(x) for x in listed.stdout.splitlines() if x.strip()]
    assert (letter["keys"], letter["ledger_status"]) == ([f.key], ["FAILED"]), letter
    figures(
        redelivered_after_s="/".join(map(str, gaps)),
        last_receive_to_dlq_s=round(last_to_dlq, 2),
        to_dlq_s=round(seconds, 2),
    )


# -- a busy file: two versions of one key ingested at the same time ----------------------------

BATCH_LINE = re.compile(r"ingest: (\d+) message\(s\), (\d+) failed")


@pytest.fixture
def two_instances(pipe: CompatPipeline, tmp_path: Path) -> Iterator[list[Path]]:
    """Two ingest "function instances" polling the queue, one message each (as on AWS)."""
    env = {**os.environ, **pipe.stack.settings.to_env(), "PYTHONPATH": str(ROOT)}
    logs = [tmp_path / f"instance-{n}.log" for n in (1, 2)]
    assert pipe.take_events(0) == []  # only the s3:TestEvent was there: every batch is ours
    procs = []
    try:
        for log in logs:
            with log.open("w") as err:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "tests.compat.lambda_instance"],
                        cwd=ROOT,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                    )
                )
        for proc, log in zip(procs, logs, strict=True):
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", log.read_text()
        time.sleep(1.5)  # both are long-polling now
        yield logs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_one_key_uploaded_twice_at_once_is_busy_then_done(
    pipe: CompatPipeline, two_instances: list[Path], figures: Any
) -> None:
    figures(scenario="busy file: one key uploaded twice at once, two ingest instances")
    first = order_file("incoming/twice at once.csv", "W-", 2_000, invalid=1, variant=1)
    second = order_file("incoming/twice at once.csv", "W-", 1_800, invalid=2, variant=2)
    started = time.monotonic()
    pipe.upload(first, second)
    wanted = {pipe.file_id(first): first.status, pipe.file_id(second): second.status}
    while time.monotonic() - started < DRAIN_S:
        statuses = {fid: e["status"] for fid, e in pipe.ledger().items()}
        if statuses == wanted and pipe.queue_depth(pipe.stack.names.ingest_queue) == 0:
            break
        time.sleep(0.5)
    seconds = round(time.monotonic() - started, 2)
    run(pipe)  # the notify queue (the instances poll ingest only)

    pipe.assert_end_state(newest(first, second), wanted)
    log = "\n".join(p.read_text() for p in two_instances)
    assert "handler error" not in log, log
    batches = [(int(n), int(failed)) for n, failed in BATCH_LINE.findall(log)]
    busy = sum(failed for _, failed in batches)
    assert busy >= 1, f"neither version found the key busy: {batches}\n{log}"
    assert sum(n for n, _ in batches) == 2 + busy  # each busy receive came back, once more
    ledger = pipe.ledger()
    assert all(int(e["attempts"]) == 1 for e in ledger.values()), ledger  # busy is no attempt
    figures(busy_receives=busy, both_outcomes_s=seconds, handler_errors=0)
