"""Dead-letter review and redrive on an in-memory SQS fake: nothing consumed, nothing lost."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError

from core.ops.dlq import DeadLetter, DeadLetterQueue, DlqError, reached_dlq_estimate
from core.ops.event_messages import ObjectVersion, s3_event_body

SOURCE = "https://sqs/1/ingest"
DLQ = "https://sqs/1/ingest-dlq"
_ids = itertools.count(1)


@dataclass
class Msg:
    id: str
    body: str
    attributes: dict[str, Any] = field(default_factory=dict)
    receives: int = 0
    hidden: bool = False
    handle: str = ""


class FakeSqs:
    """Enough of SQS for the DLQ tools; ``log`` records each mutating call in order."""

    def __init__(self, *, native: bool = False, fail_sends: int = 0) -> None:
        self.queues: dict[str, list[Msg]] = {SOURCE: [], DLQ: []}
        self.native = native
        self.fail_sends = fail_sends
        self.log: list[str] = []
        self.tasks: list[dict[str, Any]] = []

    def put(self, url: str, body: str, **attributes: Any) -> Msg:
        msg = Msg(f"m{next(_ids)}", body, attributes)
        self.queues[url].append(msg)
        return msg

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        name = QueueUrl.rsplit("/", 1)[1]
        return {
            "Attributes": {
                "QueueArn": f"arn:aws:sqs:us-east-1:1:{name}",
                "ApproximateNumberOfMessages": str(
                    sum(not m.hidden for m in self.queues[QueueUrl])
                ),
                "VisibilityTimeout": "12",
            }
        }

    def receive_message(self, QueueUrl: str, MaxNumberOfMessages: int, **_: Any) -> dict[str, Any]:
        out = []
        for m in self.queues[QueueUrl]:
            if len(out) == MaxNumberOfMessages:
                break
            if m.hidden:
                continue
            m.receives += 1
            m.hidden = True
            m.handle = f"h-{m.id}-{m.receives}"
            out.append(
                {
                    "MessageId": m.id,
                    "ReceiptHandle": m.handle,
                    "Body": m.body,
                    "Attributes": {
                        "ApproximateReceiveCount": str(m.receives),
                        "SentTimestamp": "1764072000000",
                        "ApproximateFirstReceiveTimestamp": "1764072001000",
                    },
                    "MessageAttributes": m.attributes,
                }
            )
        return {"Messages": out} if out else {}

    def _by_handle(self, url: str, handle: str) -> Msg:
        return next(m for m in self.queues[url] if m.handle == handle)

    def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        for e in Entries:
            self._by_handle(QueueUrl, e["ReceiptHandle"]).hidden = e["VisibilityTimeout"] > 0
        return {}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        ok, failed = [], []
        for e in Entries:
            if self.fail_sends > 0:
                self.fail_sends -= 1
                failed.append({"Id": e["Id"], "Code": "InternalError", "Message": "boom"})
                continue
            self.put(QueueUrl, e["MessageBody"], **e.get("MessageAttributes", {}))
            self.log.append(f"send {e['MessageBody']}")
            ok.append({"Id": e["Id"]})
        return {"Successful": ok, "Failed": failed}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        for e in Entries:
            m = self._by_handle(QueueUrl, e["ReceiptHandle"])
            self.queues[QueueUrl].remove(m)
            self.log.append(f"delete {m.body}")
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}

    def list_message_move_tasks(self, SourceArn: str, MaxResults: int) -> dict[str, Any]:
        if not self.native:
            raise ClientError(
                {
                    "Error": {"Code": "500", "Message": ""},
                    "ResponseMetadata": {"HTTPStatusCode": 500},
                },
                "ListMessageMoveTasks",
            )
        return {"Results": self.tasks[-1:]}

    def start_message_move_task(self, **kwargs: Any) -> dict[str, Any]:
        moved = len(self.queues[DLQ])
        self.queues[SOURCE].extend(self.queues[DLQ])
        self.queues[DLQ] = []
        self.tasks.append(
            {
                "Status": "COMPLETED",
                "ApproximateNumberOfMessagesMoved": moved,
                "ApproximateNumberOfMessagesToMove": moved,
                **kwargs,
            }
        )
        return {"TaskHandle": "task-1"}


def body(key: str) -> str:
    return s3_event_body(
        ObjectVersion("b", key, "etag:e", "e", 42, "2026-11-25T10:00:00.000Z"), source="test"
    )


def dlq(sqs: FakeSqs) -> DeadLetterQueue:
    return DeadLetterQueue(sqs, source_url=SOURCE, dlq_url=DLQ, sleep=lambda _: None)


def test_peek_lists_every_message_and_leaves_all_visible() -> None:
    sqs = FakeSqs()
    for n in range(23):
        sqs.put(DLQ, body(f"incoming/f{n}.csv"))
    letters = dlq(sqs).peek()
    assert len(letters) == 23
    assert all(not m.hidden for m in sqs.queues[DLQ])
    assert len(sqs.queues[DLQ]) == 23  # nothing consumed
    (mention,) = letters[0].files()
    assert (mention.key, mention.size) == ("incoming/f0.csv", 42)
    assert mention.file_id == "b/incoming/f0.csv#etag:e"
    assert letters[0].receive_count == 0  # our own peek is not counted


def test_peek_releases_messages_even_when_interrupted() -> None:
    sqs = FakeSqs()
    sqs.put(DLQ, body("incoming/a.csv"))
    original = sqs.receive_message
    calls = {"n": 0}

    def flaky(**kwargs: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("network went away")
        return original(**kwargs)

    sqs.receive_message = flaky  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        dlq(sqs).peek()
    assert not sqs.queues[DLQ][0].hidden


def test_notice_bodies_name_their_file() -> None:
    sqs = FakeSqs()
    notice = {
        "type": "orderpipe.file_outcome",
        "file_id": "b/incoming/x.csv#v1",
        "bucket": "b",
        "key": "incoming/x.csv",
        "version": "v1",
        "status": "PARTIAL",
        "rows": 2,
        "valid": 1,
        "invalid": 1,
    }
    sqs.put(DLQ, json.dumps(notice))
    (letter,) = dlq(sqs).peek()
    assert [f.file_id for f in letter.files()] == ["b/incoming/x.csv#v1"]


def test_copy_redrive_sends_before_it_deletes_and_keeps_attributes() -> None:
    sqs = FakeSqs()
    for n in range(12):
        sqs.put(DLQ, body(f"incoming/f{n}.csv"), tag={"DataType": "String", "StringValue": "x"})
    result = dlq(sqs).redrive()
    assert (result.method, result.moved, result.failed) == ("copy", 12, 0)
    assert sqs.queues[DLQ] == []
    assert len(sqs.queues[SOURCE]) == 12
    assert sqs.queues[SOURCE][0].attributes == {"tag": {"DataType": "String", "StringValue": "x"}}
    for n in range(12):
        b = body(f"incoming/f{n}.csv")
        assert sqs.log.index(f"send {b}") < sqs.log.index(f"delete {b}")


def test_copy_redrive_never_deletes_what_it_could_not_send() -> None:
    sqs = FakeSqs(fail_sends=1)
    for n in range(3):
        sqs.put(DLQ, body(f"incoming/f{n}.csv"))
    result = dlq(sqs).redrive()
    assert result.failed == 1
    assert result.errors == ["boom"]
    assert len(sqs.queues[SOURCE]) + len(sqs.queues[DLQ]) == 3  # nothing lost
    assert all(not m.hidden for m in sqs.queues[DLQ])


@pytest.mark.parametrize("purge", [False, True])
def test_redrive_leaves_or_purges_what_can_never_succeed_asking_once_a_pass(purge: bool) -> None:
    sqs = FakeSqs(native=True)  # a message that must stay takes the copy path on AWS too
    for n in range(4):
        sqs.put(DLQ, body(f"incoming/f{n}.csv"))
    doomed = sqs.put(DLQ, "not an S3 event")
    asked: Counter[str] = Counter()

    def cannot_succeed(letter: DeadLetter) -> bool:  # may cost a HeadObject: ask sparingly
        asked[letter.message_id] += 1
        return letter.body == doomed.body

    result = dlq(sqs).redrive(cannot_succeed=cannot_succeed, purge_unredrivable=purge)
    assert (result.method, result.moved, result.failed) == ("copy", 4, 0)
    assert len(sqs.queues[SOURCE]) == 4
    assert (result.purged, result.left) == (([doomed.id], []) if purge else ([], [doomed.id]))
    assert [m.body for m in sqs.queues[DLQ]] == ([] if purge else [doomed.body])
    assert all(not m.hidden for m in sqs.queues[DLQ])
    assert set(asked.values()) == {2}  # once while peeking, once while moving


def test_redrive_max_moves_at_most_n() -> None:
    sqs = FakeSqs()
    for n in range(15):
        sqs.put(DLQ, body(f"incoming/f{n}.csv"))
    result = dlq(sqs).redrive(max_messages=4)
    assert result.moved == 4
    assert len(sqs.queues[DLQ]) == 11


def test_redrive_dry_run_moves_nothing() -> None:
    sqs = FakeSqs()
    for n in range(5):
        sqs.put(DLQ, body(f"incoming/f{n}.csv"))
    result = dlq(sqs).redrive(dry_run=True, max_messages=3)
    assert (result.dry_run, result.would_move, result.moved) == (True, 3, 0)
    assert len(sqs.queues[DLQ]) == 5
    assert sqs.log == []


def test_native_redrive_when_the_api_exists_reports_progress() -> None:
    sqs = FakeSqs(native=True)
    for n in range(7):
        sqs.put(DLQ, body(f"incoming/f{n}.csv"))
    seen: list[tuple[int, int | None]] = []
    result = dlq(sqs).redrive(rate=50, progress=lambda moved, total: seen.append((moved, total)))
    assert (result.method, result.moved) == ("native", 7)
    assert seen[-1] == (7, 7)
    assert sqs.tasks[0]["MaxNumberOfMessagesPerSecond"] == 50
    assert sqs.tasks[0]["DestinationArn"].endswith(":ingest")


def test_native_redrive_refuses_a_second_active_task() -> None:
    sqs = FakeSqs(native=True)
    sqs.tasks.append(
        {
            "Status": "RUNNING",
            "ApproximateNumberOfMessagesMoved": 3,
            "ApproximateNumberOfMessagesToMove": 9,
        }
    )
    with pytest.raises(DlqError, match=r"already running .*3 of 9"):
        dlq(sqs).redrive()


def test_purge_counts_what_it_deleted_and_dry_run_deletes_nothing() -> None:
    sqs = FakeSqs()
    for n in range(13):
        sqs.put(DLQ, body(f"incoming/f{n}.csv"))
    assert dlq(sqs).purge(dry_run=True) == 13
    assert len(sqs.queues[DLQ]) == 13
    assert dlq(sqs).purge() == 13
    assert sqs.queues[DLQ] == []


def test_reached_dlq_is_the_last_failure() -> None:
    # The last receive's failure is made visible at once, so the next receive moved it.
    sqs = FakeSqs()
    sqs.put(DLQ, body("incoming/a.csv"))
    (letter,) = dlq(sqs).peek()
    assert (
        reached_dlq_estimate(letter, "2026-11-25T10:00:00.000Z", 12) == "2026-11-25T10:00:00.000Z"
    )


def test_looking_at_a_dead_letter_changes_neither_its_receives_nor_its_arrival() -> None:
    # A moved message keeps its receive count (5 here) and every peek adds one; capped at the
    # source's maxReceiveCount, the count and the arrival estimate stay what they were.
    sqs = FakeSqs()
    sqs.put(DLQ, body("incoming/a.csv")).receives = 5
    queue = DeadLetterQueue(sqs, source_url=SOURCE, dlq_url=DLQ, max_receives=5)
    looks = [queue.peek()[0] for _ in range(3)]
    assert [letter.receive_count for letter in looks] == [5, 5, 5]
    estimates = {reached_dlq_estimate(letter, None, 12) for letter in looks}
    assert estimates == {"2025-11-25T12:00:49.000Z"}  # first receive + 4 visibility timeouts
    assert dlq(sqs).peek()[0].receive_count == 8  # without the cap, each look counted


def test_for_source_reads_max_receives_from_the_redrive_policy() -> None:
    class PolicySqs:
        def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
            policy = {"deadLetterTargetArn": "arn:aws:sqs:us-east-1:1:dlq", "maxReceiveCount": "5"}
            return {"Attributes": {"RedrivePolicy": json.dumps(policy)}}

        def get_queue_url(self, **_: Any) -> dict[str, Any]:
            return {"QueueUrl": DLQ}

    assert DeadLetterQueue.for_source(PolicySqs(), SOURCE).max_receives == 5


def test_redrive_ids_moves_only_the_chosen_and_releases_the_rest() -> None:
    sqs = FakeSqs()
    letters = [sqs.put(DLQ, body(f"k{n}")) for n in range(25)]
    chosen = {letters[3].id, letters[21].id}
    result = dlq(sqs).redrive_ids(chosen)
    assert result.moved == 2
    assert result.failed == 0
    assert {m.body for m in sqs.queues[SOURCE]} == {letters[3].body, letters[21].body}
    assert len(sqs.queues[DLQ]) == 23
    assert not any(m.hidden for m in sqs.queues[DLQ])
    assert sqs.log.index(f"send {letters[3].body}") < sqs.log.index(f"delete {letters[3].body}")


def test_redrive_ids_keeps_what_the_source_refused() -> None:
    sqs = FakeSqs(fail_sends=1)
    only = sqs.put(DLQ, body("k"))
    result = dlq(sqs).redrive_ids({only.id})
    assert result.moved == 0
    assert result.failed == 1
    assert result.errors == ["boom"]
    assert sqs.queues[DLQ] == [only]
    assert not only.hidden


def test_why_unredrivable() -> None:
    from core.ops.dlq import DeadLetter, why_unredrivable

    def letter(text: str) -> DeadLetter:
        return DeadLetter("m", "h", text, {}, {})

    garbage = why_unredrivable(letter("hello"), "ingest", lambda f: True)
    assert garbage == "not an S3 event (nor a replay of one): ingest cannot read it"
    assert why_unredrivable(letter(body("k")), "ingest", lambda f: False) == (
        "its object is gone from the bucket"
    )
    assert why_unredrivable(letter(body("k")), "ingest", lambda f: True) is None
    assert why_unredrivable(letter(body("k")), "notify", lambda f: False) == (
        "not a file notice: notify cannot read it"
    )


def test_unredrivable_looks_each_object_up_once_and_treats_an_error_as_there() -> None:
    from core.ops.dlq import FileMention, Unredrivable

    looked: Counter[str] = Counter()

    def exists(mention: FileMention) -> bool:
        looked[mention.key] += 1
        if mention.key == "incoming/denied.csv":  # S3's 403 for a missing key without ListBucket
            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")
        return mention.key != "incoming/gone.csv"

    hopeless = Unredrivable("ingest", exists)
    gone, denied, fine = (
        DeadLetter(f"m{n}", "h", body(f"incoming/{name}.csv"), {}, {})
        for n, name in enumerate(["gone", "denied", "fine"])
    )
    for _ in range(3):
        assert hopeless.reason(gone) == "its object is gone from the bucket"
        assert not hopeless(denied)
        assert not hopeless(fine)
    assert looked == {"incoming/gone.csv": 1, "incoming/denied.csv": 1, "incoming/fine.csv": 1}
