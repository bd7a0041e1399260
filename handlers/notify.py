"""Lambda on the notify queue: one email per batch of file notices, failed messages retried."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from core import bootstrap
from core.aws.settings import Settings
from core.aws.stack import NOTIFY_SERVICE
from core.pipeline.notify import back_off_failed, messages_from_event

logger = Logger(service=NOTIFY_SERVICE)
tracer = Tracer(service=NOTIFY_SERVICE)
metrics = Metrics(namespace="orderpipe", service=NOTIFY_SERVICE)
# The email covers the whole batch, so a batch where everything failed is reported, not raised;
# each failed message comes back after its backoff (core/pipeline/retry.py), not the queue's 6 min.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = Settings.from_env().require("files_table", "sender", "recipients")
    clients = bootstrap.warm_clients()
    notifier = bootstrap.notifier(settings, clients)
    with tracer.provider.in_subsegment("notify"):
        report = notifier.handle(messages_from_event(event))
    back_off_failed(event, report, clients.sqs, settings)
    logger.info("notify batch done", extra={"report": report.summary()})
    metrics.add_metric("EmailsSent", MetricUnit.Count, report.emails_sent)
    metrics.add_metric("FilesNotified", MetricUnit.Count, report.files_notified)
    metrics.add_metric("NoticesFailed", MetricUnit.Count, len(report.failed))
    metrics.add_metric("AttachmentsLinked", MetricUnit.Count, report.linked)
    return dict(process_partial_response(event, report.check, processor, context))
