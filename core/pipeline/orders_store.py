"""Writes valid orders to the orders table, fast, once, and never backwards in time.

Each order carries ``source_rank`` (``FileRef.rank``: event time, sequencer, version, file id).
A row replaces a stored order only when its rank is higher, so a late or replayed upload never
moves an order back. BatchWriteItem takes no condition, so per slice of up to 100 keys:

1. BatchGetItem (strongly consistent) reads the stored rank and source of those keys;
2. rows whose stored order is newer are dropped (counted as ``superseded``);
3. rows with no stored order, or one written by this same file version (an earlier attempt that
   died; the re-write is identical), go out through BatchWriteItem, 25 per call;
4. rows replacing an older order from another file use a conditional PutItem, so a newer
   writer that got there in between wins.

Tasks of whole slices run on a thread pool (``settings.write_threads``); each task has polars
encode its rows as request JSON in one query (``request_texts``). Chunks are written in order
with a barrier between them, and a chunk's keys are de-duplicated (last line wins), so the same
key never appears twice in one call or in two calls at once. The residual race (two *different*
object keys writing the same brand-new Order_Id in the same instant) is in docs/pipeline.md.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import polars as pl
from botocore.exceptions import ClientError

from core.aws import dynamo_json
from core.aws.dynamo_json import EncodedRequest
from core.aws.settings import DEFAULT_WRITE_THREADS
from core.aws.stack import ORDERS_KEY
from core.pipeline.events import FileRef

BATCH_WRITE_MAX = 25
BATCH_GET_MAX = 100
TASK_MAX_ROWS = 800
NUMBER_COLUMNS = frozenset({"Order_Total"})  # stored as DynamoDB Numbers, exact decimal text
MAX_ATTEMPTS = 8
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 5.0

# A BatchWriteItem request: {"PutRequest": {"Item": ...}} as a dict, or as JSON text.
Request = dict[str, Any] | EncodedRequest


class WriteThrottled(RuntimeError):
    """DynamoDB kept refusing items after every retry: an infrastructure failure."""


@dataclass
class WriteStats:
    written: int = 0  # items put by BatchWriteItem or conditional PutItem
    superseded: int = 0  # rows skipped because a newer upload holds the order
    # Orders this write took over from older uploads: older file id → how many. Reconcile
    # expects them no longer under the older file (``ledger.record_taken``).
    taken: dict[str, int] = field(default_factory=dict)
    batch_calls: int = 0
    get_calls: int = 0
    conditional_puts: int = 0
    retries: int = 0

    def add(self, other: WriteStats) -> None:
        self.written += other.written
        self.superseded += other.superseded
        for older, n in other.taken.items():
            self.taken[older] = self.taken.get(older, 0) + n
        self.batch_calls += other.batch_calls
        self.get_calls += other.get_calls
        self.conditional_puts += other.conditional_puts
        self.retries += other.retries


class Backoff:
    """Exponential backoff with full jitter; raises WriteThrottled when attempts run out."""

    def __init__(
        self,
        what: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self._what, self._sleep, self._rand, self._attempts = what, sleep, rand, attempts
        self.tries = 0

    def wait(self, left: int) -> None:
        self.tries += 1
        if self.tries >= self._attempts:
            raise WriteThrottled(
                f"DynamoDB left {left} {self._what} unprocessed after {self._attempts} attempts"
            )
        self._sleep(self._rand() * min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**self.tries))


def unique_orders(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with each Order_Id once (its last line wins); the frame itself when unique.

    The check is a hash of one column; the rewrite (a polars query) only runs when needed.
    """
    if frame.get_column(ORDERS_KEY).n_unique() == frame.height:
        return frame
    return frame.unique(subset=[ORDERS_KEY], keep="last", maintain_order=True)


def order_items(frame: pl.DataFrame, source: FileRef, ingested_at: str) -> list[dict[str, Any]]:
    """Valid rows (``line`` + schema columns as text) as DynamoDB items, one per row.

    The writer's path for rows with a missing value (``request_texts`` takes the rest); the
    caller has already de-duplicated the keys (``unique_orders``). Built column by column (list
    comprehensions, ``dict(zip(...))`` per row), a few hundred nanoseconds a row.
    """
    columns = [c for c in frame.columns if c != "line"]
    # The provenance values are the same for every row: one shared attribute value each.
    stamp = _stamp(source, ingested_at)
    names = [*columns, "source_line", *stamp]
    wrapped: list[Iterable[Any]] = []
    for column in columns:
        kind = "N" if column in NUMBER_COLUMNS else "S"
        wrapped.append(
            [None if v is None else {kind: v} for v in frame.get_column(column).to_list()]
        )
    wrapped.append([{"N": str(line)} for line in frame.get_column("line").to_list()])
    wrapped.extend(repeat(value) for value in stamp.values())
    items = [dict(zip(names, values, strict=False)) for values in zip(*wrapped, strict=False)]
    if any(frame.get_column(c).null_count() for c in columns):
        items = [{k: v for k, v in item.items() if v is not None} for item in items]
    return items


