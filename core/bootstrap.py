"""The composition root: ``Settings`` plus ``Clients`` in, every orderpipe service out.

The Lambda handlers, the Glue job, every CLI command and the integration tests build their
services here, so the wiring (which client, which table, which queue) is written once. It sits
above ``core.ops`` and below the CLI, the handlers and the local stack.

Each builder imports its service's module when it is called: the ingest Lambda loads the
pipeline only, and the Glue job (Python 3.9, no polars) loads reconcile and its adapters only.
So this module stays Python 3.9 syntax and imports nothing at the top but ``core.aws``.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

from core.aws.clients import Clients
from core.aws.settings import Settings

if TYPE_CHECKING:
    from core.ops.dlq import DeadLetterQueue
    from core.ops.ops_adapters import LedgerReader
    from core.ops.reconcile import Reconciler
    from core.ops.replay import Replayer
    from core.ops.upload import Uploader
    from core.pipeline.ingest import IngestService, Span
    from core.pipeline.ledger import DynamoLedger
    from core.pipeline.notify import Notifier


# ---- clients -------------------------------------------------------------------------------


def clients(endpoint_url: str | None = None) -> Clients:
    """Clients for one stack: AWS itself, or the emulator at ``endpoint_url``."""
    return Clients(endpoint_url=endpoint_url or None)


@cache
def _warm(endpoint_url: str | None) -> Clients:
    return clients(endpoint_url)


def warm_clients() -> Clients:
    """The handlers' clients, reused while the function is warm (a client costs ~50 ms)."""
    return _warm(os.environ.get("AWS_ENDPOINT_URL") or None)


def forget_warm_clients() -> None:
    """Drop the handlers' cached clients: the next invocation builds fresh ones."""
    _warm.cache_clear()


def probe_clients(of: Clients) -> Clients:
    """The same stack with retries off, so a missing API (the emulator's 500) fails at once."""
    return Clients(endpoint_url=of.endpoint_url, region=of.region, max_attempts=1)


# ---- the pipeline (Lambda) -------------------------------------------------------------------


def ingest(settings: Settings, clients: Clients, *, span: Span | None = None) -> IngestService:
    """The ingest service: S3 event in, orders, rejects and a notice out."""
    from core.pipeline.ingest import IngestService, S3Objects, SqsNotices, no_span
    from core.pipeline.orders_store import OrdersWriter
    from core.validation.engine import validate

    settings.require("bucket", "orders_table", "files_table", "notify_queue_url")
    objects = S3Objects(clients.s3)
    return IngestService(
        settings=settings,
        ledger=ledger(settings, clients),
        objects=objects,
        writer=OrdersWriter(
            clients.dynamodb_bulk, settings.orders_table, threads=settings.write_threads
        ),
        rejects=objects,
        notices=SqsNotices(clients.sqs, settings.notify_queue_url),
        validate=validate,
        span=span or no_span,
    )


def notifier(settings: Settings, clients: Clients) -> Notifier:
    """The notifier: one email per batch of file notices."""
    from core.pipeline.notify import (
        DynamoNotifyLedger,
        Notifier,
        S3RejectsStore,
        SesMailer,
        check_recipients,
        lease_for,
    )
    from core.validation.schema import default_schema

    check_recipients(settings)
    return Notifier(
        DynamoNotifyLedger(clients.dynamodb, settings.files_table),
        S3RejectsStore(clients.s3),
        SesMailer(clients.ses),
        sender=settings.sender,
        recipients=settings.recipients,
        outbox_dir=settings.outbox_dir,
        lease_s=lease_for(settings),
        schema=default_schema(),
        stack_name=settings.stack_name,
    )


def ledger(settings: Settings, clients: Clients) -> DynamoLedger:
    """The per-file ledger (``orderpipe status``, upload's wait, the demo, ingest)."""
    from core.pipeline.ledger import DynamoLedger

    return DynamoLedger(clients.dynamodb, settings.files_table)


# ---- operations (Glue job and CLI) -----------------------------------------------------------


def reconciler(settings: Settings, clients: Clients) -> Reconciler:
    """Reconcile: the bucket against the ledger (the Glue job, ``orderpipe reconcile``)."""
    from core.ops.ops_adapters import (
        AlertsTopic,
        BucketObjects,
        CloudWatchMetrics,
        IngestQueue,
        OrderCounter,
    )
    from core.ops.reconcile import Reconciler

    return Reconciler(
        objects=BucketObjects(clients.s3, settings.bucket),
        ledger=ledger_reader(settings, clients),
        orders=OrderCounter(clients.dynamodb, settings.orders_table),
        queue=IngestQueue(clients.sqs, settings.ingest_queue_url),
        alerts=AlertsTopic(clients.sns, settings.alerts_topic_arn)
        if settings.alerts_topic_arn
        else None,
        metrics=CloudWatchMetrics(clients.client("cloudwatch")),
    )


def ledger_reader(settings: Settings, clients: Clients) -> LedgerReader:
    """The ledger as reconcile and the DLQ review read it (Python 3.9, no polars)."""
    from core.ops.ops_adapters import LedgerReader

    return LedgerReader(clients.dynamodb, settings.files_table)


def replayer(settings: Settings, clients: Clients) -> Replayer:
    """``orderpipe replay``: send chosen files through the pipeline again."""
    from core.ops.ops_adapters import BucketObjects, IngestQueue
    from core.ops.replay import Replayer

    return Replayer(
        ledger(settings, clients),
        BucketObjects(clients.s3, settings.bucket),
        IngestQueue(clients.sqs, settings.ingest_queue_url),
    )


def dead_letters(clients: Clients, source_url: str) -> DeadLetterQueue:
    """The DLQ behind ``source_url`` (``orderpipe dlq``); raises DlqError if it has none."""
    from core.ops.dlq import DeadLetterQueue

    probe = probe_clients(clients)
    return DeadLetterQueue.for_source(clients.sqs, source_url, probe_sqs=probe.sqs)


def uploader(settings: Settings, clients: Clients) -> Uploader:
    """``orderpipe upload`` and the demo: files into the orders bucket."""
    from core.ops.upload import Uploader

    return Uploader(clients.s3, settings.bucket)
