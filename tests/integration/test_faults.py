"""Reliability scenarios: the real handlers, on a moto server, while AWS misbehaves on purpose.

Each scenario injects one kind of trouble production sees, lets the pipeline run until it is
idle, and then checks the whole promise at once (``Pipeline.assert_end_state``): the orders
table holds exactly the expected orders with their newest values, every file has a terminal
ledger status, every file with rejected rows is named in exactly one email, the DLQs hold only
what they should and nothing is left PROCESSING.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from click.testing import CliRunner

from core import bootstrap
from core.aws.clients import Clients
from core.aws.stack import LOCAL_TIMINGS, StackNames
from core.cli import cli
from core.local.embedded import EmbeddedConfig, EmbeddedStack
from core.local.worker import Worker, drain, handler_environment
from core.pipeline.events import header_safe, parse_body
from core.pipeline.ingest import MULTIPART_THRESHOLD, rejects_key_for
from core.pipeline.ledger import DynamoLedger
from tests.integration.pipeline_kit import (
    OrderFile,
    Pipeline,
    Scenario,
    UnreadableFile,
    handler_faults,
    newest,
    order_file,
)
from tests.support.faults import FaultPlan, clients_with

pytestmark = pytest.mark.integration

DRAIN_S = 120  # a ceiling, not a pause: drain returns as soon as the queues are idle


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    record = Scenario(request.node.name)
    yield record
    record.save()


@pytest.fixture
def pipe(stack: Any) -> Pipeline:
    return Pipeline(stack)


def run(pipe: Pipeline, plan: FaultPlan | None = None) -> None:
    """Run the real handlers until both queues are idle, failed messages retried at once."""
    if plan is None:
        drain(pipe.stack.clients, pipe.stack.settings, DRAIN_S, retry_after_s=0)
        return
    with handler_faults(plan):
        drain(pipe.stack.clients, pipe.stack.settings, DRAIN_S, retry_after_s=0)


def expect_files(pipe: Pipeline, *files: OrderFile) -> dict[str, str]:
    return {pipe.file_id(f): f.status for f in files}


def attempts(pipe: Pipeline) -> dict[str, int]:
    return {fid: int(e.get("attempts", 0)) for fid, e in pipe.ledger().items()}


# -- DynamoDB -----------------------------------------------------------------------------------


def test_throttled_batch_writes_lose_nothing(pipe: Pipeline, scenario: Scenario) -> None:
    scenario.describe(
        "DynamoDB throttling",
        "BatchWriteItem answers ThrottlingException or ProvisionedThroughputExceededException "
        "(30% of calls, up to 2 each)",
        "botocore backs off and retries; every order stored once; outcomes and emails exact",
    )
    files = [order_file(f"incoming/throttle-{i}.csv", f"T{i}-", 60, invalid=i) for i in range(3)]
    plan = FaultPlan.parse(
        "seed=3; dynamodb.BatchWriteItem=throttle:0.3:2; dynamodb.BatchWriteItem=provisioned:0.3:2"
    )
    pipe.upload(*files)
    run(pipe, plan)

    pipe.assert_end_state(newest(*files), expect_files(pipe, *files))
    assert plan.total("throttle") >= 1
    assert plan.total("provisioned") >= 1
    scenario.measure(faults=plan.counts())
    scenario.passed()


def test_partial_unprocessed_items_are_retried_until_written(
    pipe: Pipeline, scenario: Scenario
) -> None:
    scenario.describe(
        "DynamoDB partial batches",
        "BatchWriteItem leaves a random part of the batch in UnprocessedItems (30% of calls)",
        "the writer re-sends exactly the unprocessed items; every order stored once",
    )
    files = [order_file(f"incoming/partial-{i}.csv", f"P{i}-", 100, invalid=i) for i in range(3)]
    plan = FaultPlan.parse("seed=5; dynamodb.BatchWriteItem=unprocessed:0.3")
    pipe.upload(*files)
    run(pipe, plan)

    pipe.assert_end_state(newest(*files), expect_files(pipe, *files))
    assert plan.total("unprocessed") >= 1  # the faults really happened
    scenario.measure(faults=plan.counts(), attempts=sum(attempts(pipe).values()))
    scenario.passed()


@pytest.mark.slow  # the writer's own backoff over 8 refused attempts takes about 6 s
def test_writes_refused_past_every_retry_fail_the_attempt_and_the_file_is_redone(
    pipe: Pipeline, scenario: Scenario
) -> None:
    scenario.describe(
        "DynamoDB refuses past all retries",
        "the first 8 BatchWriteItem calls leave items unprocessed, exhausting the writer",
        "attempt 1 ends FAILED, the message is redelivered, attempt 2 stores every order once",
    )
    good = order_file("incoming/refused.csv", "R-", 80, invalid=2)
    plan = FaultPlan.parse("dynamodb.BatchWriteItem=unprocessed:1:8")
    pipe.upload(good)
    run(pipe, plan)

    pipe.assert_end_state(newest(good), expect_files(pipe, good))
    entry = pipe.ledger()[pipe.file_id(good)]
    assert int(entry["attempts"]) == 2
    scenario.measure(faults=plan.counts(), attempts=int(entry["attempts"]))
    scenario.passed()


# -- S3 -----------------------------------------------------------------------------------------


def test_s3_read_timeouts_and_resets_mid_stream(pipe: Pipeline, scenario: Scenario) -> None:
    scenario.describe(
        "S3 read errors",
        "GetObject times out once (no answer), then its body is cut by a connection reset; "
        "later a body stalls with a read timeout",
        "each broken read fails only that attempt; the file is read again whole; "
        "nothing half-read is stored",
    )
    first = order_file("incoming/s3-a.csv", "SA-", 150, invalid=1)
    pipe.upload(first)
    plan_a = FaultPlan.parse("s3.GetObject=timeout:1:1; s3.GetObject=stream-reset:1:1")
    run(pipe, plan_a)
    second = order_file("incoming/s3-b.csv", "SB-", 150)
    pipe.upload(second)
    plan_b = FaultPlan.parse("s3.GetObject=stream-timeout:1:1")
    run(pipe, plan_b)

    pipe.assert_end_state(newest(first, second), expect_files(pipe, first, second))
    assert plan_a.counts() == {"s3.GetObject:timeout": 1, "s3.GetObject:stream-reset": 1}
    assert plan_b.counts() == {"s3.GetObject:stream-timeout": 1}
    tries = attempts(pipe)
    assert tries == {pipe.file_id(first): 2, pipe.file_id(second): 2}
    scenario.measure(faults={**plan_a.counts(), **plan_b.counts()}, attempts=sorted(tries.values()))
    scenario.passed()


# -- SES ----------------------------------------------------------------------------------------


def test_ses_throttling_and_a_rejected_send_still_mail_each_file_once(
    pipe: Pipeline, scenario: Scenario
) -> None:
    scenario.describe(
        "SES throttling and rejection",
        "SendRawEmail is throttled 3 times, then rejected once (MessageRejected)",
        "notify backs off, releases its claim on the rejection and retries; each file with "
        "rejected rows is in exactly one email",
    )
    files = [order_file(f"incoming/ses-{i}.csv", f"S{i}-", 20, invalid=1 + i) for i in range(3)]
    plan = FaultPlan.parse("ses.SendRawEmail=throttle:1:3; ses.SendRawEmail=rejected:1:1")
    pipe.upload(*files)
    run(pipe, plan)

    pipe.assert_end_state(newest(*files), expect_files(pipe, *files))
    assert plan.counts() == {"ses.SendRawEmail:throttle": 3, "ses.SendRawEmail:rejected": 1}
    scenario.measure(faults=plan.counts(), emails=len(pipe.emails()))
    scenario.passed()


# -- SQS ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sqs_receive_and_delete_errors_in_the_worker_loop(
    pipe: Pipeline, scenario: Scenario
) -> None:
    scenario.describe(
        "SQS receive and delete errors",
        "the worker's ReceiveMessage throttled or reset (20%), DeleteMessageBatch failing "
        "with InternalError past botocore's retries (first 3 calls)",
        "the worker keeps polling; an undeleted message comes back and is recognised as "
        "done; no order or email twice",
    )
    files = [order_file(f"incoming/sqs-{i}.csv", f"Q{i}-", 40, invalid=i % 2) for i in range(4)]
    plan = FaultPlan.parse(
        "seed=2; sqs.ReceiveMessage=throttle:0.2; sqs.ReceiveMessage=reset:0.2; "
        "sqs.DeleteMessageBatch=internal:1:3"
    )
    # Only the worker's own client fails (max_attempts=0: no retries hide the delete errors).
    worker_clients = clients_with(plan, endpoint_url=pipe.stack.endpoint, max_attempts=0)
    pipe.upload(*files)
    wanted = expect_files(pipe, *files)

    def settled() -> bool:
        ledger = pipe.ledger()
        return set(ledger) == set(wanted) and all(
            e["status"] == wanted[f] and (wanted[f] == "SUCCEEDED" or e.get("notified_at"))
            for f, e in ledger.items()
        )

    with handler_environment(worker_clients, pipe.stack.settings):
        worker = Worker(
            worker_clients,
            pipe.stack.settings,
            wait_time_s=1,
            notify_window_s=0,
            failed_visibility_s=0,
        )
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + DRAIN_S
            while time.monotonic() < deadline and not (settled() and _queues_empty(pipe)):
                time.sleep(1)
        finally:
            stop.set()
            thread.join(30)

    assert not thread.is_alive()
    pipe.assert_end_state(newest(*files), wanted)
    assert plan.total("internal") == 3
    assert plan.total("throttle") + plan.total("reset") >= 1
    scenario.measure(faults=plan.counts())
    scenario.passed()


def _queues_empty(pipe: Pipeline) -> bool:
    names = pipe.stack.names
    return pipe.queue_depth(names.ingest_queue) == 0 and pipe.queue_depth(names.notify_queue) == 0


# -- a poison message ---------------------------------------------------------------------------


def test_an_object_gone_before_ingest_dead_letters_alone(
    pipe: Pipeline, scenario: Scenario
) -> None:
    scenario.describe(
        "object gone before ingest (poison message)",
        "a file's only version is deleted after its event was sent; a good file beside it",
        "the good file is stored and mailed; the gone one is FAILED with its error in the "
        "ledger after 5 receives, and its event (only it) is in the ingest DLQ",
    )
    good = order_file("incoming/poison-good.csv", "G-", 30, invalid=1)
    gone = order_file("incoming/poison-gone.csv", "X-", 30)
    pipe.upload(good, gone)
    versions = pipe.s3.list_object_versions(Bucket=pipe.bucket, Prefix=gone.key)["Versions"]
    for v in versions:
        pipe.s3.delete_object(Bucket=pipe.bucket, Key=gone.key, VersionId=v["VersionId"])
    run(pipe)

    files = expect_files(pipe, good)
    files[pipe.file_id(gone)] = "FAILED"
    pipe.assert_end_state(newest(good), files, ingest_dlq=1)
    entry = pipe.ledger()[pipe.file_id(gone)]
    assert int(entry["attempts"]) == 5
    assert "gone" in str(entry["last_error"])
    dlq = pipe.sqs.get_queue_url(QueueName=pipe.stack.names.ingest_dlq)["QueueUrl"]
    (message,) = pipe.sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
    assert gone.key.replace("/", "%2F") in message["Body"] or gone.key in message["Body"]
    scenario.measure(attempts=int(entry["attempts"]), last_error=entry["last_error"])
    scenario.passed()


# -- delivery order and duplicates --------------------------------------------------------------


def test_the_same_s3_event_delivered_three_times(pipe: Pipeline, scenario: Scenario) -> None:
    scenario.describe(
        "duplicate S3 events",
        "each file's S3 event delivered three times: twice in one batch, once after it "
        "finished (a partly valid file and one rejected whole)",
        "one ledger entry and one attempt per file, orders written once, one email per file",
    )
    f = order_file("incoming/dup.csv", "D-", 60, invalid=2)
    junk = UnreadableFile("incoming/dup-junk.csv")
    pipe.upload(f, junk)
    events = pipe.take_events()
    assert len(events) == 2
    for event in events * 2:
        pipe.deliver(event)
    run(pipe)
    for event in events:
        pipe.deliver(event)
    run(pipe)

    pipe.assert_end_state(newest(f, junk), expect_files(pipe, f, junk))
    assert attempts(pipe) == {pipe.file_id(f): 1, pipe.file_id(junk): 1}
    scenario.passed()


def test_events_delivered_out_of_order_keep_the_newest_values(
    pipe: Pipeline, scenario: Scenario
) -> None:
    scenario.describe(
        "events out of order",
        "two uploads of one key; the newer upload's event is delivered and processed first",
        "the older upload never overwrites the newer values; orders only the older had are stored",
    )
    old = order_file("incoming/late.csv", "L-", 50, invalid=1, variant=1)
    new = order_file("incoming/late.csv", "L-", 40, variant=2)  # L-00040..49 only in the old
    pipe.upload(old)
    time.sleep(0.01)  # distinct event times, as S3 gives two writes
    pipe.upload(new)
    old_event, new_event = pipe.take_events()
    pipe.deliver(new_event)
    run(pipe)
    pipe.deliver(old_event)
    run(pipe)

    pipe.assert_end_state(newest(old, new), expect_files(pipe, old, new))
    scenario.passed()


def test_same_key_uploaded_twice_in_quick_succession(pipe: Pipeline, scenario: Scenario) -> None:
    scenario.describe(
        "one key uploaded twice at once",
        "two versions of one key, different content, uploaded back to back before any processing",
        "both versions processed (the first read by its ETag); newest values win",
    )
    first = order_file("incoming/twice.csv", "W-", 50, invalid=1, variant=1)
    second = order_file("incoming/twice.csv", "W-", 45, invalid=2, variant=2)
    pipe.upload(first, second)
    run(pipe)

    pipe.assert_end_state(newest(first, second), expect_files(pipe, first, second))
    scenario.passed()


# -- load ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_burst_of_100_files(pipe: Pipeline, scenario: Scenario) -> None:
    scenario.describe(
        "burst of 100 files",
        "100 small files uploaded at once (one in five with a rejected row)",
        "every file terminal, every order stored once, one email per file with rejects",
    )
    files = [
        order_file(f"incoming/burst/{i:03d}.csv", f"B{i:03d}-", 10, invalid=int(i % 5 == 0))
        for i in range(100)
    ]
    sent = pipe.upload(*files)
    started = time.monotonic()
    run(pipe)
    seconds = time.monotonic() - started

    pipe.assert_end_state(newest(*files), expect_files(pipe, *files))
    latencies = sorted(
        _epoch(e["finished_at"]) - sent[fid] for fid, e in pipe.ledger().items() if fid in sent
    )
    scenario.measure(
        files=len(files),
        drain_seconds=round(seconds, 1),
        p50_s=round(statistics.median(latencies), 2),
        p95_s=round(latencies[int(0.95 * (len(latencies) - 1))], 2),
    )
    scenario.passed()


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- the worker process killed ------------------------------------------------------------------


@pytest.mark.slow
def test_worker_killed_mid_file_is_restarted_and_the_file_finishes_exactly(
    tmp_path: Path, scenario: Scenario
) -> None:
    scenario.describe(
        "worker killed with SIGKILL mid-file",
        "`orderpipe local`'s worker process SIGKILLed while writing a 12,000-row file",
        "the supervisor restarts it; the message returns after its visibility timeout; the "
        "lapsed claim is taken over; every order stored once, one email, nothing PROCESSING",
    )
    config = EmbeddedConfig(
        state_dir=tmp_path / "state", outbox_dir=tmp_path / "outbox", save_state=False
    )
    big = order_file("incoming/big.csv", "K-", 12_000, invalid=3)
    with EmbeddedStack(config) as local:
        assert local.settings is not None
        assert local.worker is not None
        clients = Clients(endpoint_url=local.endpoint)
        pipe = Pipeline(
            SimpleNamespace(
                endpoint=local.endpoint,
                clients=clients,
                names=StackNames.for_env(config.env_name),
                settings=local.settings,
            )
        )
        started = time.monotonic()
        pipe.upload(big)
        _wait(lambda: _stored(pipe) >= 1_500, 120, "the worker to start writing")
        assert pipe.ledger()[pipe.file_id(big)]["status"] == "PROCESSING"
        stored_at_kill, killed_pid = _stored(pipe), local.worker.pid
        assert killed_pid is not None
        os.kill(killed_pid, signal.SIGKILL)
        _wait(lambda: local.worker.restarts >= 1 and local.worker.ready.is_set(), 90, "a restart")
        _wait(lambda: _finished_and_told(pipe, big), 240, "the file to finish")
        seconds = time.monotonic() - started
        checked = time.monotonic()
        pipe.assert_end_state(newest(big), expect_files(pipe, big))
        assert local.worker.pid != killed_pid
        assert int(pipe.ledger()[pipe.file_id(big)]["attempts"]) == 2
    scenario.measure(
        stored_when_killed=stored_at_kill,
        restarts=1,
        upload_to_notified_s=round(seconds, 1),
        check_s=round(time.monotonic() - checked, 1),
    )
    scenario.passed()


def _stored(pipe: Pipeline) -> int:
    table = pipe.stack.settings.orders_table
    return sum(
        page["Count"]
        for page in pipe.ddb.get_paginator("scan").paginate(TableName=table, Select="COUNT")
    )


def _finished_and_told(pipe: Pipeline, f: OrderFile) -> bool:
    entry = pipe.ledger().get(pipe.file_id(f), {})
    return (
        entry.get("status") == f.status and bool(entry.get("notified_at")) and _queues_empty(pipe)
    )


def _wait(done: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(1)  # gently: every look is a scan on the emulator the worker also uses


# -- replies lost after the work was done -------------------------------------------------------
# ``reply-timeout`` / ``reply-reset`` really send the request (the emulator applies it) and then
# fail the call as if the answer never came back; botocore's retry meets work already done.


def test_batch_write_replies_lost_after_the_items_were_stored(
    pipe: Pipeline, scenario: Scenario
) -> None:
    scenario.describe(
        "DynamoDB BatchWriteItem reply lost",
        "BatchWriteItem is applied, then its answer times out or the connection drops "
        "(half the calls, up to 2 of each); one key uploaded twice",
        "botocore re-sends the same puts, which overwrite themselves; every order once with "
        "its newest values; outcomes and emails exact",
    )
    old = order_file("incoming/lost-batch.csv", "LB-", 100, invalid=1, variant=1)
    new = order_file("incoming/lost-batch.csv", "LB-", 80, invalid=2, variant=2)
    plan = FaultPlan.parse(
        "seed=8; dynamodb.BatchWriteItem=reply-timeout:0.5:2; "
        "dynamodb.BatchWriteItem=reply-reset:0.5:2"
    )
    pipe.upload(old)
    time.sleep(0.01)  # distinct event times, as S3 gives two writes
    pipe.upload(new)
    run(pipe, plan)

    pipe.assert_end_state(newest(old, new), expect_files(pipe, old, new))
    assert plan.total("reply-timeout") >= 1
    assert plan.total("reply-reset") >= 1
    assert set(attempts(pipe).values()) == {1}  # botocore's retry absorbed every loss
    scenario.measure(faults=plan.counts())
    scenario.passed()


def test_ledger_claim_replies_lost(pipe: Pipeline, scenario: Scenario) -> None:
    scenario.describe(
        "ledger claim reply lost",
        "the claim's conditional writes are applied, then their answers time out: a new "
        "file's key lock and entry PutItem; for a file whose first read failed, the FAILED "
        "record's UpdateItem and the retry claim's",
        "the retry meets its own write (condition failed) and knows it as its own: each file "
        "in its terminal status, not FAILED or PROCESSING, one email each, no key lock left",
    )
    fresh = order_file("incoming/lost-claim-new.csv", "LC-", 20, invalid=1)
    pipe.upload(fresh)
    # A new file's claim: the key lock's PutItem, then the entry's conditional PutItem.
    plan_a = FaultPlan.parse("dynamodb.PutItem=reply-timeout:1:2")
    run(pipe, plan_a)
    retried = order_file("incoming/lost-claim-retry.csv", "LR-", 20, invalid=2)
    pipe.upload(retried)
    # Attempt 1 fails reading the object: its FAILED record is the first UpdateItem; attempt
    # 2's RETRY claim (an UpdateItem conditioned on that record) is the second.
    plan_b = FaultPlan.parse("s3.GetObject=stream-reset:1:1; dynamodb.UpdateItem=reply-timeout:1:2")
    run(pipe, plan_b)

    pipe.assert_end_state(newest(fresh, retried), expect_files(pipe, fresh, retried))
    assert plan_a.counts() == {"dynamodb.PutItem:reply-timeout": 2}
    assert plan_b.counts() == {
        "s3.GetObject:stream-reset": 1,
        "dynamodb.UpdateItem:reply-timeout": 2,
    }
    tries = attempts(pipe)
    assert tries == {pipe.file_id(fresh): 1, pipe.file_id(retried): 2}
    assert pipe.locks() == []
    scenario.measure(faults={**plan_a.counts(), **plan_b.counts()}, attempts=sorted(tries.values()))
    scenario.passed()


def test_ledger_outcome_and_notify_claim_replies_lost(pipe: Pipeline, scenario: Scenario) -> None:
    scenario.describe(
        "ledger finish and notify claim replies lost",
        "the first 5 ledger UpdateItem calls of one file are applied and their answers lost: "
        "the lease renewal (entry and key lock), the outcome (finish), notify's claim and "
        "its notified mark; and ingest's SendMessage of the file's notice",
        "each retry meets its own write and knows it; the notice sent twice is mailed once: "
        "PARTIAL after one attempt, one email, nothing PROCESSING, no key lock left, DLQs empty",
    )
    f = order_file("incoming/lost-finish.csv", "LF-", 60, invalid=3)
    plan = FaultPlan.parse(
        "dynamodb.UpdateItem=reply-timeout:1:5; sqs.SendMessage=reply-timeout:1:1"
    )
    pipe.upload(f)
    run(pipe, plan)

    pipe.assert_end_state(newest(f), expect_files(pipe, f))
    assert plan.counts() == {
        "dynamodb.UpdateItem:reply-timeout": 5,
        "sqs.SendMessage:reply-timeout": 1,
    }
    assert attempts(pipe) == {pipe.file_id(f): 1}
    assert pipe.locks() == []
    scenario.measure(faults=plan.counts())
    scenario.passed()


def test_ses_send_reply_lost_mails_at_least_once(pipe: Pipeline, scenario: Scenario) -> None:
    scenario.describe(
        "SES SendRawEmail reply lost",
        "SendRawEmail is accepted by SES, then its answer times out (once)",
        "at least once, as documented: botocore re-sends and SES accepts the same email a "
        "second time; the ledger marks each file notified once, notify keeps one outbox "
        "copy, and no later delivery sends it again",
    )
    files = [order_file(f"incoming/lost-ses-{i}.csv", f"LS{i}-", 20, invalid=1 + i) for i in (0, 1)]
    plan = FaultPlan.parse("ses.SendRawEmail=reply-timeout:1:1")
    pipe.upload(*files)
    run(pipe, plan)

    pipe.assert_end_state(newest(*files), expect_files(pipe, *files))
    assert plan.counts() == {"ses.SendRawEmail:reply-timeout": 1}
    accepted = pipe.ses_accepted()
    assert len(accepted) == 2, f"SES accepted {len(accepted)} emails, expected the one twice"
    assert accepted[0] == accepted[1]  # byte for byte: the same email again, not a new one
    scenario.measure(faults=plan.counts(), emails_ses_accepted=len(accepted))
    scenario.passed()


def test_sqs_delete_reply_lost(pipe: Pipeline, scenario: Scenario) -> None:
    scenario.describe(
        "SQS DeleteMessageBatch reply lost",
        "every DeleteMessageBatch of the worker is applied, then its answer times out",
        "botocore re-sends the delete and the messages are gone either way: each file "
        "processed once, one email each, queues and DLQs empty",
    )
    files = [
        order_file(f"incoming/lost-del-{i}.csv", f"LD{i}-", 30, invalid=i % 2) for i in range(3)
    ]
    plan = FaultPlan.parse("sqs.DeleteMessageBatch=reply-timeout")
    # Only the worker's own SQS client loses the replies; the handlers' clients are untouched.
    worker_clients = clients_with(plan, endpoint_url=pipe.stack.endpoint)
    pipe.upload(*files)
    drain(worker_clients, pipe.stack.settings, DRAIN_S, retry_after_s=0)

    pipe.assert_end_state(newest(*files), expect_files(pipe, *files))
    assert plan.total("reply-timeout") >= 2  # at least the ingest batch's and notify's
    assert set(attempts(pipe).values()) == {1}
    scenario.measure(faults=plan.counts())
    scenario.passed()


# -- retry timing: failed messages come back after the (scaled) backoff -------------------------


def run_as_deployed(pipe: Pipeline, plan: FaultPlan | None = None) -> Any:
    """Drain without overriding a failed message's visibility: the handler's backoff decides."""
    with contextlib.ExitStack() as stack:
        if plan is not None:
            stack.enter_context(handler_faults(plan))
        return drain(pipe.stack.clients, pipe.stack.settings, DRAIN_S)


def test_a_transient_failure_comes_back_after_the_backoff_not_the_visibility(
    pipe: Pipeline, scenario: Scenario
) -> None:
    schedule = LOCAL_TIMINGS.retry_schedule_s
    visibility = LOCAL_TIMINGS.ingest_visibility_s
    scenario.describe(
        "backoff timing: transient failure",
        "GetObject's body is cut by a connection reset on a file's first two attempts "
        f"(local schedule {'/'.join(map(str, schedule))} s, queue visibility {visibility} s)",
        "the message comes back after 1 s, then 2 s (its backoff), not after the queue's "
        "visibility timeout; the third attempt stores the file once",
    )
    good = order_file("incoming/backoff-transient.csv", "BT-", 40, invalid=1)
    pipe.upload(good)
    plan = FaultPlan.parse("s3.GetObject=stream-reset:1:2")
    report = run_as_deployed(pipe, plan)

    pipe.assert_end_state(newest(good), expect_files(pipe, good))
    assert plan.counts() == {"s3.GetObject:stream-reset": 2}
    assert attempts(pipe) == {pipe.file_id(good): 3}
    waited = schedule[0] + schedule[1]
    # With the queue's visibility it would be 2 x 12 s; with the backoff it is 1 + 2 s.
    assert waited <= report.seconds < visibility, report.seconds
    assert all(b.error is None for b in report.batches)  # failed records, never Lambda errors
    scenario.measure(faults=plan.counts(), attempts=3, seconds_to_outcome=round(report.seconds, 1))
    scenario.passed()


@pytest.mark.slow  # the local schedule's four waits: 1 + 2 + 4 + 8 s
def test_a_persistent_failure_reaches_the_dlq_after_the_whole_schedule(
    pipe: Pipeline, scenario: Scenario
) -> None:
    schedule = LOCAL_TIMINGS.retry_schedule_s
    scenario.describe(
        "backoff timing: persistent failure",
        "a file's only version is deleted after its event was sent; failed messages keep the "
        f"handler's backoff (local schedule {'/'.join(map(str, schedule))} s; AWS 30 s/2/8/30 min)",
        "5 attempts spaced by the schedule, then the DLQ at once (AWS: about 41 min); the "
        "ledger says FAILED and why",
    )
    gone = order_file("incoming/backoff-gone.csv", "BG-", 10)
    pipe.upload(gone)
    versions = pipe.s3.list_object_versions(Bucket=pipe.bucket, Prefix=gone.key)["Versions"]
    for v in versions:
        pipe.s3.delete_object(Bucket=pipe.bucket, Key=gone.key, VersionId=v["VersionId"])
    report = run_as_deployed(pipe)

    pipe.assert_end_state({}, {pipe.file_id(gone): "FAILED"}, ingest_dlq=1)
    entry = pipe.ledger()[pipe.file_id(gone)]
    assert int(entry["attempts"]) == 5
    assert "gone" in str(entry["last_error"])
    waited = sum(schedule)
    # Four waits, then straight to the DLQ: not 5 x the queue's 12 s visibility.
    assert waited <= report.seconds < waited + LOCAL_TIMINGS.ingest_visibility_s, report.seconds
    scenario.measure(attempts=5, seconds_to_dlq=round(report.seconds, 1))
    scenario.passed()


def test_a_busy_file_is_retried_without_a_lambda_error(pipe: Pipeline, scenario: Scenario) -> None:
    scenario.describe(
        "busy file without error",
        "a file's event arrives while another attempt holds the file (a live claim whose "
        "lease ends 3 s later)",
        "each receive reports the message in batchItemFailures (no Lambda error, so no "
        "ingest-errors alarm), it comes back after its backoff, and once the lease ends the "
        "file is taken over and stored once",
    )
    good = order_file("incoming/busy.csv", "BZ-", 30, invalid=1)
    pipe.upload(good)
    (body,) = pipe.take_events()
    (ref,) = parse_body(body)
    holder = DynamoLedger(pipe.ddb, pipe.stack.settings.files_table)
    assert holder.claim(ref, lease_s=3).owned  # the other attempt, which then dies
    pipe.deliver(body)
    report = run_as_deployed(pipe)

    pipe.assert_end_state(newest(good), expect_files(pipe, good))
    ingest_batches = [b for b in report.batches if b.queue == "ingest"]
    assert all(b.error is None for b in report.batches)
    deferred = sum(b.failed for b in ingest_batches)
    assert deferred >= 1  # it was busy at least once, and that was no error
    scenario.measure(busy_receives=deferred, lambda_errors=0, seconds=round(report.seconds, 1))
    scenario.passed()


# -- a file too big for one run ----------------------------------------------------------------

BIG_FILE_TIMEOUT_S = 3
SLOW_WRITE_S = 0.1  # per BatchWriteItem call: with 2 writer threads, at most 500 items/s
BIG_ROWS = 2_600  # more than two runs can write: each has under 3 s x 500 items/s


def test_a_big_file_resumes_over_several_runs_and_writes_each_order_once(
    pipe: Pipeline, scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario.describe(
        "resumed big file",
        f"a {BIG_ROWS:,}-row file (7 more rows invalid), function timeout "
        f"{BIG_FILE_TIMEOUT_S} s; each BatchWriteItem slowed by {SLOW_WRITE_S * 1000:.0f} ms "
        "(2 writer threads: at most 1,500 rows a run)",
        "each run stops before its deadline and pauses the file, its message back in 1 s; the "
        "next validates again and resumes from the ledger's checkpoint: PARTIAL after three or "
        "more runs, every order sent to BatchWriteItem once, exact counts and rejects CSV, "
        "one email",
    )
    big = order_file("incoming/big-resumed.csv", "BR-", BIG_ROWS, invalid=7)
    settings = pipe.stack.settings.with_(function_timeout_s=BIG_FILE_TIMEOUT_S, write_threads=2)
    sent: Counter[str] = Counter()
    lock = threading.Lock()

    def count_and_slow(params: dict[str, Any], **_: Any) -> None:
        keys = [
            _order_id(request)
            for requests in params.get("RequestItems", {}).values()
            for request in requests
        ]
        with lock:
            sent.update(keys)
        time.sleep(SLOW_WRITE_S)

    # The handlers' own (warm) clients, with a hook that counts every item they send.
    bootstrap.forget_warm_clients()
    monkeypatch.setenv("AWS_ENDPOINT_URL", pipe.stack.endpoint)
    events = bootstrap.warm_clients().dynamodb_bulk.meta.events
    events.register("before-parameter-build.dynamodb.BatchWriteItem", count_and_slow)
    try:
        pipe.upload(big)
        started = time.monotonic()
        report = drain(pipe.stack.clients, settings, DRAIN_S, handler_timeout_s=BIG_FILE_TIMEOUT_S)
        seconds = time.monotonic() - started
    finally:
        bootstrap.forget_warm_clients()

    pipe.assert_end_state(newest(big), expect_files(pipe, big))
    entry = pipe.ledger()[pipe.file_id(big)]
    runs = int(entry["attempts"])
    assert runs >= 3, f"the file took {runs} run(s); the scenario needs three or more"
    assert int(entry["pauses"]) == runs - 1
    assert sum(sent.values()) == BIG_ROWS, f"{sum(sent.values())} items sent for {BIG_ROWS}"
    assert set(sent.values()) == {1}, f"sent twice: {[k for k, n in sent.items() if n > 1][:5]}"
    assert set(sent) == set(big.ids)
    counts = {k: int(entry[k]) for k in ("rows", "valid", "invalid", "written", "rows_written")}
    assert counts == {
        "rows": BIG_ROWS + 7,
        "valid": BIG_ROWS,
        "invalid": 7,
        "written": BIG_ROWS,
        "rows_written": BIG_ROWS,
    }
    assert int(entry["rows_judged"]) == BIG_ROWS + 7
    assert "checkpoint" not in entry
    rejects = pipe.s3.get_object(Bucket=pipe.bucket, Key=rejects_key_for(big.key))
    lines = rejects["Body"].read().decode().splitlines()
    assert len(lines) == 1 + 7  # header + every rejected row, from the run that finished
    scenario.measure(
        runs=runs,
        items_sent=sum(sent.values()),
        ingest_messages=sum(b.received for b in report.batches if b.queue == "ingest"),
        drain_seconds=round(seconds, 1),
    )
    scenario.passed()


def _order_id(request: Any) -> str:
    body = json.loads(request) if isinstance(request, str) else request
    return str(body["PutRequest"]["Item"]["Order_Id"]["S"])


# -- any key S3 accepts ------------------------------------------------------------------------
# The key has a space, an en dash, a "+", accents, brackets and an emoji; it must reach the
# ledger, rejects/..., the email, status, replay and dlq exactly as it was written.

NON_ASCII_KEY = "incoming/Q4 orders – Zürich+Genève (final) 📦.csv"
COPY_KEY = "incoming/كشف الطلبات ٢ – copie de Genève+Zürich #2 ?v=1 📦.csv"
GONE_KEY = "incoming/שלום 'gone' %41 📦.csv"
ORDERS_HEADER = "Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total"
GOOD_ROWS = 5


def big_order_file(path: Path) -> int:
    """A CSV over the multipart threshold: 5 good orders, then rows with a bad date."""
    lines = [ORDERS_HEADER] + [f"K{i},C{i},1/2/23,Pending,{i}.50" for i in range(GOOD_ROWS)]
    bad = 0
    size = sum(len(line) + 1 for line in lines)
    while size <= MULTIPART_THRESHOLD + 512 * 1024:
        line = f"BAD{bad:07d},Customer-{bad:07d},not-a-date,Pending,1"
        lines.append(line)
        size += len(line) + 1
        bad += 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return bad


def run_cli_json(stack: Any, tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    env = {**stack.settings.to_env(), "AWS_ENDPOINT_URL": stack.endpoint}
    env["ORDERPIPE_STATE_DIR"] = str(tmp_path / "no-local-state")
    result = CliRunner().invoke(cli, [*args, "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.strip()]


@pytest.mark.slow  # a 9 MB file, its copy and a replay of it: about 10 s
def test_a_non_ascii_key_uploaded_multipart_and_copied_goes_through_unchanged(
    stack: Any, tmp_path: Path, scenario: Scenario
) -> None:
    scenario.describe(
        "non-ASCII and multipart keys",
        f"a 9 MB file named {NON_ASCII_KEY!r} uploaded with upload_file (multipart: two S3 "
        "events on the emulator), then copied server-side (ObjectCreated:Copy) to a "
        "right-to-left name with '#', '?' and '+'; a third such key deleted before ingest",
        "one outcome per key; the ledger, rejects/ (key percent-encoded in its metadata), the "
        "email, status, replay and dlq list all name each key exactly",
    )
    pipe = Pipeline(stack)
    s3, bucket = stack.clients.s3, stack.names.bucket
    source = tmp_path / "orders.csv"
    invalid = big_order_file(source)
    assert source.stat().st_size > MULTIPART_THRESHOLD

    # TransferConfig's defaults: multipart past 8 MB, here 2 parts.
    s3.upload_file(str(source), bucket, NON_ASCII_KEY, Config=TransferConfig())
    assert s3.head_object(Bucket=bucket, Key=NON_ASCII_KEY)["ETag"].strip('"').endswith("-2")
    # moto gives a copy of a multipart object the wrong CRC32 (any GetObject of it then fails
    # botocore's checksum check) unless the copy names its algorithm; S3 computes it right.
    s3.copy_object(
        Bucket=bucket,
        Key=COPY_KEY,
        CopySource={"Bucket": bucket, "Key": NON_ASCII_KEY},
        ChecksumAlgorithm="CRC32",
    )
    drain(stack.clients, stack.settings, 180)

    # One outcome per key, whatever number of events the upload produced.
    ledger = pipe.ledger()
    assert sorted(e["object_key"] for e in ledger.values()) == sorted([NON_ASCII_KEY, COPY_KEY])
    for entry in ledger.values():
        assert entry["status"] == "PARTIAL", entry.get("last_error")
        assert (int(entry["valid"]), int(entry["invalid"])) == (GOOD_ROWS, invalid)
        assert int(entry["attempts"]) == 1
    assert len(pipe.orders()) == GOOD_ROWS

    # rejects/… under the same name; the key in user metadata only percent-encoded.
    for key in (NON_ASCII_KEY, COPY_KEY):
        head = s3.head_object(Bucket=bucket, Key=rejects_key_for(key))
        assert head["Metadata"]["source-key"] == header_safe(key)
        assert head["ContentLength"] > MULTIPART_THRESHOLD  # stored by a multipart upload too

    # One email per file, naming the key exactly.
    mails = [_plain_text(m) for m in pipe.emails()]
    for key in (NON_ASCII_KEY, COPY_KEY):
        assert sum(f"s3://{bucket}/{key}" in text for text in mails) == 1, key

    # status, replay and dlq name it exactly too.
    (shown,) = run_cli_json(stack, tmp_path, "status", NON_ASCII_KEY)
    assert (shown["key"], shown["status"]) == (NON_ASCII_KEY, "PARTIAL")
    replayed = run_cli_json(stack, tmp_path, "replay", COPY_KEY, "--reason", "key check")
    assert [r["key"] for r in replayed] == [COPY_KEY]
    drain(stack.clients, stack.settings, 180)
    (again,) = run_cli_json(stack, tmp_path, "status", COPY_KEY)
    assert (again["key"], again["status"]) == (COPY_KEY, "PARTIAL")
    assert int(again["attempts"]) >= 2

    gone_body = f"{ORDERS_HEADER}\nG1,C1,1/2/23,Pending,1\n".encode()
    s3.put_object(Bucket=bucket, Key=GONE_KEY, Body=gone_body)
    for v in s3.list_object_versions(Bucket=bucket, Prefix=GONE_KEY)["Versions"]:
        s3.delete_object(Bucket=bucket, Key=GONE_KEY, VersionId=v["VersionId"])
    drain(stack.clients, stack.settings, 60, retry_after_s=0)
    (letter,) = run_cli_json(stack, tmp_path, "dlq", "list")
    assert letter["keys"] == [GONE_KEY]
    assert letter["ledger_status"] == ["FAILED"]
    assert letter["last_error"]
    scenario.measure(file_mb=round(source.stat().st_size / 2**20, 1), invalid_rows=invalid)
    scenario.passed()


def _plain_text(message: Any) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            return str(payload.decode(part.get_content_charset() or "utf-8"))
    return ""