def request_texts(
    frame: pl.DataFrame, source: FileRef, ingested_at: str
) -> list[EncodedRequest] | None:
    """Each row's PutRequest as JSON text, the same item ``order_items`` builds, or None.

    polars encodes the row's own attributes in one pass (under a microsecond a row, against
    about fifteen for a dict per attribute and ``json.dumps`` of it); the provenance attributes,
    the same for every row, are one shared tail. None when a value is missing: ``order_items``
    then leaves that attribute out, where JSON would carry a null DynamoDB refuses.
    """
    columns = [c for c in frame.columns if c != "line"]
    if any(frame.get_column(c).null_count() for c in columns):
        return None
    attributes = [
        pl.struct(pl.col(c).cast(pl.String).alias("N" if c in NUMBER_COLUMNS else "S")).alias(c)
        for c in columns
    ]
    attributes.append(pl.struct(pl.col("line").cast(pl.String).alias("N")).alias("source_line"))
    tail = json.dumps(_stamp(source, ingested_at))
    encoded = pl.concat_str(
        pl.lit('{"PutRequest": {"Item": '),
        pl.struct(attributes).struct.json_encode().str.strip_suffix("}"),
        pl.lit(", " + tail[1:] + "}}"),
    )
    return [EncodedRequest(text) for text in frame.select(encoded).to_series().to_list()]


def _stamp(source: FileRef, ingested_at: str) -> dict[str, dict[str, str]]:
    """The provenance attributes every row of one file version carries."""
    return {
        "source_file_id": {"S": source.file_id},
        "source_key": {"S": source.key},
        "source_version": {"S": source.version_tag},
        "source_event_time": {"S": source.event_time},
        "source_rank": {"S": source.rank},
        "ingested_at": {"S": ingested_at},
    }


def _put_item(request: Request) -> dict[str, Any]:
    body = json.loads(request) if isinstance(request, EncodedRequest) else request
    item: dict[str, Any] = body["PutRequest"]["Item"]
    return item


class OrdersWriter:
    """The orders table through an injected DynamoDB client."""

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        threads: int = DEFAULT_WRITE_THREADS,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        encode: bool | None = None,
    ) -> None:
        """``encode``: send rows encoded by polars (``request_texts``); None: when ``client``
        takes them (``Clients.dynamodb_bulk`` does)."""
        self._ddb = client
        self.encodes = dynamo_json.installed(client) if encode is None else encode
        self._table = table
        self.threads = max(1, threads)
        self._sleep = sleep
        self._rand = rand

    def session(self, source: FileRef, ingested_at: str) -> WriteSession:
        return WriteSession(self, source, ingested_at)

    def write_requests(
        self, keys: Sequence[str], requests: Sequence[Request], source_id: str, rank: str
    ) -> WriteStats:
        """One slice (≤ 100 distinct keys): read stored ranks, then write what may be written.

        ``requests[i]`` is the PutRequest of ``keys[i]``, a dict or an ``EncodedRequest``.
        """
        stats = WriteStats()
        stored = self._stored_ranks(keys, stats)
        plain: list[Request] = []
        conditional: list[Request] = []
        for key, request in zip(keys, requests, strict=True):
            have = stored.get(key)
            if have is None or have[1] == source_id:
                plain.append(request)
            elif have[0] < rank:
                conditional.append(request)
            else:
                stats.superseded += 1
        for start in range(0, len(plain), BATCH_WRITE_MAX):
            self._batch_write(plain[start : start + BATCH_WRITE_MAX], stats)
        for request in conditional:
            self._conditional_put(_put_item(request), rank, stats)
        return stats

    def _backoff(self, what: str) -> Backoff:
        return Backoff(what, sleep=self._sleep, rand=self._rand)

    def _stored_ranks(self, keys: Sequence[str], stats: WriteStats) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        request: dict[str, Any] = {
            self._table: {
                "Keys": [{ORDERS_KEY: {"S": k}} for k in keys],
                "ProjectionExpression": "#k, source_rank, source_file_id",
                "ExpressionAttributeNames": {"#k": ORDERS_KEY},
                "ConsistentRead": True,
            }
        }
        backoff = self._backoff("keys")
        while request:
            stats.get_calls += 1
            reply = self._ddb.batch_get_item(RequestItems=request)
            for item in reply.get("Responses", {}).get(self._table, []):
                found[item[ORDERS_KEY]["S"]] = (
                    item.get("source_rank", {}).get("S", ""),
                    item.get("source_file_id", {}).get("S", ""),
                )
            request = reply.get("UnprocessedKeys") or {}
            if request:
                stats.retries += 1
                backoff.wait(len(request.get(self._table, {}).get("Keys", [])))
        return found

    def _batch_write(self, requests: list[Request], stats: WriteStats) -> None:
        pending = requests
        backoff = self._backoff("items")
        while pending:
            stats.batch_calls += 1
            reply = self._ddb.batch_write_item(RequestItems={self._table: pending})
            left = reply.get("UnprocessedItems", {}).get(self._table, [])
            stats.written += len(pending) - len(left)
            pending = left
            if pending:
                stats.retries += 1
                backoff.wait(len(pending))

    def _conditional_put(self, item: dict[str, Any], rank: str, stats: WriteStats) -> None:
        stats.conditional_puts += 1
        try:
            reply = self._ddb.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression=(
                    "attribute_not_exists(#k) OR source_rank < :rank OR source_file_id = :src"
                ),
                ExpressionAttributeNames={"#k": ORDERS_KEY},
                ExpressionAttributeValues={":rank": {"S": rank}, ":src": item["source_file_id"]},
                # The item it replaced: whose order this write took (exact, even when another
                # older upload wrote it between our read and our put).
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            stats.superseded += 1  # a newer upload wrote it between our read and our put
            return
        stats.written += 1
        older = reply.get("Attributes", {}).get("source_file_id", {}).get("S")
        if older and older != item["source_file_id"]["S"]:
            stats.taken[older] = stats.taken.get(older, 0) + 1


