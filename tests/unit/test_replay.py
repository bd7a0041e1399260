"""Replay's selection, skip rules and ledger record, on in-memory fakes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from core.ops.event_messages import s3_event_body
from core.ops.ops_adapters import StoredObject
from core.ops.replay import (
    Replayer,
    ReplayError,
    Selection,
    parse_duration,
    parse_statuses,
)
from core.pipeline.events import parse_body
from core.pipeline.ledger import Decision, LedgerEntry, ReplayRecord, Status, decide

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
B = "bucket"


@dataclass
class FakeLedger:
    entries: dict[str, LedgerEntry] = field(default_factory=dict)

    def add(self, key: str, status: Status, version: str = "v1", **kw: object) -> LedgerEntry:
        entry = LedgerEntry(
            file_id=f"{B}/{key}#{version}",
            bucket=B,
            object_key=key,
            version=version,
            etag="e1",
            status=status,
            size=5,
            event_time="2026-11-25T09:00:00.000Z",
            updated_at="2026-11-25T11:00:00.000Z",
            **kw,  # type: ignore[arg-type]
        )
        self.entries[entry.file_id] = entry
        return entry

    def get(self, file_id: str) -> LedgerEntry | None:
        return self.entries.get(file_id)

    def by_status(self, status: Status | str, since: str | None = None) -> list[LedgerEntry]:
        return [
            e
            for e in self.entries.values()
            if e.status == status and (since is None or e.updated_at >= since)
        ]

    def record_replay(self, file_id: str, reason: str) -> None:
        e = self.entries[file_id]
        self.entries[file_id] = replace(
            e,
            replays=e.replays + 1,
            replay_log=(*e.replay_log, ReplayRecord(at="now", reason=reason)),
        )


@dataclass
class FakeObjects:
    objects: dict[str, StoredObject] = field(default_factory=dict)
    bucket: str = B

    def add(self, key: str, version: str | None = "v1", age_h: float = 1) -> None:
        self.objects[key] = StoredObject(key, version, "e1", 5, NOW - timedelta(hours=age_h))

    def head(self, key: str) -> StoredObject | None:
        return self.objects.get(key)

    def current(self, prefix: str) -> list[StoredObject]:
        return [o for k, o in self.objects.items() if k.startswith(prefix)]


@dataclass
class FakeQueue:
    sent: list[str] = field(default_factory=list)

    def send(self, bodies: list[tuple[str, dict[str, str]]]) -> list[str]:
        self.sent.extend(b for b, _ in bodies)
        return []


def world() -> tuple[FakeLedger, FakeObjects, FakeQueue, Replayer]:
    ledger, objects, queue = FakeLedger(), FakeObjects(), FakeQueue()
    return ledger, objects, queue, Replayer(ledger, objects, queue, clock=lambda: NOW)


def test_partial_file_is_replayed_with_a_replay_id_ingest_honours() -> None:
    ledger, objects, queue, replayer = world()
    objects.add("incoming/a.csv")
    entry = ledger.add("incoming/a.csv", Status.PARTIAL, replay_id="older")
    items = replayer.run(replayer.plan(Selection(keys=("a.csv",))), reason="schema fixed")
    assert [i.to_json(False)["action"] for i in items] == ["replayed"]
    (body,) = queue.sent
    (ref,) = parse_body(body)  # ingest's own parser reads the message
    assert ref.file_id == entry.file_id
    assert ref.event_time == entry.event_time  # original time: the ordering rule still holds
    assert ref.replay is not None
    assert ref.replay.reason == "schema fixed"
    assert decide(entry, ref, NOW.timestamp()) == Decision.REPLAY
    recorded = ledger.entries[entry.file_id]
    assert recorded.replays == 1
    assert recorded.replay_log[-1].reason == "schema fixed"


def test_second_delivery_of_the_same_replay_is_a_duplicate() -> None:
    ledger, objects, queue, replayer = world()
    objects.add("incoming/a.csv")
    entry = ledger.add("incoming/a.csv", Status.PARTIAL)
    replayer.run(replayer.plan(Selection(keys=("incoming/a.csv",))), reason="r")
    (ref,) = parse_body(queue.sent[0])
    assert ref.replay is not None
    after = replace(entry, replay_id=ref.replay.id)  # what ingest stored when it claimed
    assert decide(after, ref, NOW.timestamp()) == Decision.DUPLICATE


def test_succeeded_current_version_is_skipped_unless_forced() -> None:
    ledger, objects, queue, replayer = world()
    objects.add("incoming/a.csv")
    ledger.add("incoming/a.csv", Status.SUCCEEDED)
    (item,) = replayer.run(replayer.plan(Selection(keys=("a.csv",))), reason="r")
    assert item.action == "skip"
    assert "--force" in item.why
    assert queue.sent == []
    (item,) = replayer.run(replayer.plan(Selection(keys=("a.csv",), force=True)), reason="r")
    assert item.done
    assert len(queue.sent) == 1


def test_live_processing_is_skipped_even_when_forced() -> None:
    ledger, objects, _, replayer = world()
    objects.add("incoming/a.csv")
    ledger.add("incoming/a.csv", Status.PROCESSING, lease_until=int(NOW.timestamp()) + 60)
    (item,) = replayer.plan(Selection(keys=("a.csv",), force=True))
    assert item.action == "skip"


def test_missing_object_and_unseen_version() -> None:
    _ledger, objects, queue, replayer = world()
    objects.add("incoming/new.csv", version=None)
    items = replayer.run(replayer.plan(Selection(keys=("gone.csv", "new.csv"))), reason="r")
    assert [(i.key, i.action) for i in items] == [
        ("incoming/gone.csv", "skip"),
        ("incoming/new.csv", "replay"),
    ]
    (ref,) = parse_body(queue.sent[0])
    assert ref.replay is None  # a first delivery, no ledger record to honour
    assert ref.file_id == f"{B}/incoming/new.csv#etag:e1"


def test_select_by_status_and_since_uses_the_current_version_only() -> None:
    ledger, objects, _, replayer = world()
    objects.add("incoming/f.csv")
    objects.add("incoming/r.csv")
    objects.add("incoming/old.csv")
    ledger.add("incoming/f.csv", Status.FAILED)
    ledger.add("incoming/r.csv", Status.REJECTED)
    old = ledger.add("incoming/old.csv", Status.FAILED)
    ledger.entries[old.file_id] = replace(old, updated_at="2026-11-24T00:00:00.000Z")
    items = replayer.plan(
        Selection(statuses=parse_statuses("failed,REJECTED"), since=parse_duration("2h"))
    )
    assert sorted(i.key for i in items) == ["incoming/f.csv", "incoming/r.csv"]


def test_status_filter_skips_keys_whose_current_version_moved_on() -> None:
    ledger, objects, _, replayer = world()
    objects.add("incoming/a.csv", version="v2")
    ledger.add("incoming/a.csv", Status.FAILED, version="v1")
    ledger.add("incoming/a.csv", Status.SUCCEEDED, version="v2")
    (item,) = replayer.plan(Selection(statuses=(Status.FAILED,)))
    assert item.action == "skip"


def test_prefix_selects_objects_under_incoming() -> None:
    _ledger, objects, _, replayer = world()
    objects.add("incoming/eu/a.csv")
    objects.add("incoming/us/b.csv")
    items = replayer.plan(Selection(prefix="eu/"))
    assert [i.key for i in items] == ["incoming/eu/a.csv"]


def test_dry_run_sends_and_records_nothing() -> None:
    ledger, objects, queue, replayer = world()
    objects.add("incoming/a.csv")
    entry = ledger.add("incoming/a.csv", Status.FAILED)
    (item,) = replayer.run(replayer.plan(Selection(keys=("a.csv",))), reason="r", dry_run=True)
    assert item.to_json(True)["action"] == "would replay"
    assert queue.sent == []
    assert ledger.entries[entry.file_id].replays == 0


def test_selection_is_required_and_bad_values_are_clear() -> None:
    *_, replayer = world()
    with pytest.raises(ReplayError, match="name the files"):
        replayer.plan(Selection())
    with pytest.raises(ReplayError, match="unknown status 'DONE'"):
        parse_statuses("FAILED,DONE")
    with pytest.raises(ReplayError, match="not a duration"):
        parse_duration("two hours")
    assert parse_duration("90m") == timedelta(minutes=90)


def test_my_event_body_is_what_ingest_parses() -> None:
    from core.ops.event_messages import REPLAY_FIELD, ObjectVersion
    from core.pipeline.events import REPLAY_FIELD as INGEST_REPLAY_FIELD

    assert REPLAY_FIELD == INGEST_REPLAY_FIELD
    body = s3_event_body(
        ObjectVersion(B, "incoming/a b+c.csv", "3HL4kqtJ", "e1", 9, "2026-11-25T09:00:00.000Z"),
        source="x",
    )
    (ref,) = parse_body(body)
    assert (ref.key, ref.version, ref.etag, ref.size) == ("incoming/a b+c.csv", "3HL4kqtJ", "e1", 9)
