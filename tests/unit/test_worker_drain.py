"""The local worker's drain: idle only when the queue's approximate counts agree twice."""

from __future__ import annotations

from typing import Any

from core.local.worker import BatchResult, Worker


class FlickeringQueue:
    """One failed message waiting out its backoff. Its first count reading misses it (as SQS's
    approximate counts can while a message turns visible), then it is received and handled."""

    def __init__(self) -> None:
        self.readings = [0, 1]  # pending() answers, then 0 forever
        self.visible_after = 2  # poll() calls before the message shows
        self.polls = 0
        self.handled: list[str] = []

    def poll(self, wait_s: int = 0) -> list[dict[str, Any]]:
        self.polls += 1
        if self.polls == self.visible_after and not self.handled:
            return [{"MessageId": "m-1"}]
        return []

    def process(self, messages: list[dict[str, Any]]) -> BatchResult:
        self.handled += [m["MessageId"] for m in messages]
        return BatchResult("ingest", len(messages), 0, 0.0, None)

    def pending(self) -> int:
        return self.readings.pop(0) if self.readings else 0


def worker_over(queue: FlickeringQueue) -> Worker:
    worker = object.__new__(Worker)
    worker.consumers = [queue]  # type: ignore[list-item]
    return worker


def test_one_empty_reading_does_not_end_the_drain() -> None:
    queue = FlickeringQueue()
    report = worker_over(queue).drain(5.0)
    assert report.idle
    assert queue.handled == ["m-1"]  # a drain that stopped at the first 0 would have missed it


def test_two_empty_readings_end_it() -> None:
    queue = FlickeringQueue()
    queue.readings = []
    queue.visible_after = 0  # never shows
    report = worker_over(queue).drain(5.0)
    assert report.idle
    assert report.seconds < 1.0
    assert queue.handled == []