def task_rows(rows: int, threads: int) -> int:
    """Rows per writer task: whole slices of 100 keys, at least four tasks per thread when the
    chunk allows (so threads finish together), at most ``TASK_MAX_ROWS``.

    A task encodes its rows in one polars query, whose fixed cost (about half a millisecond of
    CPU, mostly waking polars' thread pool) is large for 100 rows and small for 800.
    """
    slices = max(1, rows // (BATCH_GET_MAX * threads * 4))
    return BATCH_GET_MAX * min(slices, TASK_MAX_ROWS // BATCH_GET_MAX)


class WriteSession:
    """Writes one file's valid chunks in order, each chunk's slices in parallel.

    ``submit`` returns as soon as the previous chunk is stored and this one is queued, so the
    engine validates the next chunk while this one is written.
    """

    def __init__(self, writer: OrdersWriter, source: FileRef, ingested_at: str) -> None:
        self._writer = writer
        self._source = source
        self._ingested_at = ingested_at
        self._pool = ThreadPoolExecutor(
            max_workers=writer.threads, thread_name_prefix="orders-writer"
        )
        self._inflight: list[Future[WriteStats]] = []
        self._inflight_rows = 0
        self.stats = WriteStats()  # of the frames whose writes all completed
        self.committed_rows = 0  # rows of those frames (each stored or superseded)

    def submit(self, frame: pl.DataFrame) -> None:
        self._drain()
        self._inflight_rows = frame.height
        # De-duplicated per chunk, so no two slices (calls in flight at once) share a key.
        frame = unique_orders(frame)
        # Requests are built per task on the writer threads: a whole chunk's at once would cost
        # several times the chunk itself in memory.
        size = task_rows(frame.height, self._writer.threads)
        self._inflight = [
            self._pool.submit(self._write_task, frame.slice(start, size))
            for start in range(0, frame.height, size)
        ]

    def _write_task(self, frame: pl.DataFrame) -> WriteStats:
        """Build a task's requests in one go, then write them 100 keys at a time."""
        source, stats = self._source, WriteStats()
        requests = self._requests(frame)
        keys = frame.get_column(ORDERS_KEY).to_list()
        for start in range(0, len(keys), BATCH_GET_MAX):
            end = start + BATCH_GET_MAX
            part = self._writer.write_requests(
                keys[start:end], requests[start:end], source.file_id, source.rank
            )
            stats.add(part)
        return stats

    def _requests(self, frame: pl.DataFrame) -> Sequence[Request]:
        """Rows encoded by polars when the client takes them and no value is missing; else
        one dict item per row."""
        if self._writer.encodes:
            texts = request_texts(frame, self._source, self._ingested_at)
            if texts is not None:
                return texts
        items = order_items(frame, self._source, self._ingested_at)
        return [{"PutRequest": {"Item": item}} for item in items]

    def flush(self) -> None:
        """Wait until the frame in flight is stored (re-raise its failure)."""
        self._drain()

    def _drain(self) -> None:
        inflight, self._inflight = self._inflight, []
        rows, self._inflight_rows = self._inflight_rows, 0
        error: BaseException | None = None
        for future in inflight:
            try:
                self.stats.add(future.result())
            except BaseException as exc:  # keep draining so no write is left running
                error = error or exc
        if error is not None:
            raise error
        self.committed_rows += rows

    def close(self) -> WriteStats:
        """Wait for every write; re-raise the first failure."""
        try:
            self._drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        return self.stats

    def abort(self) -> None:
        for future in self._inflight:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


def write_all(
    writer: OrdersWriter, frames: Iterable[pl.DataFrame], source: FileRef, ingested_at: str
) -> WriteStats:
    """Convenience for tools and benchmarks: write whole frames through one session."""
    session = writer.session(source, ingested_at)
    try:
        for frame in frames:
            session.submit(frame)
    except BaseException:
        session.abort()
        raise
    return session.close()
