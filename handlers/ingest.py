"""Lambda: S3 ObjectCreated notifications (via SQS) → validated orders, rejects, notices."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from core import bootstrap
from core.aws.settings import Settings
from core.aws.stack import INGEST_SERVICE
from core.pipeline.ingest import Deadline, IngestResult, RetryLater, handle_record

logger = Logger(service=INGEST_SERVICE)
tracer = Tracer(service=INGEST_SERVICE)
metrics = Metrics(namespace="orderpipe", service=INGEST_SERVICE)
# A record that fails (a busy or paused file, a broken attempt) is reported in batchItemFailures
# and comes back later; it is not a Lambda error, even when it is the batch's only record.
# Infrastructure failures are counted as FilesFailed (IngestFailuresAlarm), busy and paused files
# as FilesDeferred; Lambda's Errors metric is left to crashes and timeouts.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def _observe(result: IngestResult) -> None:
    logger.set_correlation_id(result.key)
    logger.info("file ingested", extra={k: str(v) for k, v in result.__dict__.items()})
    if result.skipped:
        return
    metrics.add_metric("FilesProcessed", MetricUnit.Count, 1)
    metrics.add_metric("FilesRejected", MetricUnit.Count, int(result.status == "REJECTED"))
    metrics.add_metric("RowsValid", MetricUnit.Count, result.valid)
    metrics.add_metric("RowsRejected", MetricUnit.Count, result.invalid)
    metrics.add_metric("ProcessingLatency", MetricUnit.Milliseconds, result.seconds * 1000)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    clients = bootstrap.warm_clients()
    service = bootstrap.ingest(Settings.from_env(), clients, span=tracer.provider.in_subsegment)
    deadline = Deadline.of(context)  # a big file stops in time and resumes on redelivery

    def record_handler(record: SQSRecord) -> None:
        count = int(record.attributes.approximate_receive_count or 1)
        try:
            results = handle_record(
                service, record.body, record.receipt_handle, clients.sqs, count, deadline=deadline
            )
        except RetryLater:
            metrics.add_metric("FilesDeferred", MetricUnit.Count, 1)
            raise
        except Exception:
            metrics.add_metric("FilesFailed", MetricUnit.Count, 1)
            raise
        for result in results:
            _observe(result)

    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
