"""Settings of a deployed stack, read from its CloudFormation outputs.

The output names are constants: the template declares exactly these, and the template test
checks that it does.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.aws.settings import DEFAULT_FUNCTION_TIMEOUT, Settings, SettingsError

OUTPUT_BUCKET = "OrdersBucketName"
OUTPUT_ORDERS_TABLE = "OrdersTableName"
OUTPUT_FILES_TABLE = "FilesTableName"
OUTPUT_INGEST_QUEUE_URL = "IngestQueueUrl"
OUTPUT_NOTIFY_QUEUE_URL = "NotifyQueueUrl"
OUTPUT_ALERTS_TOPIC_ARN = "AlertsTopicArn"
OUTPUT_SENDER = "SenderAddress"
OUTPUT_RECIPIENTS = "RecipientAddresses"
OUTPUT_ENV_NAME = "EnvName"
OUTPUT_INGEST_QUEUE_ARN = "IngestQueueArn"
OUTPUT_INGEST_DLQ_URL = "IngestDlqUrl"
OUTPUT_NOTIFY_DLQ_URL = "NotifyDlqUrl"
OUTPUT_INGEST_FUNCTION = "IngestFunctionName"
OUTPUT_NOTIFY_FUNCTION = "NotifyFunctionName"
OUTPUT_FUNCTION_TIMEOUT = "IngestFunctionTimeout"
OUTPUT_RECONCILE_JOB = "ReconcileJobName"
# Managed policies to attach to people (docs/deploy.md).
OUTPUT_UPLOADER_POLICY = "UploaderPolicyArn"
OUTPUT_OPERATOR_POLICY = "OperatorPolicyArn"
OUTPUT_VIEWER_POLICY = "ViewerPolicyArn"

# Every output the template declares; the template test checks the two lists agree.
ALL_OUTPUTS = (
    OUTPUT_ENV_NAME,
    OUTPUT_BUCKET,
    OUTPUT_ORDERS_TABLE,
    OUTPUT_FILES_TABLE,
    OUTPUT_INGEST_QUEUE_URL,
    OUTPUT_INGEST_QUEUE_ARN,
    OUTPUT_INGEST_DLQ_URL,
    OUTPUT_NOTIFY_QUEUE_URL,
    OUTPUT_NOTIFY_DLQ_URL,
    OUTPUT_ALERTS_TOPIC_ARN,
    OUTPUT_SENDER,
    OUTPUT_RECIPIENTS,
    OUTPUT_INGEST_FUNCTION,
    OUTPUT_NOTIFY_FUNCTION,
    OUTPUT_FUNCTION_TIMEOUT,
    OUTPUT_RECONCILE_JOB,
    OUTPUT_UPLOADER_POLICY,
    OUTPUT_OPERATOR_POLICY,
    OUTPUT_VIEWER_POLICY,
)

REQUIRED_OUTPUTS = (
    OUTPUT_BUCKET,
    OUTPUT_ORDERS_TABLE,
    OUTPUT_FILES_TABLE,
    OUTPUT_INGEST_QUEUE_URL,
    OUTPUT_NOTIFY_QUEUE_URL,
    OUTPUT_ALERTS_TOPIC_ARN,
)


def stack_outputs(clients: Any, stack_name: str) -> dict[str, str]:
    try:
        stacks = clients.cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", str(exc))
        raise SettingsError(f"stack {stack_name!r} not found: {message}") from None
    except BotoCoreError as exc:  # no credentials, no network: still one line
        raise SettingsError(f"cannot look up stack {stack_name!r}: {exc}") from None
    outputs = stacks[0].get("Outputs", []) if stacks else []
    return {o["OutputKey"]: o["OutputValue"] for o in outputs}


def settings_from_stack(clients: Any, stack_name: str) -> Settings:
    outputs = stack_outputs(clients, stack_name)
    missing = [name for name in REQUIRED_OUTPUTS if not outputs.get(name)]
    if missing:
        raise SettingsError(
            f"stack {stack_name!r} lacks output(s) {', '.join(missing)}: is it an orderpipe stack?"
        )
    recipients = tuple(
        r.strip() for r in outputs.get(OUTPUT_RECIPIENTS, "").split(",") if r.strip()
    )
    timeout = outputs.get(OUTPUT_FUNCTION_TIMEOUT, "")
    return Settings(
        bucket=outputs[OUTPUT_BUCKET],
        orders_table=outputs[OUTPUT_ORDERS_TABLE],
        files_table=outputs[OUTPUT_FILES_TABLE],
        ingest_queue_url=outputs[OUTPUT_INGEST_QUEUE_URL],
        notify_queue_url=outputs[OUTPUT_NOTIFY_QUEUE_URL],
        alerts_topic_arn=outputs[OUTPUT_ALERTS_TOPIC_ARN],
        sender=outputs.get(OUTPUT_SENDER, ""),
        recipients=recipients,
        function_timeout_s=int(timeout) if timeout.isdigit() else DEFAULT_FUNCTION_TIMEOUT,
    )
