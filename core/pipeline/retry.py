"""When a failed SQS message comes back: a backoff by receive count, set on that one message.

The queues' own visibility timeout is 6x the function timeout (90 min for ingest on AWS), so
that a long run is never delivered twice. Left alone, a message that failed in seconds (a
throttle past botocore's retries, a reset, a busy file) would wait all of it. Instead the
handler sets the failed message's visibility with ``ChangeMessageVisibility`` from the record's
``ApproximateReceiveCount``: 30 s after the first receive, 2 min after the second, 8 min after
the third, 30 min after the fourth (``Settings.retry_schedule_s``; the local stack runs a
scaled schedule). A message failing on its last receive is made visible at once: its next
receive moves it to the DLQ, so there is nothing to wait for. Persistent failure thus reaches
the DLQ about 41 minutes after the first attempt, with the ledger's ``last_error`` saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.aws.stack import MAX_RECEIVE_COUNT

log = logging.getLogger(__name__)


def backoff_s(
    receive_count: int, schedule: Sequence[int], max_receives: int = MAX_RECEIVE_COUNT
) -> int:
    """Seconds before a message that failed on its ``receive_count``-th receive comes back."""
    if receive_count >= max_receives or not schedule:
        return 0
    return int(schedule[min(max(receive_count, 1), len(schedule)) - 1])


def retry_after(sqs: Any, queue_url: str, receipt_handle: str, seconds: int) -> bool:
    """Make one received message visible again in ``seconds``; False if SQS refused.

    A refusal is logged, not raised: the message then waits the queue's visibility timeout,
    later than planned but never lost.
    """
    try:
        sqs.change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )
    except (ClientError, BotoCoreError) as exc:
        log.warning("could not set the retry delay (%s s) of a failed message: %s", seconds, exc)
        return False
    return True


def retry_failed(
    sqs: Any, queue_url: str, receipt_handle: str, receive_count: int, schedule: Sequence[int]
) -> int:
    """Schedule a failed message's next receive by the backoff; return the delay chosen."""
    delay = backoff_s(receive_count, schedule)
    if queue_url and receipt_handle:
        retry_after(sqs, queue_url, receipt_handle, delay)
    return delay
