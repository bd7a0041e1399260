"""The ledger's claim rules, run against the in-memory fake and against DynamoDB on moto.

The same contract runs twice: ``memory`` is a unit test; ``dynamo`` needs the moto server
(integration marker) and proves the conditional writes enforce what ``decide`` says.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from core.aws.clients import Clients
from core.aws.stack import files_table_definition
from core.pipeline.events import FileRef, Replay
from core.pipeline.ledger import (
    Checkpoint,
    Decision,
    DynamoLedger,
    FileOutcome,
    LeaseLost,
    LedgerEntry,
    Status,
    decide,
)
from tests.support.faults import FaultPlan
from tests.unit.ingest_fakes import FakeClock, InMemoryLedger

LEASE = 60


@pytest.fixture(scope="module")
def files_table(moto_endpoint: str) -> tuple[Clients, str]:
    """One files table for the module; each test uses its own bucket name, so none collide."""
    clients = Clients(endpoint_url=moto_endpoint, max_attempts=2)
    name = f"ledger-{uuid.uuid4().hex[:8]}"
    clients.dynamodb.create_table(**files_table_definition(name))
    return clients, name


@pytest.fixture(params=["memory", pytest.param("dynamo", marks=pytest.mark.integration)])
def env(request: pytest.FixtureRequest) -> tuple[Any, FakeClock, str]:
    clock = FakeClock()
    bucket = f"bucket-{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        return InMemoryLedger(clock), clock, bucket
    clients, table = request.getfixturevalue("files_table")
    return DynamoLedger(clients.dynamodb, table, clock=clock), clock, bucket


def _ref(bucket: str, key: str = "incoming/a.csv", version: str = "v1", **kw: Any) -> FileRef:
    return FileRef(bucket, key, version, "etag1", 120, "2026-05-01T11:59:00.000Z", **kw)


def test_first_claim_creates_a_processing_entry(env) -> None:
    ledger, clock, bucket = env
    claim = ledger.claim(_ref(bucket), LEASE)
    assert claim.decision == Decision.NEW
    assert claim.owned
    entry = ledger.get(claim.entry.file_id)
    assert entry.status == Status.PROCESSING
    assert entry.attempts == 1
    assert entry.lease_until == int(clock().timestamp()) + LEASE
    assert entry.received_at == "2026-05-01T12:00:00.000Z"
    assert (entry.bucket, entry.object_key, entry.version, entry.size) == (
        bucket,
        "incoming/a.csv",
        "v1",
        120,
    )


def test_live_claim_makes_others_busy_and_expired_claim_is_taken_over(env) -> None:
    ledger, clock, bucket = env
    first = ledger.claim(_ref(bucket), LEASE)
    busy = ledger.claim(_ref(bucket), LEASE)
    assert busy.decision == Decision.BUSY
    assert not busy.owned
    clock.advance(LEASE + 1)
    second = ledger.claim(_ref(bucket), LEASE)
    assert second.decision == Decision.TAKEOVER
    assert second.owned
    assert ledger.get(second.entry.file_id).attempts == 2
    # The attempt that was taken over can no longer record anything.
    with pytest.raises(LeaseLost):
        ledger.finish(first, FileOutcome(Status.SUCCEEDED, rows=1, valid=1))
    with pytest.raises(LeaseLost):
        ledger.renew(first, LEASE)
    ledger.fail(first, "late failure")  # ignored: not the owner any more
    assert ledger.get(second.entry.file_id).status == Status.PROCESSING


def test_finished_version_is_a_duplicate(env) -> None:
    ledger, clock, bucket = env
    claim = ledger.claim(_ref(bucket), LEASE)
    clock.advance(2.5)
    done = ledger.finish(
        claim,
        FileOutcome(
            Status.PARTIAL,
            rows=3,
            valid=2,
            invalid=1,
            reasons={"Order_Id.required": 1},
            written=1,
            superseded=1,
        ),
    )
    assert (done.written, done.superseded) == (1, 1)
    assert (done.status, done.rows, done.valid, done.invalid) == (Status.PARTIAL, 3, 2, 1)
    assert done.reasons == {"Order_Id.required": 1}
    assert done.lease_until is None
    assert done.finished_at == "2026-05-01T12:00:02.500Z"
    assert done.seconds() == 2.5
    again = ledger.claim(_ref(bucket), LEASE)
    assert again.decision == Decision.DUPLICATE
    assert not again.owned


def test_failed_version_is_retried_and_success_clears_the_error(env) -> None:
    ledger, _, bucket = env
    claim = ledger.claim(_ref(bucket), LEASE)
    ledger.fail(claim, "GetObject: AccessDenied: Access Denied")
    failed = ledger.get(claim.entry.file_id)
    assert failed.status == Status.FAILED
    assert failed.last_error == "GetObject: AccessDenied: Access Denied"
    retry = ledger.claim(_ref(bucket), LEASE)
    assert retry.decision == Decision.RETRY
    assert retry.entry.attempts == 2
    done = ledger.finish(retry, FileOutcome(Status.REJECTED, error="The file is empty."))
    assert done.status == Status.REJECTED
    assert done.error == "The file is empty."
    assert done.last_error is None


def test_replay_runs_a_finished_version_once_per_replay_id(env) -> None:
    ledger, _, bucket = env
    ledger.finish(ledger.claim(_ref(bucket), LEASE), FileOutcome(Status.SUCCEEDED))
    replay = Replay(id="r1", reason="schema fixed")
    claim = ledger.claim(_ref(bucket, replay=replay), LEASE)
    assert claim.decision == Decision.REPLAY
    ledger.finish(claim, FileOutcome(Status.SUCCEEDED))
    assert ledger.claim(_ref(bucket, replay=replay), LEASE).decision == Decision.DUPLICATE
    assert ledger.claim(_ref(bucket, replay=Replay("r2", "")), LEASE).decision == Decision.REPLAY


def test_versions_of_one_key_are_processed_one_at_a_time(env) -> None:
    ledger, _, bucket = env
    v1 = ledger.claim(_ref(bucket, version="v1"), LEASE)
    v2 = ledger.claim(_ref(bucket, version="v2"), LEASE)
    assert v2.decision == Decision.BUSY
    assert v2.holder == v1.entry.file_id
    assert ledger.get(v2.entry.file_id) is None  # nothing recorded for the waiting version
    other_key = ledger.claim(_ref(bucket, key="incoming/b.csv", version="v2"), LEASE)
    assert other_key.owned
    ledger.finish(v1, FileOutcome(Status.SUCCEEDED))
    assert ledger.claim(_ref(bucket, version="v2"), LEASE).decision == Decision.NEW


def test_a_dead_holder_of_the_key_stops_blocking_after_its_lease(env) -> None:
    ledger, clock, bucket = env
    ledger.claim(_ref(bucket, version="v1"), LEASE)
    clock.advance(LEASE + 1)
    assert ledger.claim(_ref(bucket, version="v2"), LEASE).owned


def test_renew_pushes_the_lease(env) -> None:
    ledger, clock, bucket = env
    claim = ledger.claim(_ref(bucket), LEASE)
    clock.advance(LEASE - 1)
    ledger.renew(claim, LEASE)
    clock.advance(LEASE - 1)
    assert ledger.claim(_ref(bucket), LEASE).decision == Decision.BUSY


def test_queries_return_typed_entries_newest_first(env, request: pytest.FixtureRequest) -> None:
    ledger, clock, bucket = env
    if isinstance(ledger, DynamoLedger):  # table-wide queries: this test needs a table of its own
        clients, _ = request.getfixturevalue("files_table")
        name = f"ledger-{uuid.uuid4().hex[:8]}"
        clients.dynamodb.create_table(**files_table_definition(name))
        ledger = DynamoLedger(clients.dynamodb, name, clock=clock)
    ids = []
    for i, status in enumerate([Status.SUCCEEDED, Status.PARTIAL, Status.SUCCEEDED]):
        claim = ledger.claim(_ref(bucket, key=f"incoming/{i}.csv"), LEASE)
        clock.advance(1)
        ledger.finish(claim, FileOutcome(status))
        ids.append(claim.entry.file_id)
    clock.advance(1)
    stuck = ledger.claim(_ref(bucket, key="incoming/0.csv", version="v9"), LEASE)
    recent = ledger.recent(3)
    assert [e.file_id for e in recent] == [stuck.entry.file_id, ids[2], ids[1]]
    assert all(isinstance(e, LedgerEntry) for e in recent)
    assert [e.file_id for e in ledger.by_status(Status.SUCCEEDED)] == [ids[2], ids[0]]
    assert [e.file_id for e in ledger.by_status(Status.SUCCEEDED, limit=1)] == [ids[2]]
    assert [e.file_id for e in ledger.by_status("SUCCEEDED", since="2026-05-01T12:00:02.000Z")] == [
        ids[2]
    ]
    assert {e.version for e in ledger.for_key(bucket, "incoming/0.csv")} == {"v1", "v9"}
    assert ledger.for_key(bucket, "incoming/none.csv") == []


def test_decide_is_the_whole_rule() -> None:
    ref = _ref("b")
    base = LedgerEntry("id", "b", "k", "v", "e", Status.PROCESSING, lease_until=100)
    assert decide(None, ref, 0) == Decision.NEW
    assert decide(base, ref, 99) == Decision.BUSY
    assert decide(base, ref, 100) == Decision.TAKEOVER
    paused = LedgerEntry(
        "id", "b", "k", "v", "e", Status.PROCESSING, lease_until=100, paused_at="2026-05-01"
    )
    assert decide(paused, ref, 99) == Decision.RESUME
    for status, expected in [
        (Status.FAILED, Decision.RETRY),
        (Status.SUCCEEDED, Decision.DUPLICATE),
        (Status.PARTIAL, Decision.DUPLICATE),
        (Status.REJECTED, Decision.DUPLICATE),
    ]:
        entry = LedgerEntry("id", "b", "k", "v", "e", status)
        assert decide(entry, ref, 0) == expected


def test_progress_is_recorded_while_processing_and_kept_at_the_end(env) -> None:
    ledger, _, bucket = env
    claim = ledger.claim(_ref(bucket), LEASE)
    assert (claim.entry.rows_judged, claim.entry.rows_written, claim.entry.checkpoint) == (
        0,
        0,
        None,
    )
    ledger.progress(claim, rows_judged=5000)
    point = Checkpoint(
        done=1200,
        valid=4990,
        superseded=3,
        stamp="2026-05-01T12:00:00.000Z",
        taken={"b/incoming/old.csv#v1": 2},
    )
    ledger.progress(claim, rows_written=1197, checkpoint=point)
    entry = ledger.get(claim.entry.file_id)
    assert (entry.rows_judged, entry.rows_written, entry.checkpoint) == (5000, 1197, point)
    assert entry.status == Status.PROCESSING
    done = ledger.finish(
        claim, FileOutcome(Status.PARTIAL, rows=5000, valid=4990, invalid=10, written=4987)
    )
    assert (done.rows_judged, done.rows_written, done.checkpoint) == (5000, 4987, None)


def test_a_paused_file_is_resumed_at_once_with_its_checkpoint(env) -> None:
    ledger, clock, bucket = env
    first = ledger.claim(_ref(bucket), LEASE)
    point = Checkpoint(done=800, valid=3000, stamp=first.entry.received_at)
    ledger.progress(first, rows_judged=3000, rows_written=800, checkpoint=point)
    ledger.pause(first, LEASE)
    paused = ledger.get(first.entry.file_id)
    assert paused.status == Status.PROCESSING
    assert paused.paused_at is not None
    assert paused.pauses == 1
    assert paused.lease_until == int(clock().timestamp()) + LEASE
    with pytest.raises(LeaseLost):  # the paused attempt holds nothing any more
        ledger.progress(first, rows_written=900)
    # Another version of the key still waits: the paused file keeps its key lock.
    assert ledger.claim(_ref(bucket, version="v2"), LEASE).decision == Decision.BUSY
    clock.advance(1)  # long before the lease ends
    resumed = ledger.claim(_ref(bucket), LEASE)
    assert resumed.decision == Decision.RESUME
    assert resumed.owned
    assert resumed.entry.attempts == 2
    assert (resumed.entry.checkpoint, resumed.entry.rows_written) == (point, 800)
    entry = ledger.get(first.entry.file_id)
    assert entry.paused_at is None
    assert ledger.claim(_ref(bucket), LEASE).decision == Decision.BUSY  # resumed: held again


def test_a_crashed_or_failed_attempt_keeps_its_checkpoint_and_a_replay_starts_over(env) -> None:
    ledger, clock, bucket = env
    first = ledger.claim(_ref(bucket), LEASE)
    point = Checkpoint(done=500, valid=900, stamp=first.entry.received_at)
    ledger.progress(first, rows_judged=1000, rows_written=500, checkpoint=point)
    clock.advance(LEASE + 1)  # the attempt died
    takeover = ledger.claim(_ref(bucket), LEASE)
    assert takeover.decision == Decision.TAKEOVER
    assert takeover.entry.checkpoint == point
    ledger.fail(takeover, "BatchWriteItem: InternalServerError: boom")
    retry = ledger.claim(_ref(bucket), LEASE)
    assert retry.decision == Decision.RETRY
    assert retry.entry.checkpoint == point
    ledger.finish(retry, FileOutcome(Status.SUCCEEDED, rows=1000, valid=900, written=900))
    replay = ledger.claim(_ref(bucket, replay=Replay(id="r1", reason="again")), LEASE)
    assert replay.decision == Decision.REPLAY
    assert (replay.entry.rows_judged, replay.entry.rows_written, replay.entry.checkpoint) == (
        0,
        0,
        None,
    )
    stored = ledger.get(replay.entry.file_id)
    assert (stored.rows_judged, stored.rows_written, stored.checkpoint) == (0, 0, None)


def test_simultaneous_claims_leave_exactly_one_owner(env) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ledger, _, bucket = env
    with ThreadPoolExecutor(max_workers=6) as pool:
        claims = list(pool.map(lambda _: ledger.claim(_ref(bucket), LEASE), range(6)))
    assert sum(c.owned for c in claims) == 1
    assert {c.decision for c in claims if not c.owned} == {Decision.BUSY}


@pytest.mark.integration
def test_a_takeover_keeps_attributes_other_writers_own(files_table) -> None:
    """Notify keeps its claim and replay marker on the same item; a re-claim must not drop them."""
    clients, table = files_table
    clock = FakeClock()
    ledger = DynamoLedger(clients.dynamodb, table, clock=clock)
    first = ledger.claim(_ref(f"bucket-{uuid.uuid4().hex[:8]}"), LEASE)
    clients.dynamodb.update_item(
        TableName=table,
        Key={"file_id": {"S": first.entry.file_id}},
        UpdateExpression="SET notified_replay_id = :r, notify_lease_until = :l",
        ExpressionAttributeValues={":r": {"S": "replay-1"}, ":l": {"N": "123"}},
    )
    clock.advance(LEASE + 1)
    second = ledger.claim(_ref(first.entry.bucket), LEASE)
    assert second.decision == Decision.TAKEOVER
    item = clients.dynamodb.get_item(TableName=table, Key={"file_id": {"S": first.entry.file_id}})
    assert item["Item"]["notified_replay_id"] == {"S": "replay-1"}
    assert item["Item"]["notify_lease_until"] == {"N": "123"}
    assert ledger.get(first.entry.file_id).attempts == 2


@pytest.mark.integration
def test_a_claim_and_an_outcome_whose_replies_were_lost_are_this_attempts_own(
    files_table: tuple[Clients, str], moto_endpoint: str
) -> None:
    """Each write is applied and its answer lost; botocore's retry then fails its own
    condition. The ledger must recognise its own claim and outcome, not call the file busy or
    the lease lost, and must leave no key lock behind."""
    clients, table = files_table
    clock = FakeClock()
    faulty = Clients(endpoint_url=moto_endpoint, max_attempts=3)
    # The claim's two PutItems (key lock, entry) and the outcome's UpdateItem lose their reply.
    plan = FaultPlan.parse(
        "dynamodb.PutItem=reply-timeout:1:2; dynamodb.UpdateItem=reply-timeout:1:1"
    )
    plan.attach(faulty.dynamodb)
    ledger = DynamoLedger(faulty.dynamodb, table, clock=clock)
    bucket = f"bucket-{uuid.uuid4().hex[:8]}"

    claim = ledger.claim(_ref(bucket), LEASE)
    assert (claim.decision, claim.owned) == (Decision.NEW, True)
    done = ledger.finish(claim, FileOutcome(Status.PARTIAL, rows=2, valid=1, invalid=1))
    assert done.status == Status.PARTIAL
    assert plan.counts() == {"dynamodb.PutItem:reply-timeout": 2,
                             "dynamodb.UpdateItem:reply-timeout": 1}  # fmt: skip

    clean = DynamoLedger(clients.dynamodb, table, clock=clock)
    entry = clean.get(claim.entry.file_id)
    assert entry is not None
    assert (entry.status, entry.attempts) == (Status.PARTIAL, 1)
    # The key lock is gone: a new version of the same key is claimed at once.
    nxt = clean.claim(_ref(bucket, version="v2"), LEASE)
    assert (nxt.decision, nxt.owned) == (Decision.NEW, True)


def test_orders_taken_by_a_newer_file_are_recorded_once_per_taker(env) -> None:
    ledger, _, bucket = env
    older = ledger.claim(_ref(bucket, key="incoming/orders_v1.csv"), LEASE)
    ledger.finish(older, FileOutcome(Status.SUCCEEDED, rows=6, valid=6, written=6))
    older_id = older.entry.file_id
    v2, v3 = f"{bucket}/incoming/orders_v2.csv#v1", f"{bucket}/incoming/orders_v3.csv#v1"
    ledger.record_taken(older_id, v2, 4)
    ledger.record_taken(older_id, v2, 4)  # a retry of the same record
    ledger.record_taken(older_id, v2, 1)  # a resumed or replayed run that saw fewer
    ledger.record_taken(older_id, v3, 1)
    assert ledger.get(older_id).taken == {v2: 4, v3: 1}
    # A replay of the older file writes again what it can: the orders newer files hold then
    # count in its own ``superseded``, so the takers' record is cleared.
    ref = _ref(bucket, key="incoming/orders_v1.csv", replay=Replay("r1", "x"))
    replay = ledger.claim(ref, LEASE)
    assert replay.decision == Decision.REPLAY
    assert ledger.get(older_id).taken == {}
    ledger.record_taken(f"{bucket}/incoming/gone.csv#v1", v2, 3)  # no entry: nothing made
    assert ledger.get(f"{bucket}/incoming/gone.csv#v1") is None
