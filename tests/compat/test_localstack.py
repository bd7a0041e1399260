"""Scenarios moto cannot run: real version ids, the native DLQ redrive, EventBridge → SNS.

Each drives the real handlers (``core.local.worker.drain``) against S3, SQS, SNS, EventBridge
and SES on LocalStack and DynamoDB on moto, and checks the whole end state
(``Pipeline.assert_end_state``: orders, ledger, one email per file, queue depths).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from core.ops.alerts import GLUE_STATE_CHANGE
from core.release.template import load_template
from tests.compat.conftest import CompatPipeline, orderpipe, run
from tests.integration.pipeline_kit import newest, order_file

pytestmark = pytest.mark.integration


def test_pipeline_end_to_end(pipe: CompatPipeline, figures: Any) -> None:
    figures(scenario="pipeline: one upload → orders, ledger by version id, one email")
    f = order_file("incoming/Q4 orders+returns (final).csv", "P-", 200, invalid=3)
    pipe.upload(f)
    (body,) = pipe.take_events()
    record = json.loads(body)["Records"][0]["s3"]["object"]
    version = pipe.versions[(f.key, f.etag)]
    assert record["versionId"] == version
    # LocalStack percent-encodes the key; AWS would write "+" for each space. Both decode alike.
    assert record["key"] == "incoming/Q4%20orders%2Breturns%20%28final%29.csv"
    pipe.deliver(body)
    figures(upload_to_outcome_s=run(pipe))

    file_id = f"{pipe.bucket}/{f.key}#{version}"
    pipe.assert_end_state(newest(f), {file_id: "PARTIAL"})
    sent = pipe.ses_sent()
    assert len(sent) == 1, f"SES accepted {len(sent)} emails about this stack's files"
    (text,) = sent
    assert f"s3://{pipe.bucket}/{f.key} (version {version})" in text
    assert "3 rejected" in text
    figures(orders=len(f.ids), rejected=3, emails=len(sent))


def test_two_versions_of_one_key_newest_wins(pipe: CompatPipeline, figures: Any) -> None:
    figures(scenario="ordering: two versions of one key, the newer event delivered first")
    old = order_file("incoming/late.csv", "L-", 50, invalid=1, variant=1)
    new = order_file("incoming/late.csv", "L-", 40, variant=2)  # L-00040..49 only in the old
    pipe.upload(old)
    time.sleep(0.01)  # distinct event times
    pipe.upload(new)
    # A standard queue keeps no order: the events are told apart by their version ids.
    by_version = {
        json.loads(b)["Records"][0]["s3"]["object"]["versionId"]: b for b in pipe.take_events(2)
    }
    versions = [pipe.versions[(f.key, f.etag)] for f in (old, new)]
    assert sorted(by_version) == sorted(versions)
    assert versions[0] != versions[1]
    old_event, new_event = (by_version[v] for v in versions)
    records = [json.loads(b)["Records"][0] for b in (old_event, new_event)]
    sequencers = {r["s3"]["object"]["sequencer"] for r in records}
    figures(sequencers="distinct" if len(sequencers) == 2 else "one value for both")
    pipe.deliver(new_event)
    seconds = run(pipe)
    pipe.deliver(old_event)
    seconds += run(pipe)
    figures(processing_s=round(seconds, 2))

    pipe.assert_end_state(
        newest(old, new), {pipe.file_id(old): "PARTIAL", pipe.file_id(new): "SUCCEEDED"}
    )


def test_dead_letters_redriven_by_the_native_move_task(
    pipe: CompatPipeline, tmp_path: Path, figures: Any
) -> None:
    figures(scenario="DLQ: a file fails 5 times, then `orderpipe dlq redrive` (native)")
    f = order_file("incoming/dead.csv", "X-", 30)
    pipe.upload(f)
    (body,) = pipe.take_events()  # on the queue before the worker looks
    pipe.deliver(body)
    # A bad deploy: the function names a table that does not exist. Every attempt fails.
    broken = pipe.stack.settings.with_(orders_table=pipe.stack.settings.orders_table + "-gone")
    run(pipe, broken)
    names = pipe.stack.names
    assert pipe.queue_depth(names.ingest_dlq) == 1
    assert pipe.orders() == {}

    listed = orderpipe(pipe, tmp_path, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert pipe.file_id(f) in listed.stdout
    started = time.monotonic()
    moved = orderpipe(pipe, tmp_path, "dlq", "redrive", "--json")
    figures(redrive_s=round(time.monotonic() - started, 2))
    assert moved.returncode == 0, moved.stderr
    result = json.loads(moved.stdout)
    assert result["method"] == "native", result  # StartMessageMoveTask, not the copy fallback
    assert result["moved"] == 1, result

    figures(after_redrive_s=run(pipe))  # the fixed deploy
    pipe.assert_end_state(f.orders, {pipe.file_id(f): "SUCCEEDED"})
    figures(attempts=int(pipe.ledger()[pipe.file_id(f)].get("attempts", 0)))


def test_glue_failure_rule_reaches_the_alerts_topic(
    pipe: CompatPipeline, tmp_path: Path, figures: Any
) -> None:
    figures(scenario="alerts: EventBridge rule → SNS topic → `orderpipe alerts`")
    names, settings = pipe.stack.names, pipe.stack.settings
    rule = load_template()["Resources"]["ReconcileFailedRule"]["Properties"]
    pattern = rule["EventPattern"]
    assert pattern["detail"]["jobName"] == [{"Ref": "ReconcileJob"}]
    pattern["detail"]["jobName"] = [names.glue_job]
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Ref": "AlertsTopic"}
    events = pipe.stack.clients.events
    rule_name = names.glue_job + "-failed"
    rule_arn = events.put_rule(Name=rule_name, EventPattern=json.dumps(pattern), State="ENABLED")[
        "RuleArn"
    ]
    pipe.stack.clients.sns.set_topic_attributes(
        TopicArn=settings.alerts_topic_arn,
        AttributeName="Policy",
        AttributeValue=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sns:Publish",
                        "Resource": settings.alerts_topic_arn,
                        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
                    }
                ],
            }
        ),
    )
    events.put_targets(
        Rule=rule_name, Targets=[{"Id": target["Id"], "Arn": settings.alerts_topic_arn}]
    )

    def glue_event(job: str, state: str) -> dict[str, Any]:
        detail = {"jobName": job, "state": state, "jobRunId": "jr_1", "message": "out of memory"}
        return {"Source": "aws.glue", "DetailType": GLUE_STATE_CHANGE, "Detail": json.dumps(detail)}

    started = time.monotonic()
    got = events.put_events(
        Entries=[
            glue_event(names.glue_job, "SUCCEEDED"),  # not an alert
            glue_event("someone-elses-job", "FAILED"),  # not ours
            glue_event(names.glue_job, "FAILED"),
        ]
    )
    assert got["FailedEntryCount"] == 0, got
    inbox = pipe.sqs.get_queue_url(QueueName=names.alerts_inbox_queue)["QueueUrl"]
    while time.monotonic() - started < 30:
        depth = pipe.sqs.get_queue_attributes(
            QueueUrl=inbox, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        if int(depth):
            break
        time.sleep(0.2)
    figures(put_events_to_inbox_s=round(time.monotonic() - started, 2))
    time.sleep(1)  # anything the rule wrongly let through has arrived by now

    listed = orderpipe(pipe, tmp_path, "alerts", "--json", "--clear")
    assert listed.returncode == 0, listed.stderr
    alerts = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(a["kind"], a["summary"]) for a in alerts] == [
        ("glue-job", f"Glue job {names.glue_job} FAILED: out of memory")
    ]
    assert orderpipe(pipe, tmp_path, "alerts", "--json").stdout == ""  # --clear emptied it


def test_multipart_upload_and_server_side_copy(pipe: CompatPipeline, figures: Any) -> None:
    figures(scenario="multipart upload and server-side copy: one event each, by version id")
    f = order_file("incoming/multi part.csv", "M-", 120, invalid=1)
    source = pipe.stack.settings.outbox_dir + "/multi part.csv"
    Path(source).parent.mkdir(parents=True, exist_ok=True)
    Path(source).write_bytes(f.body)
    # What `aws s3 cp` and upload_file do past their threshold (here: every file).
    pipe.s3.upload_file(source, pipe.bucket, f.key, Config=TransferConfig(multipart_threshold=1))
    copy_key = "incoming/copied/multi part.csv"
    copied = pipe.s3.copy_object(
        Bucket=pipe.bucket, Key=copy_key, CopySource={"Bucket": pipe.bucket, "Key": f.key}
    )
    bodies = pipe.take_events(2)  # one event each (moto sends two for a multipart upload)
    records = {
        r["eventName"]: r["s3"]["object"] for r in (json.loads(b)["Records"][0] for b in bodies)
    }
    assert sorted(records) == ["ObjectCreated:CompleteMultipartUpload", "ObjectCreated:Copy"]
    assert len(bodies) == 2
    head = pipe.s3.head_object(Bucket=pipe.bucket, Key=f.key)
    versions = [
        records["ObjectCreated:CompleteMultipartUpload"]["versionId"],
        records["ObjectCreated:Copy"]["versionId"],
    ]
    assert versions == [head["VersionId"], copied["VersionId"]]
    for body in bodies:
        pipe.deliver(body)
    figures(processing_s=run(pipe))

    pipe.assert_end_state(
        f.orders,
        {
            f"{pipe.bucket}/{f.key}#{versions[0]}": "PARTIAL",
            f"{pipe.bucket}/{copy_key}#{versions[1]}": "PARTIAL",
        },
    )
    (text,) = pipe.ses_sent()  # notify batches both files into one email
    for key, version in ((f.key, versions[0]), (copy_key, versions[1])):
        assert f"s3://{pipe.bucket}/{key} (version {version})" in text
