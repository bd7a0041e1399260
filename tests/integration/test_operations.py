"""Operating scenarios on a local stack: dead letters, replay, reconcile, alerts, dry runs.

Each drives the real handlers in-process through the worker's ``drain`` and the real
``orderpipe`` commands through click, against a moto server over HTTP.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from core import bootstrap
from core.cli import cli
from core.local.reconcile_schedule import ReconcileSchedule
from core.local.worker import drain
from core.validation.engine import validate
from core.validation.schema import Schema

pytestmark = pytest.mark.integration

HEADER = "Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"
VALID = (
    HEADER
    + "A1,C1,2024-01-05,Pending,10.00\nA2,C2,5/1/24,Completed,20.50\n"
    + "A3,C1,2024-02-29,Inprogress,0\n"
)
# Two good rows and one with a status the first schema does not know.
PARTIAL = (
    HEADER
    + "P1,C1,2024-01-05,Pending,1.00\nP2,C2,2024-01-06,Shipped,2.00\n"
    + "P3,C3,2024-01-07,Completed,3.00\n"
)


def run_cli(stack: Any, tmp_path: Path, *args: str) -> Result:
    env = {**stack.settings.to_env(), "AWS_ENDPOINT_URL": stack.endpoint}
    env["ORDERPIPE_STATE_DIR"] = str(tmp_path / "no-local-state")
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def json_lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.strip()]


def queue_url(stack: Any, name: str) -> str:
    return str(stack.clients.sqs.get_queue_url(QueueName=name)["QueueUrl"])


def depth(stack: Any, name: str) -> int:
    attrs = stack.clients.sqs.get_queue_attributes(
        QueueUrl=queue_url(stack, name),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def scan(stack: Any, table: str) -> list[dict[str, Any]]:
    items = stack.clients.dynamodb.scan(TableName=table)["Items"]
    return sorted(items, key=lambda i: json.dumps(i, sort_keys=True))


def orders(stack: Any) -> dict[str, dict[str, Any]]:
    return {i["Order_Id"]["S"]: i for i in scan(stack, stack.names.orders_table)}


def ledger(stack: Any, key: str) -> dict[str, Any]:
    items = [
        i for i in scan(stack, stack.names.files_table) if i.get("object_key", {}).get("S") == key
    ]
    assert len(items) == 1, items
    return items[0]


def upload(stack: Any, key: str, body: str) -> None:
    stack.clients.s3.put_object(Bucket=stack.names.bucket, Key=key, Body=body.encode())


@pytest.mark.slow  # five failed receives, then the redrive: about 15 s
def test_poison_message_is_listed_redriven_after_the_fix_and_succeeds_once(stack, tmp_path) -> None:
    upload(stack, "incoming/poison.csv", VALID)
    # The cause: ingest deployed with a wrong orders table name. Every attempt fails.
    broken = stack.settings.with_(orders_table=stack.names.orders_table + "-typo")
    drain(stack.clients, broken, timeout_s=60, retry_after_s=0)
    assert depth(stack, stack.names.ingest_queue) == 0
    assert depth(stack, stack.names.ingest_dlq) == 1
    entry = ledger(stack, "incoming/poison.csv")
    assert entry["status"]["S"] == "FAILED"

    (row,) = json_lines(run_cli(stack, tmp_path, "dlq", "list", "--json"))
    assert row["keys"] == ["incoming/poison.csv"]
    assert row["size"] == len(VALID)
    assert "ResourceNotFound" in row["last_error"]
    assert row["receive_count"] >= 5
    assert row["reached_dlq_at"] >= row["sent_at"]
    assert depth(stack, stack.names.ingest_dlq) == 1  # listing consumed nothing
    piped = run_cli(stack, tmp_path, "dlq")  # not a terminal: one tab-separated line each
    assert piped.output.split("\t")[:2] == [row["id"], "incoming/poison.csv"]

    shown = json_lines(run_cli(stack, tmp_path, "dlq", "show", row["id"], "--json"))[0]
    assert shown["body"]["Records"][0]["s3"]["object"]["size"] == len(VALID)
    assert shown["ledger"]["incoming/poison.csv"][0]["status"] == "FAILED"

    # The fix is deployed; the dead letter goes back and is processed exactly once.
    moved = run_cli(stack, tmp_path, "dlq", "redrive")
    assert "Moved 1 message(s)" in moved.output, moved.output
    assert depth(stack, stack.names.ingest_dlq) == 0
    drain(stack.clients, stack.settings, timeout_s=60)
    assert ledger(stack, "incoming/poison.csv")["status"]["S"] == "SUCCEEDED"
    assert sorted(orders(stack)) == ["A1", "A2", "A3"]
    assert orders(stack)["A2"]["Order_Total"]["N"] in ("20.5", "20.50")
    assert depth(stack, stack.names.ingest_queue) == 0
    assert depth(stack, stack.names.ingest_dlq) == 0
    assert json_lines(run_cli(stack, tmp_path, "dlq", "list", "--json")) == []


def _ingest_with(schema: Schema) -> Any:
    """The real ingest service with another schema: the 'fixed rule' being deployed."""
    from core.aws.settings import Settings
    from core.pipeline.ingest import handle_record

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        import os

        clients = bootstrap.clients(os.environ["AWS_ENDPOINT_URL"])
        service = bootstrap.ingest(Settings.from_env(), clients)
        service.validate = functools.partial(validate, schema=schema)  # type: ignore[assignment]
        failed = []
        for record in event["Records"]:
            try:
                handle_record(service, record["body"], record["receiptHandle"], clients.sqs)
            except Exception:
                failed.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failed}

    return handler


def test_partial_file_replayed_after_a_schema_change_rewrites_its_orders_once(
    stack, tmp_path
) -> None:
    upload(stack, "incoming/partial.csv", PARTIAL)
    drain(stack.clients, stack.settings, timeout_s=60)
    before = ledger(stack, "incoming/partial.csv")
    assert before["status"]["S"] == "PARTIAL"
    assert sorted(orders(stack)) == ["P1", "P3"]

    (item,) = json_lines(
        run_cli(stack, tmp_path, "replay", "partial.csv", "--reason", "allow Shipped", "--json")
    )
    assert item["action"] == "replayed"
    # The replay message arrives twice (at-least-once delivery): it must run once only.
    sqs = stack.clients.sqs
    ingest = stack.settings.ingest_queue_url
    (message,) = sqs.receive_message(QueueUrl=ingest, VisibilityTimeout=0)["Messages"]
    sqs.send_message(QueueUrl=ingest, MessageBody=message["Body"])

    doc = json.loads((Path("core/validation/schemas/orders.json")).read_text())
    doc["columns"][3]["allowed"].append("Shipped")
    drain(
        stack.clients,
        stack.settings,
        timeout_s=60,
        handlers={"ingest": _ingest_with(Schema.from_dict(doc))},
    )
    after = ledger(stack, "incoming/partial.csv")
    assert after["status"]["S"] == "SUCCEEDED"
    assert int(after["valid"]["N"]) == 3
    assert int(after["attempts"]["N"]) == int(before["attempts"]["N"]) + 1  # ran once
    assert int(after["replays"]["N"]) == 1
    assert after["replay_log"]["L"][0]["M"]["reason"]["S"] == "allow Shipped"
    assert sorted(orders(stack)) == ["P1", "P2", "P3"]
    assert orders(stack)["P2"]["Order_Status"]["S"] == "Shipped"

    # Now SUCCEEDED: a second replay is skipped unless forced.
    (again,) = json_lines(run_cli(stack, tmp_path, "replay", "partial.csv", "--json"))
    assert again["action"] == "skipped"


def test_lost_event_is_found_by_reconcile_and_processed(stack, tmp_path) -> None:
    upload(stack, "incoming/lost.csv", VALID)
    stack.clients.sqs.purge_queue(QueueUrl=stack.settings.ingest_queue_url)  # the event is lost
    assert depth(stack, stack.names.ingest_queue) == 0

    (report,) = json_lines(run_cli(stack, tmp_path, "reconcile", "--grace", "0s", "--json"))
    assert report["counts"]["missing"] == 1
    assert report["missing"][0]["key"] == "incoming/lost.csv"
    assert report["requeued"] == 1
    stored = stack.clients.s3.get_object(Bucket=stack.names.bucket, Key=report["report_key"])
    assert json.loads(stored["Body"].read())["run_id"] == report["run_id"]

    drain(stack.clients, stack.settings, timeout_s=60)
    assert ledger(stack, "incoming/lost.csv")["status"]["S"] == "SUCCEEDED"
    assert sorted(orders(stack)) == ["A1", "A2", "A3"]

    alerts = json_lines(run_cli(stack, tmp_path, "alerts", "--json"))
    assert [a["kind"] for a in alerts] == ["reconcile"]
    assert "1 missing" in alerts[0]["summary"]

    (second,) = json_lines(run_cli(stack, tmp_path, "reconcile", "--grace", "0s", "--json"))
    assert second["counts"] == {"missing": 0, "stuck": 0, "drift": 0, "failed": 0}


def test_reconcile_finds_drift_between_ledger_and_orders(stack, tmp_path) -> None:
    upload(stack, "incoming/drift.csv", VALID)
    drain(stack.clients, stack.settings, timeout_s=60)
    stack.clients.dynamodb.delete_item(
        TableName=stack.names.orders_table, Key={"Order_Id": {"S": "A2"}}
    )
    (report,) = json_lines(run_cli(stack, tmp_path, "reconcile", "--json"))
    (drift,) = report["drift"]
    assert (drift["key"], drift["valid"], drift["stored"]) == ("incoming/drift.csv", 3, 2)


def test_orders_reuploaded_under_a_new_name_are_not_drift_but_a_loss_is(stack, tmp_path) -> None:
    upload(stack, "incoming/orders_v1.csv", VALID + "A4,C4,2024-03-01,Pending,4.00\n")
    drain(stack.clients, stack.settings, timeout_s=60)
    upload(stack, "incoming/orders_v2.csv", VALID)  # the same orders A1-A3 under a new name
    drain(stack.clients, stack.settings, timeout_s=60)
    v1, v2 = ledger(stack, "incoming/orders_v1.csv"), ledger(stack, "incoming/orders_v2.csv")
    assert v1["taken"]["M"] == {v2["file_id"]["S"]: {"N": "3"}}
    held = {k: i["source_file_id"]["S"] for k, i in orders(stack).items()}
    assert held == {
        "A1": v2["file_id"]["S"],
        "A2": v2["file_id"]["S"],
        "A3": v2["file_id"]["S"],
        "A4": v1["file_id"]["S"],
    }

    (report,) = json_lines(run_cli(stack, tmp_path, "reconcile", "--dry-run", "--json"))
    assert report["counts"]["drift"] == 0, report["drift"]

    # A real loss: A4, which no newer upload holds, disappears.
    stack.clients.dynamodb.delete_item(
        TableName=stack.names.orders_table, Key={"Order_Id": {"S": "A4"}}
    )
    (report,) = json_lines(run_cli(stack, tmp_path, "reconcile", "--dry-run", "--json"))
    (drift,) = report["drift"]
    assert (drift["key"], drift["written"], drift["taken"], drift["stored"]) == (
        "incoming/orders_v1.csv",
        4,
        3,
        0,
    )


def test_a_failed_reconcile_run_produces_an_alert(stack, tmp_path) -> None:
    broken = stack.settings.with_(files_table=stack.names.files_table + "-missing")
    schedule = ReconcileSchedule(stack.clients, broken, every_s=3600)
    assert schedule.run_once() is None
    assert schedule.failures == 1
    alerts = json_lines(run_cli(stack, tmp_path, "alerts", "--json"))
    (alert,) = alerts
    assert alert["kind"] == "glue-job"
    assert alert["detail"]["detail-type"] == "Glue Job State Change"
    assert alert["detail"]["detail"]["state"] == "FAILED"
    assert alert["detail"]["detail"]["jobName"] == stack.names.glue_job
    assert "ResourceNotFound" in alert["summary"]
    # --clear empties the inbox
    json_lines(run_cli(stack, tmp_path, "alerts", "--clear", "--json"))
    assert json_lines(run_cli(stack, tmp_path, "alerts", "--json")) == []


def test_local_alarms_publish_each_state_change_once_and_alerts_shows_them(stack, tmp_path) -> None:
    from core.local.queue_alarms import LocalAlarms, template_alarms

    env = stack.names.ingest_queue.removeprefix("orderpipe-").removesuffix("-ingest")
    stack.clients.sqs.purge_queue(QueueUrl=stack.settings.ingest_queue_url)  # s3:TestEvent
    ticks = iter([0.0, 5.0, 100.0])
    alarms = LocalAlarms(
        stack.clients.sqs,
        stack.clients.sns,
        stack.settings.alerts_topic_arn,
        template_alarms(stack.clients.sqs, stack.names, env, backlog_s=60),
        clock=lambda: next(ticks, 300.0),
    )
    assert alarms.evaluate_once() == []  # a new stack: every alarm OK, nothing published

    dlq = queue_url(stack, stack.names.ingest_dlq)
    stack.clients.sqs.send_message(QueueUrl=dlq, MessageBody="poison")
    stack.clients.sqs.send_message(QueueUrl=stack.settings.ingest_queue_url, MessageBody="{}")
    first = alarms.evaluate_once()  # the DLQ alarm fires; the backlog is 0 s old
    assert [(n["AlarmName"], n["NewStateValue"]) for n in first] == [
        (f"orderpipe-{env}-ingest-dlq-not-empty", "ALARM")
    ]
    assert alarms.evaluate_once() == []  # still ALARM: not published again
    late = alarms.evaluate_once()  # the ingest queue has held a message for 100 s > 60 s
    assert [(n["AlarmName"], n["NewStateValue"]) for n in late] == [
        (f"orderpipe-{env}-ingest-backlog", "ALARM")
    ]

    shown = json_lines(run_cli(stack, tmp_path, "alerts", "--json"))
    assert [a["kind"] for a in shown] == ["alarm", "alarm"]
    assert shown[0]["summary"].startswith(f"alarm orderpipe-{env}-ingest-dlq-not-empty is ALARM")

    run_cli(stack, tmp_path, "dlq", "purge", "--yes")
    sqs = stack.clients.sqs
    for message in sqs.receive_message(QueueUrl=stack.settings.ingest_queue_url).get(
        "Messages", []
    ):
        sqs.delete_message(
            QueueUrl=stack.settings.ingest_queue_url, ReceiptHandle=message["ReceiptHandle"]
        )
    back = alarms.evaluate_once()
    assert sorted((n["AlarmName"], n["OldStateValue"], n["NewStateValue"]) for n in back) == [
        (f"orderpipe-{env}-ingest-backlog", "ALARM", "OK"),
        (f"orderpipe-{env}-ingest-dlq-not-empty", "ALARM", "OK"),
    ]


def _state(stack: Any) -> dict[str, Any]:
    names = stack.names
    queues = (
        names.ingest_queue,
        names.ingest_dlq,
        names.notify_queue,
        names.notify_dlq,
        names.alerts_inbox_queue,
    )
    listing = stack.clients.s3.list_object_versions(Bucket=names.bucket)
    return {
        "queues": {q: depth(stack, q) for q in queues},
        "files": scan(stack, names.files_table),
        "orders": scan(stack, names.orders_table),
        "objects": sorted((v["Key"], v["VersionId"]) for v in listing.get("Versions", [])),
    }


def test_every_dry_run_changes_nothing(stack, tmp_path) -> None:
    upload(stack, "incoming/partial.csv", PARTIAL)
    drain(stack.clients, stack.settings, timeout_s=60)
    stack.clients.sqs.purge_queue(QueueUrl=stack.settings.notify_queue_url)
    upload(stack, "incoming/lost.csv", VALID)
    stack.clients.sqs.purge_queue(QueueUrl=stack.settings.ingest_queue_url)
    dlq = queue_url(stack, stack.names.ingest_dlq)
    stack.clients.sqs.send_message(QueueUrl=dlq, MessageBody='{"not": "an event"}')
    before = _state(stack)

    redrive = run_cli(stack, tmp_path, "dlq", "redrive", "--dry-run")
    assert "would move 0 message(s)" in redrive.output
    assert "Would leave 1 that can never succeed" in redrive.output
    purge = run_cli(stack, tmp_path, "dlq", "purge", "--dry-run")
    assert "would delete 1 message(s)" in purge.output
    (replayed,) = json_lines(
        run_cli(stack, tmp_path, "replay", "--status", "PARTIAL", "--dry-run", "--json")
    )
    assert replayed["action"] == "would replay"
    (report,) = json_lines(
        run_cli(stack, tmp_path, "reconcile", "--grace", "0s", "--dry-run", "--json")
    )
    assert report["counts"]["missing"] == 1
    assert report["requeued"] == 0

    assert _state(stack) == before


def test_purge_needs_yes_and_says_how_many(stack, tmp_path) -> None:
    dlq = queue_url(stack, stack.names.notify_dlq)
    for n in range(3):
        stack.clients.sqs.send_message(QueueUrl=dlq, MessageBody=f"junk {n}")
    refused = CliRunner().invoke(
        cli,
        ["dlq", "purge", "--queue", "notify"],
        env={**stack.settings.to_env(), "AWS_ENDPOINT_URL": stack.endpoint},
    )
    assert refused.exit_code == 2
    assert "--yes" in refused.output
    done = run_cli(stack, tmp_path, "dlq", "purge", "--queue", "notify", "--yes")
    assert "Deleted 3 message(s)" in done.output
    assert depth(stack, stack.names.notify_dlq) == 0


def _event_body(key: str, bucket: str = "b") -> str:
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": "e1", "size": 5}},
    }
    return json.dumps({"Records": [record]})


def test_dead_letters_by_short_id_shown_for_people_and_the_hopeless_left_alone(
    stack, tmp_path
) -> None:
    dlq = queue_url(stack, stack.names.ingest_dlq)
    sqs = stack.clients.sqs
    junk = sqs.send_message(QueueUrl=dlq, MessageBody="hello, not an event")["MessageId"]
    upload(stack, "incoming/here.csv", VALID)
    stack.clients.sqs.purge_queue(QueueUrl=stack.settings.ingest_queue_url)
    body = _event_body("incoming/here.csv", stack.names.bucket)
    event = sqs.send_message(QueueUrl=dlq, MessageBody=body)["MessageId"]
    rows = {r["id"]: r for r in json_lines(run_cli(stack, tmp_path, "dlq", "list", "--json"))}
    # No dead letter goes without a reason, even with nothing in the ledger.
    assert rows[junk]["last_error"] == (
        "not an S3 event (nor a replay of one): ingest cannot read it"
    )
    assert rows[event]["last_error"].startswith("no ledger entry")

    shown = run_cli(stack, tmp_path, "dlq", "show", junk[:6])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines() == [
        f"{junk} in the ingest dead-letter queue",
        "  what:     a 19-byte message: hello, not an event",
        *[
            line
            for line in shown.output.splitlines()
            if line.startswith(("  received", "  in DLQ"))
        ],
        "  why:      not an S3 event (nor a replay of one): ingest cannot read it",
        f"  redrive:  leaves it here, it can never succeed; `orderpipe dlq purge {junk[:8]}` "
        "deletes it",
    ]
    event_view = run_cli(stack, tmp_path, "dlq", "show", event[:8]).output
    assert f"  what:     S3 event for s3://{stack.names.bucket}/incoming/here.csv, 5 bytes" in (
        event_view
    )
    assert "sends it back to the ingest queue" in event_view
    # An event for an object that is gone can never succeed either.
    gone = sqs.send_message(QueueUrl=dlq, MessageBody=_event_body("incoming/gone.csv"))["MessageId"]
    assert "its object is gone from the bucket" in (
        run_cli(stack, tmp_path, "dlq", "show", gone[:8]).output
    )

    # One message moves, the hopeless one stays and is named.
    moved = run_cli(stack, tmp_path, "dlq", "redrive")
    assert moved.output.splitlines()[0] == (
        "Moved 1 message(s) back to the ingest queue (copy, send before delete)."
    )
    assert "Left 2 that can never succeed" in moved.output
    left = json_lines(run_cli(stack, tmp_path, "dlq", "list", "--json"))
    assert sorted(r["id"] for r in left) == sorted([junk, gone])
    # Only when asked is it deleted: by --purge-unredrivable or by its id.
    sqs.send_message(QueueUrl=dlq, MessageBody="more junk")
    purged = json_lines(
        run_cli(stack, tmp_path, "dlq", "redrive", "--purge-unredrivable", "--json")
    )[0]
    assert (purged["moved"], len(purged["purged"]), purged["left"]) == (0, 3, [])
    assert depth(stack, stack.names.ingest_dlq) == 0

    other = sqs.send_message(QueueUrl=dlq, MessageBody="x")["MessageId"]
    kept = sqs.send_message(QueueUrl=dlq, MessageBody=body)["MessageId"]
    deleted = run_cli(stack, tmp_path, "dlq", "purge", other[:10])
    assert deleted.output == f"Deleted {other} from the ingest dead-letter queue.\n"
    assert [r["id"] for r in json_lines(run_cli(stack, tmp_path, "dlq", "list", "--json"))] == [
        kept
    ]


def test_an_ambiguous_id_prefix_is_one_line_naming_the_candidates(stack, tmp_path) -> None:
    dlq = queue_url(stack, stack.names.ingest_dlq)
    ids = [
        stack.clients.sqs.send_message(QueueUrl=dlq, MessageBody=f"m{n}")["MessageId"]
        for n in range(12)
    ]
    first = ids[0][0]
    sharing = [i for i in ids if i.startswith(first)]
    result = run_cli(stack, tmp_path, "dlq", "show", first)
    if len(sharing) == 1:
        assert result.exit_code == 0
        return
    assert result.exit_code == 1
    assert len(result.output.splitlines()) == 1
    assert result.output.startswith(
        f"Error: {first} matches {len(sharing)} messages in the ingest dead-letter queue ("
    )


def test_glue_job_entry_runs_reconcile_from_job_arguments(stack, capsys) -> None:
    from handlers.reconcile_job import main

    upload(stack, "incoming/lost-in-glue.csv", VALID)
    stack.clients.sqs.purge_queue(QueueUrl=stack.settings.ingest_queue_url)
    s = stack.settings
    argv = [
        "reconcile_job.py",
        "--JOB_ID",
        "j_1",
        "--bucket",
        s.bucket,
        "--files_table",
        s.files_table,
        "--orders_table",
        s.orders_table,
        "--ingest_queue_url",
        s.ingest_queue_url,
        "--alerts_topic_arn",
        s.alerts_topic_arn,
        "--grace_minutes",
        "0",
        "--endpoint_url",
        stack.endpoint,
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["requeued"] == 1
    assert report["missing"][0]["key"] == "incoming/lost-in-glue.csv"
    assert depth(stack, stack.names.ingest_queue) == 1


def test_notify_dead_letter_shows_the_notify_error(stack, tmp_path) -> None:
    from core.pipeline.notice import FileNotice

    upload(stack, "incoming/partial.csv", PARTIAL)
    drain(stack.clients, stack.settings, timeout_s=60)
    entry = ledger(stack, "incoming/partial.csv")
    file_id = entry["file_id"]["S"]
    error = "MessageRejected: Email address is not verified"
    stack.clients.dynamodb.update_item(
        TableName=stack.names.files_table,
        Key={"file_id": {"S": file_id}},
        UpdateExpression="SET notify_error = :e",
        ExpressionAttributeValues={":e": {"S": error}},
    )
    notice = FileNotice(
        file_id=file_id,
        bucket=stack.names.bucket,
        key="incoming/partial.csv",
        version=entry["version"]["S"],
        status="PARTIAL",
        rows=3,
        valid=2,
        invalid=1,
    )
    dlq = queue_url(stack, stack.names.notify_dlq)
    stack.clients.sqs.send_message(QueueUrl=dlq, MessageBody=notice.to_json())
    (row,) = json_lines(run_cli(stack, tmp_path, "dlq", "list", "--queue", "notify", "--json"))
    assert row["keys"] == ["incoming/partial.csv"]
    assert row["last_error"] == error
    assert row["ledger_status"] == ["PARTIAL"]


def test_stuck_processing_file_is_requeued_by_reconcile_and_taken_over(stack, tmp_path) -> None:
    import time

    from core.pipeline.events import parse_body

    upload(stack, "incoming/stuck.csv", VALID)
    (message,) = stack.clients.sqs.receive_message(
        QueueUrl=stack.settings.ingest_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", [])[-1:]
    stack.clients.sqs.purge_queue(QueueUrl=stack.settings.ingest_queue_url)
    (ref,) = parse_body(message["Body"])
    # An attempt claims the file and dies: its one-second lease is never renewed.
    claim = bootstrap.ledger(stack.settings, stack.clients).claim(ref, 1)
    assert claim.owned
    time.sleep(2.1)

    (report,) = json_lines(run_cli(stack, tmp_path, "reconcile", "--json"))
    assert [s["key"] for s in report["stuck"]] == ["incoming/stuck.csv"]
    assert report["counts"]["missing"] == 0
    drain(stack.clients, stack.settings, timeout_s=60)
    after = ledger(stack, "incoming/stuck.csv")
    assert after["status"]["S"] == "SUCCEEDED"
    assert int(after["attempts"]["N"]) == 2
    assert sorted(orders(stack)) == ["A1", "A2", "A3"]


def test_expected_errors_are_one_line_and_non_zero(stack, tmp_path) -> None:
    unknown = run_cli(stack, tmp_path, "dlq", "show", "no-such-id")
    assert unknown.exit_code == 1
    assert unknown.output == (
        "Error: no message in the ingest dead-letter queue starts with no-such-id\n"
    )

    gone = run_cli(stack, tmp_path, "replay", "nope.csv")
    assert gone.exit_code == 1
    assert gone.stderr == "Error: not in the bucket: incoming/nope.csv\n"
    assert gone.stdout == ""  # no table of one skipped row, no "0 file(s) re-enqueued"

    nothing = run_cli(stack, tmp_path, "replay")
    assert nothing.exit_code == 2
    assert "name the files" in nothing.output

    bad_status = run_cli(stack, tmp_path, "replay", "--status", "DONE")
    assert bad_status.exit_code == 2
    assert "unknown status 'DONE'" in bad_status.output

    bad_window = run_cli(stack, tmp_path, "reconcile", "--window", "soon")
    assert bad_window.exit_code == 2
    assert "not a duration" in bad_window.output

    missing_table = CliRunner().invoke(
        cli,
        ["reconcile", "--json"],
        env={
            **stack.settings.with_(files_table="nope").to_env(),
            "AWS_ENDPOINT_URL": stack.endpoint,
            "ORDERPIPE_STATE_DIR": str(tmp_path / "none"),
        },
    )
    assert missing_table.exit_code == 1
    assert "ResourceNotFound" in missing_table.output
    assert "Traceback" not in missing_table.output


def test_commands_without_a_stack_say_so(tmp_path) -> None:
    env = {"ORDERPIPE_STATE_DIR": str(tmp_path), "ORDERPIPE_BUCKET": ""}
    for args in (["dlq", "list"], ["replay", "x.csv"], ["reconcile"], ["alerts"]):
        result = CliRunner().invoke(cli, args, env=env)
        assert result.exit_code == 1, args
        assert "no stack found" in result.output


def test_replay_of_a_failed_file_delivered_twice_runs_once(stack, tmp_path) -> None:
    from core.pipeline.events import parse_body

    upload(stack, "incoming/failed.csv", VALID)
    (message,) = stack.clients.sqs.receive_message(
        QueueUrl=stack.settings.ingest_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", [])[-1:]
    stack.clients.sqs.purge_queue(QueueUrl=stack.settings.ingest_queue_url)
    (ref,) = parse_body(message["Body"])
    led = bootstrap.ledger(stack.settings, stack.clients)
    led.fail(led.claim(ref, 30), "AccessDenied: the bucket policy was wrong")

    (item,) = json_lines(run_cli(stack, tmp_path, "replay", "failed.csv", "--json"))
    assert item["action"] == "replayed"
    sqs = stack.clients.sqs
    (sent,) = sqs.receive_message(QueueUrl=stack.settings.ingest_queue_url, VisibilityTimeout=0)[
        "Messages"
    ]
    sqs.send_message(QueueUrl=stack.settings.ingest_queue_url, MessageBody=sent["Body"])
    drain(stack.clients, stack.settings, timeout_s=60)
    after = ledger(stack, "incoming/failed.csv")
    assert after["status"]["S"] == "SUCCEEDED"
    assert int(after["attempts"]["N"]) == 2  # the failed attempt, then the replay: once
    assert int(after["replays"]["N"]) == 1


def test_local_schedule_finds_a_lost_event_on_its_own(stack) -> None:
    import time

    from core.ops.reconcile import ReconcileOptions

    upload(stack, "incoming/scheduled.csv", VALID)
    stack.clients.sqs.purge_queue(QueueUrl=stack.settings.ingest_queue_url)
    schedule = ReconcileSchedule(
        stack.clients, stack.settings, every_s=1, options=ReconcileOptions(grace_s=0)
    )
    schedule.start()
    try:
        deadline = time.monotonic() + 30
        while schedule.last_report is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        schedule.stop()
    assert schedule.last_report is not None
    assert schedule.last_report.counts["missing"] == 1
    drain(stack.clients, stack.settings, timeout_s=60)
    assert ledger(stack, "incoming/scheduled.csv")["status"]["S"] == "SUCCEEDED"
