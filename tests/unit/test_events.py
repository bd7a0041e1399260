"""S3-in-SQS bodies become FileRefs at the edge; anything else fails that message clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.pipeline.events import (
    EventShapeError,
    FileRef,
    Replay,
    event_body,
    normalise_time,
    parse_body,
)

EVENTS = Path(__file__).resolve().parents[2] / "fixtures" / "events"


def _body(name: str) -> str:
    return (EVENTS / name).read_text()


def test_aws_record_is_decoded_with_version_and_sequencer() -> None:
    (ref,) = parse_body(_body("aws_put.json"))
    assert ref.bucket == "orderpipe-prod-orders"
    assert ref.key == "incoming/2026/march orders(v2).csv"
    assert ref.version == "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd"
    assert ref.etag == "0e4f2b0d2c8e4f6b9a1a3c5d7e9f1a2b"
    assert ref.size == 48213
    assert ref.event_time == "2026-03-02T09:15:04.211Z"
    assert ref.sequencer == "0065E2F1A8B3C4D5E6"
    assert (
        ref.file_id
        == "orderpipe-prod-orders/incoming/2026/march orders(v2).csv#3HL4kqtJlcpXroDTDmjVBH40Nrjfkd"
    )
    assert ref.replay is None


def test_emulator_record_escapes_slash_and_has_no_version() -> None:
    (ref,) = parse_body(_body("moto_put.json"))
    assert ref.key == "incoming/dir/a b+c.csv"
    assert ref.version == ""
    assert ref.file_id.endswith("#etag:043212bb9834e334677e9c9659294bd4")


def test_test_event_names_no_file() -> None:
    assert parse_body(_body("test_event.json")) == []


def test_several_records_in_one_message_and_removals_skipped() -> None:
    refs = parse_body(_body("multi_record.json"))
    assert [r.key for r in refs] == ["incoming/a.csv", "incoming/b.csv"]
    assert refs[1].event_time == "2026-03-02T09:15:05.002Z"  # "+00:00" normalised


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"Records": []}', "no S3 Records"),
        ('{"hello": "world"}', "no S3 Records"),
        (None, "not an S3 record"),
        ('{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}', "lacks"),
        (
            '{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", '
            '"eventTime": "yesterday", "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}}]}',
            "eventTime",
        ),
    ],
)
def test_unknown_shapes_raise_a_clear_error(body: str | None, message: str) -> None:
    with pytest.raises(EventShapeError, match=message):
        parse_body(body if body is not None else _body("not_s3.json"))


def test_replay_field_is_carried_on_every_ref() -> None:
    (ref,) = parse_body(_body("replay.json"))
    assert ref.replay == Replay(id="r-7f3a", reason="schema fixed: Order_Total minimum")


def test_replay_field_must_have_an_id() -> None:
    doc = json.loads(_body("replay.json"))
    doc["orderpipe_replay"] = {"reason": "x"}
    with pytest.raises(EventShapeError, match="id"):
        parse_body(json.dumps(doc))


def test_null_version_means_known_by_etag() -> None:
    doc = json.loads(_body("aws_put.json"))
    doc["Records"][0]["s3"]["object"]["versionId"] = "null"
    (ref,) = parse_body(json.dumps(doc))
    assert ref.version_tag == "etag:0e4f2b0d2c8e4f6b9a1a3c5d7e9f1a2b"


def test_event_body_round_trips() -> None:
    refs = parse_body(_body("multi_record.json"))
    replay = Replay(id="abc", reason="why")
    again = parse_body(event_body(refs, replay=replay))
    assert [r.file_id for r in again] == [r.file_id for r in refs]
    assert all(r.replay == replay for r in again)
    odd = FileRef("b", "incoming/x y+z%.csv", "", "e", 1, "2026-01-01T00:00:00.000Z")
    assert parse_body(event_body([odd]))[0].key == odd.key


def _ref(time: str, seq: str = "", version: str = "v", key: str = "k") -> FileRef:
    return FileRef("b", key, version, "e", 1, time, seq)


def test_rank_orders_by_event_time_then_sequencer_then_version() -> None:
    early = _ref("2026-01-01T00:00:00.000Z", "FF")
    late = _ref("2026-01-01T00:00:00.001Z", "01")
    assert early.rank < late.rank
    # Sequencers of different lengths compare as hexadecimal numbers.
    assert (
        _ref("2026-01-01T00:00:00.000Z", "FF").rank < _ref("2026-01-01T00:00:00.000Z", "100").rank
    )
    # Same time, no sequencer: the version decides, and always the same way.
    a, b = (
        _ref("2026-01-01T00:00:00.000Z", version="a"),
        _ref("2026-01-01T00:00:00.000Z", version="b"),
    )
    assert a.rank < b.rank
    assert sorted([b.rank, a.rank]) == [a.rank, b.rank]


def test_normalise_time_handles_offsets_and_naive_values() -> None:
    assert normalise_time("2026-01-01T01:00:00+01:00") == "2026-01-01T00:00:00.000Z"
    assert normalise_time("2026-01-01T00:00:00.123456") == "2026-01-01T00:00:00.123Z"
