"""The template's contract with the code: one source of truth, checked on every run.

core/aws/stack.py defines names, timings and table shapes (and builds the local stack from them);
core/aws/settings.py the environment variable names; core/aws/stack_outputs.py the outputs the CLI
reads. The template must agree with all three, and hold its security promises.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest

from core.aws import stack as stack_def
from core.aws.settings import (
    ALL_ENV_VARS,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_ROWS,
    DEFAULT_TMP_MB,
    DEFAULT_WRITE_THREADS,
    ENV_ALERTS_TOPIC_ARN,
    ENV_BUCKET,
    ENV_FILES_TABLE,
    ENV_FUNCTION_TIMEOUT,
    ENV_INGEST_QUEUE_URL,
    ENV_MAX_FILE_BYTES,
    ENV_MAX_ROWS,
    ENV_NOTIFY_QUEUE_URL,
    ENV_ORDERS_TABLE,
    ENV_RECIPIENTS,
    ENV_SENDER,
    ENV_STACK_NAME,
    ENV_TMP_MB,
    ENV_WRITE_THREADS,
    INCOMING_PREFIX,
    REJECTS_PREFIX,
    REPORTS_PREFIX,
    Settings,
)
from core.aws.stack_outputs import ALL_OUTPUTS, REQUIRED_OUTPUTS
from core.release.package import GLUE_SCRIPT, PROJECT_ROOT
from core.release.template import TemplateError, check_values, load_template, parse_template

T = load_template()
RES: dict[str, Any] = T["Resources"]
PARAMS: dict[str, Any] = T["Parameters"]


def of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in RES.items() if r["Type"] == kind}


def props(name: str) -> dict[str, Any]:
    return RES[name]["Properties"]


def ref_name(value: Any) -> str:
    """The logical id a Ref/GetAtt points at."""
    if "Ref" in value:
        return str(value["Ref"])
    return str(value["Fn::GetAtt"][0])


def sub_name(value: Any, env: str) -> str:
    """A ``!Sub orderpipe-${EnvName}-...`` physical name with EnvName filled in."""
    return str(value["Fn::Sub"]).replace("${EnvName}", env)


def functions() -> dict[str, dict[str, Any]]:
    return of_type("AWS::Lambda::Function")


def function_by_handler(handler: str) -> dict[str, Any]:
    (found,) = [
        f["Properties"] for f in functions().values() if f["Properties"]["Handler"] == handler
    ]
    return found


def statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    found = doc["Statement"]
    return found if isinstance(found, list) else [found]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def iam_statements() -> list[tuple[str, dict[str, Any]]]:
    """Every identity-policy statement of every role and managed policy."""
    out = []
    for name, role in of_type("AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            out += [(name, s) for s in statements(policy["PolicyDocument"])]
    for name, policy in of_type("AWS::IAM::ManagedPolicy").items():
        out += [(name, s) for s in statements(policy["Properties"]["PolicyDocument"])]
    return out


def all_policy_statements() -> list[tuple[str, dict[str, Any]]]:
    out = iam_statements()
    for name, res in RES.items():
        doc = res["Properties"].get("PolicyDocument") or res["Properties"].get("KeyPolicy")
        if doc and res["Type"] != "AWS::IAM::Role":
            out += [(name, s) for s in statements(doc)]
    return out


# ---- environment variables and handlers --------------------------------------------------


INGEST_ENV = {
    ENV_BUCKET,
    ENV_ORDERS_TABLE,
    ENV_FILES_TABLE,
    ENV_INGEST_QUEUE_URL,
    ENV_NOTIFY_QUEUE_URL,
    ENV_WRITE_THREADS,
    ENV_FUNCTION_TIMEOUT,
    ENV_MAX_FILE_BYTES,
    ENV_MAX_ROWS,
    ENV_TMP_MB,
}
# Notify's own queue URL: it sets a failed message's retry delay (core/pipeline/retry.py).
NOTIFY_ENV = {
    ENV_BUCKET,
    ENV_FILES_TABLE,
    ENV_SENDER,
    ENV_RECIPIENTS,
    ENV_FUNCTION_TIMEOUT,
    ENV_NOTIFY_QUEUE_URL,
    ENV_STACK_NAME,
}


def orderpipe_env(fn: dict[str, Any]) -> dict[str, Any]:
    variables = fn["Environment"]["Variables"]
    return {k: v for k, v in variables.items() if k.startswith("ORDERPIPE_")}


def test_function_env_names_are_the_settings_constants() -> None:
    ingest = orderpipe_env(function_by_handler("handlers.ingest.handler"))
    notify = orderpipe_env(function_by_handler("handlers.notify.handler"))
    assert set(ingest) == INGEST_ENV
    assert set(notify) == NOTIFY_ENV
    # Only the reconcile job (through its arguments) publishes alerts.
    assert set(ingest) | set(notify) | {ENV_ALERTS_TOPIC_ARN} == set(ALL_ENV_VARS)


def test_notify_knows_its_stack_name_for_the_emails_commands() -> None:
    notify = orderpipe_env(function_by_handler("handlers.notify.handler"))
    assert notify[ENV_STACK_NAME] == {"Ref": "AWS::StackName"}
    settings = Settings.from_env({ENV_STACK_NAME: "prod-orders"})
    assert settings.stack_name == "prod-orders"
    assert Settings.from_env(settings.to_env()).stack_name == "prod-orders"
    assert ENV_STACK_NAME not in Settings().to_env()  # the local stack sets none


def test_function_timeout_setting_is_the_functions_own_timeout() -> None:
    for fn in functions().values():
        p = fn["Properties"]
        assert orderpipe_env(p)[ENV_FUNCTION_TIMEOUT] == p["Timeout"]


def test_settings_built_from_the_template_env_satisfy_each_handler() -> None:
    # Refs become placeholder strings and numbers their defaults: what Lambda would pass.
    def resolve(value: Any) -> str:
        if isinstance(value, dict) and "Ref" in value and value["Ref"] in PARAMS:
            return str(PARAMS[value["Ref"]].get("Default", "x@example.com"))
        return "placeholder"

    for handler, needs in [
        ("handlers.ingest.handler", ("bucket", "orders_table", "files_table", "notify_queue_url")),
        ("handlers.notify.handler", ("files_table", "sender", "recipients")),
    ]:
        env = {k: resolve(v) for k, v in orderpipe_env(function_by_handler(handler)).items()}
        Settings.from_env(env).require(*needs)


@pytest.mark.parametrize("name", sorted(of_type("AWS::Lambda::Function")))
def test_every_handler_path_imports(name: str) -> None:
    module_name, _, attr = props(name)["Handler"].rpartition(".")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr))


def test_reconcile_job_arguments_are_the_ones_the_job_reads() -> None:
    job = importlib.import_module("handlers.reconcile_job")
    # The script package uploads for ScriptLocation is this module, and it has an entry point.
    assert job.__file__ == str(PROJECT_ROOT / GLUE_SCRIPT)
    assert callable(job.main)
    assert props("ReconcileJob")["Command"]["ScriptLocation"] == {
        "Fn::Sub": "s3://${ArtifactBucket}/${ReconcileScriptKey}"
    }
    args = props("ReconcileJob")["DefaultArguments"]
    names = {k[2:] for k in args if k != "--extra-py-files"}
    assert set(job.REQUIRED) <= names
    assert names <= set(job.REQUIRED) | set(job.OPTIONAL)


def test_reconcile_job_is_a_small_python39_shell_on_a_schedule_that_starts() -> None:
    job = props("ReconcileJob")
    assert job["Command"]["Name"] == "pythonshell"
    assert job["Command"]["PythonVersion"] == "3.9"
    assert job["MaxCapacity"] == 0.0625
    assert "--extra-py-files" in job["DefaultArguments"]
    (trigger,) = of_type("AWS::Glue::Trigger").values()
    t = trigger["Properties"]
    assert t["Type"] == "SCHEDULED"
    assert t["StartOnCreation"] is True
    assert t["Schedule"].startswith("cron(")
    assert t["Schedule"].split()[1] == "*"  # every hour
    assert [ref_name(a["JobName"]) for a in t["Actions"]] == ["ReconcileJob"]


def test_glue_failures_reach_the_alerts_topic() -> None:
    (rule,) = of_type("AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.glue"]
    assert pattern["detail-type"] == ["Glue Job State Change"]
    assert sorted(pattern["detail"]["state"]) == ["ERROR", "FAILED", "TIMEOUT"]
    assert ref_name(pattern["detail"]["jobName"][0]) == "ReconcileJob"
    assert [ref_name(t["Arn"]) for t in rule["Properties"]["Targets"]] == ["AlertsTopic"]


# ---- queues, mappings, alarms --------------------------------------------------------------

CONSUMERS = {
    "IngestQueue": ("IngestTimeoutSeconds", stack_def.AWS_TIMINGS.ingest_visibility_s),
    "NotifyQueue": ("NotifyTimeoutSeconds", stack_def.AWS_TIMINGS.notify_visibility_s),
}


def dlqs() -> set[str]:
    return {
        ref_name(q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
        for q in of_type("AWS::SQS::Queue").values()
        if "RedrivePolicy" in q["Properties"]
    }


def test_visibility_is_at_least_six_times_the_largest_timeout_and_matches_stack_py() -> None:
    for queue, (timeout_param, expected) in CONSUMERS.items():
        visibility = props(queue)["VisibilityTimeout"]
        assert visibility == expected
        assert visibility >= stack_def.VISIBILITY_FACTOR * PARAMS[timeout_param]["MaxValue"]
    assert PARAMS["IngestTimeoutSeconds"]["Default"] == stack_def.AWS_TIMINGS.ingest_timeout_s
    assert PARAMS["NotifyTimeoutSeconds"]["Default"] == stack_def.AWS_TIMINGS.notify_timeout_s


def test_each_function_consumes_the_queue_whose_visibility_covers_its_timeout() -> None:
    for esm in of_type("AWS::Lambda::EventSourceMapping").values():
        p = esm["Properties"]
        queue = ref_name(p["EventSourceArn"])
        fn = props(ref_name(p["FunctionName"]))
        assert fn["Timeout"] == {"Ref": CONSUMERS[queue][0]}


def test_every_sqs_mapping_reports_batch_item_failures_with_stack_py_batching() -> None:
    mappings = {
        ref_name(m["Properties"]["EventSourceArn"]): m["Properties"]
        for m in of_type("AWS::Lambda::EventSourceMapping").values()
    }
    assert set(mappings) == set(CONSUMERS)
    for p in mappings.values():
        assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert "MaximumBatchingWindowInSeconds" in p
    timings = stack_def.AWS_TIMINGS
    assert mappings["IngestQueue"]["BatchSize"] == timings.ingest_batch_size
    assert mappings["NotifyQueue"]["BatchSize"] == timings.notify_batch_size
    assert (
        mappings["NotifyQueue"]["MaximumBatchingWindowInSeconds"] == timings.notify_batch_window_s
    )
    assert mappings["IngestQueue"]["ScalingConfig"]["MaximumConcurrency"] == {
        "Ref": "IngestMaxConcurrency"
    }


def test_every_queue_has_a_dlq_and_stack_py_redrive_settings() -> None:
    queues = of_type("AWS::SQS::Queue")
    sources = set(queues) - dlqs()
    assert sources == set(CONSUMERS)
    for name in sources:
        redrive = props(name)["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == stack_def.MAX_RECEIVE_COUNT
        assert redrive["deadLetterTargetArn"]["Fn::GetAtt"][1] == "Arn"
    for name in dlqs():
        assert props(name)["MessageRetentionPeriod"] == stack_def.DLQ_RETENTION_S
        assert "RedrivePolicy" not in props(name)


def alarms() -> list[dict[str, Any]]:
    return [a["Properties"] for a in of_type("AWS::CloudWatch::Alarm").values()]


def test_every_dlq_has_an_alarm_to_the_alerts_topic() -> None:
    watched = {
        ref_name(d["Value"])
        for a in alarms()
        if a["MetricName"] == "ApproximateNumberOfMessagesVisible"
        for d in a["Dimensions"]
        if d["Name"] == "QueueName"
    }
    assert watched == dlqs()
    for a in alarms():
        assert [ref_name(x) for x in a["AlarmActions"]] == ["AlertsTopic"]
        assert sub_name(a["AlarmName"], "e").startswith("orderpipe-e-")  # topic policy pattern


def test_ingest_backlog_errors_and_throttles_have_alarms() -> None:
    ingest = {
        (a["Namespace"], a["MetricName"]): ref_name(a["Dimensions"][0]["Value"])
        for a in alarms()
        if isinstance(a["Dimensions"][0]["Value"], dict)
    }
    assert ingest[("AWS/SQS", "ApproximateAgeOfOldestMessage")] == "IngestQueue"
    assert ingest[("AWS/Lambda", "Errors")] == "IngestFunction"
    assert ingest[("AWS/Lambda", "Throttles")] == "IngestFunction"


def test_ingest_failures_alarm_watches_the_metric_the_handler_emits() -> None:
    """A record failing is no Lambda error any more: its own metric must be what is watched."""
    import handlers.ingest

    (alarm,) = [a for a in alarms() if a["MetricName"] == "FilesFailed"]
    emitted = handlers.ingest.metrics
    assert alarm["Namespace"] == emitted.namespace
    assert alarm["Dimensions"] == [{"Name": "service", "Value": emitted.service}]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")


def test_alarm_descriptions_state_the_retry_schedule() -> None:
    """Whoever is paged reads the schedule in the alarm: it must be the one the code runs."""
    from core.aws.settings import DEFAULT_RETRY_SCHEDULE_S

    spelled = {30: "30 s", 120: "2 min", 480: "8 min", 1800: "30 min"}
    wanted = [spelled[s] for s in DEFAULT_RETRY_SCHEDULE_S]
    texts = {a["MetricName"]: " ".join(a["AlarmDescription"].split()) for a in alarms()}
    dlq_alarms = [
        " ".join(a["AlarmDescription"].split())
        for a in alarms()
        if a["MetricName"] == "ApproximateNumberOfMessagesVisible"
    ]
    for text in [texts["FilesFailed"], *dlq_alarms]:
        assert ", ".join(wanted[:-1]) in text, text
        assert wanted[-1] in text, text


# ---- security -------------------------------------------------------------------------------

NO_RESOURCE_SCOPE = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "cloudwatch:PutMetricData",
}


def test_no_full_access_managed_policy() -> None:
    for role in of_type("AWS::IAM::Role").values():
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            assert "FullAccess" not in str(arn)
    # The stack's own managed policies are for people, never attached to its roles.
    assert set(of_type("AWS::IAM::ManagedPolicy")) == set(PEOPLE_POLICIES)
    for policy in of_type("AWS::IAM::ManagedPolicy").values():
        p = policy["Properties"]
        assert not {"Roles", "Users", "Groups"} & set(p)


def test_no_wildcard_action_is_allowed() -> None:
    for where, s in all_policy_statements():
        if s["Effect"] != "Allow":
            continue  # a Deny on s3:* (the TLS rule) narrows, it does not grant
        for action in as_list(s["Action"]):
            assert "*" not in action, (where, action)


def test_star_resources_only_where_aws_offers_nothing_narrower() -> None:
    for where, s in iam_statements():
        if "*" in as_list(s["Resource"]):
            assert set(as_list(s["Action"])) <= NO_RESOURCE_SCOPE, (where, s["Action"])


def test_one_role_per_function_and_job() -> None:
    roles = [ref_name(f["Properties"]["Role"]) for f in functions().values()]
    roles.append(ref_name(props("ReconcileJob")["Role"]))
    assert len(roles) == len(set(roles)) == len(of_type("AWS::IAM::Role"))


def test_functions_are_traced_arm64_by_default_with_retained_logs() -> None:
    assert PARAMS["Architecture"]["Default"] == "arm64"
    assert set(PARAMS["PythonRuntime"]["AllowedValues"]) <= {"python3.12", "python3.13"}
    log_groups = of_type("AWS::Logs::LogGroup")
    for fn in functions().values():
        p = fn["Properties"]
        assert p["TracingConfig"] == {"Mode": "Active"}
        assert p["Architectures"] == [{"Ref": "Architecture"}]
        group = ref_name(p["LoggingConfig"]["LogGroup"])
        assert group in log_groups
        assert log_groups[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert sub_name(log_groups[group]["Properties"]["LogGroupName"], "e") == (
            "/aws/lambda/" + sub_name(p["FunctionName"], "e")
        )


def test_bucket_is_versioned_private_encrypted_tls_only_with_lifecycles() -> None:
    b = props("OrdersBucket")
    assert b["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(b["PublicAccessBlockConfiguration"].values())
    assert len(b["PublicAccessBlockConfiguration"]) == 4
    assert b["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    prefixes = {r.get("Prefix") for r in b["LifecycleConfiguration"]["Rules"]}
    assert {REJECTS_PREFIX, REPORTS_PREFIX} <= prefixes
    (tls,) = statements(props("OrdersBucketPolicy")["PolicyDocument"])
    assert tls["Effect"] == "Deny"
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_bucket_notifies_ingest_for_incoming_only_and_the_queue_trusts_only_it() -> None:
    (cfg,) = props("OrdersBucket")["NotificationConfiguration"]["QueueConfigurations"]
    assert ref_name(cfg["Queue"]) == "IngestQueue"
    assert cfg["Event"] == "s3:ObjectCreated:*"
    assert cfg["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": INCOMING_PREFIX}]
    (allow,) = statements(props("IngestQueuePolicy")["PolicyDocument"])
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    source = allow["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    assert source.endswith(props("OrdersBucket")["BucketName"]["Fn::Sub"])
    assert allow["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_queues_tables_and_topic_are_encrypted() -> None:
    for q in of_type("AWS::SQS::Queue").values():
        assert q["Properties"]["SqsManagedSseEnabled"] is True
    for t in of_type("AWS::DynamoDB::Table").values():
        assert t["Properties"]["SSESpecification"] == {"SSEEnabled": True}
        assert t["Properties"]["PointInTimeRecoverySpecification"] == {
            "PointInTimeRecoveryEnabled": True
        }
    assert ref_name(props("AlertsTopic")["KmsMasterKeyId"]) == "AlertsKey"
    assert props("AlertsKey")["EnableKeyRotation"] is True


def test_alerts_topic_accepts_only_this_stacks_rule_and_alarms() -> None:
    services = {
        s["Principal"]["Service"] for s in statements(props("AlertsTopicPolicy")["PolicyDocument"])
    }
    assert services == {"events.amazonaws.com", "cloudwatch.amazonaws.com"}
    (sub,) = of_type("AWS::SNS::Subscription").values()
    assert sub["Properties"]["Protocol"] == "email"


# ---- one source of truth with core/aws/stack.py -----------------------------------------------


def without_name(definition: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in definition.items() if k != "TableName"}


@pytest.mark.parametrize(
    ("resource", "definition"),
    [
        ("FilesTable", stack_def.files_table_definition),
        ("OrdersTable", stack_def.orders_table_definition),
    ],
)
def test_tables_have_stack_py_keys_and_indexes(resource: str, definition: Any) -> None:
    p = props(resource)
    expected = without_name(definition("x"))
    got = {k: p[k] for k in expected}
    assert got == expected


def test_files_table_ttl_is_stack_py_attribute_and_orders_keep_forever() -> None:
    assert props("FilesTable")["TimeToLiveSpecification"] == {
        "AttributeName": stack_def.FILES_TTL_ATTRIBUTE,
        "Enabled": True,
    }
    assert "TimeToLiveSpecification" not in props("OrdersTable")


def test_physical_names_follow_stack_names() -> None:
    names = stack_def.StackNames.for_env("qa")
    by_field = {
        "orders_table": props("OrdersTable")["TableName"],
        "files_table": props("FilesTable")["TableName"],
        "ingest_queue": props("IngestQueue")["QueueName"],
        "ingest_dlq": props("IngestDeadLetterQueue")["QueueName"],
        "notify_queue": props("NotifyQueue")["QueueName"],
        "notify_dlq": props("NotifyDeadLetterQueue")["QueueName"],
        "alerts_topic": props("AlertsTopic")["TopicName"],
        "glue_job": props("ReconcileJob")["Name"],
    }
    for field, value in by_field.items():
        assert sub_name(value, "qa") == getattr(names, field), field
    # Bucket names are global: the template appends account and region to the same stem.
    assert sub_name(props("OrdersBucket")["BucketName"], "qa").startswith(names.bucket + "-")


def test_the_longest_env_name_keeps_the_bucket_name_within_63_characters() -> None:
    longest = "e" * 18
    check_values(T, {**GOOD, "EnvName": longest}, previous={})
    with pytest.raises(TemplateError, match="EnvName"):
        check_values(T, {**GOOD, "EnvName": longest + "e"}, previous={})
    name = sub_name(props("OrdersBucket")["BucketName"], longest)
    name = name.replace("${AWS::AccountId}", "1" * 12).replace("${AWS::Region}", "ap-southeast-2")
    assert len(name) <= 63


def test_outputs_are_exactly_what_the_cli_reads() -> None:
    assert set(T["Outputs"]) == set(ALL_OUTPUTS)
    assert set(REQUIRED_OUTPUTS) <= set(ALL_OUTPUTS)


# ---- parameter checks (what deploy enforces before calling AWS) ----------------------------

GOOD = {
    "SenderAddress": "orders@example.com",
    "RecipientAddresses": "a@example.com,b@example.com",
    "AlertAddress": "ops@example.com",
    "ArtifactBucket": "orderpipe-artifacts-x",
    "CodeKey": "c.zip",
    "DepsLayerKey": "l.zip",
    "ReconcileScriptKey": "r.py",
    "ReconcileWheelKey": "r.whl",
}


def test_good_values_pass_and_defaults_fill_the_rest() -> None:
    final = check_values(T, GOOD, previous={})
    assert final["Architecture"] == "arm64"
    assert final["SenderAddress"] == "orders@example.com"
    assert set(final) == set(PARAMS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SenderAddress": "not-an-email"}, "SenderAddress must be one email address"),
        ({"RecipientAddresses": "a@example.com, b@example.com"}, "RecipientAddresses must be"),
        ({"IngestTimeoutSeconds": "901"}, "IngestTimeoutSeconds must be at most 900"),
        ({"IngestMemoryMb": "lots"}, "IngestMemoryMb must be a number"),
        ({"Architecture": "sparc"}, "Architecture must be one of arm64, x86_64"),
        ({"Colour": "blue"}, "unknown parameter(s) Colour"),
    ],
)
def test_bad_values_fail_with_one_line(change: dict[str, str], message: str) -> None:
    with pytest.raises(TemplateError) as err:
        check_values(T, {**GOOD, **change}, previous={})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_required_values_are_named_and_previous_values_count() -> None:
    without_sender = {k: v for k, v in GOOD.items() if k != "SenderAddress"}
    with pytest.raises(TemplateError, match="SenderAddress"):
        check_values(T, without_sender, previous={})
    final = check_values(T, without_sender, previous={"SenderAddress": "old@example.com"})
    assert final["SenderAddress"] == "old@example.com"


def test_short_tags_load_as_their_long_form() -> None:
    doc = parse_template(
        "Resources:\n  A:\n    Type: X\n    Properties:\n"
        "      B: !GetAtt Q.Arn\n      C: !Sub a-${X}\n      D: !Ref P\n      E: !Join [',', [a]]\n"
    )
    p = doc["Resources"]["A"]["Properties"]
    assert p == {
        "B": {"Fn::GetAtt": ["Q", "Arn"]},
        "C": {"Fn::Sub": "a-${X}"},
        "D": {"Ref": "P"},
        "E": {"Fn::Join": [",", ["a"]]},
    }
    with pytest.raises(TemplateError, match="no Resources"):
        parse_template("Parameters: {}\n")


def test_the_deployed_writer_threads_default_is_the_settings_one() -> None:
    """The template's parameter and the Python default describe one figure."""
    assert PARAMS["IngestWriteThreads"]["Default"] == DEFAULT_WRITE_THREADS


def test_the_deployed_limits_are_the_settings_ones_and_tmp_is_the_functions_own() -> None:
    """MaxFileBytes, MaxRows and IngestTmpMb default to the figures docs/deploy.md derives, and
    the function is told the /tmp size it really has."""
    assert PARAMS["MaxFileBytes"]["Default"] == DEFAULT_MAX_FILE_BYTES
    assert PARAMS["MaxRows"]["Default"] == DEFAULT_MAX_ROWS
    assert PARAMS["IngestTmpMb"]["Default"] == DEFAULT_TMP_MB
    ingest = function_by_handler("handlers.ingest.handler")
    assert ingest["EphemeralStorage"]["Size"] == {"Ref": "IngestTmpMb"}
    assert ingest["Environment"]["Variables"][ENV_TMP_MB] == {"Ref": "IngestTmpMb"}


# ---- least privilege, derived from the code (tests/unit/aws_calls.py) -------------------------

PEOPLE_POLICIES = ("UploaderPolicy", "OperatorPolicy", "ViewerPolicy")
# Statements for what the platform does with a role, not what orderpipe's code calls: Lambda
# writes logs and traces and polls the queue of its event source mapping; Glue loads the job's
# code and writes its logs; publishing to the KMS-encrypted alerts topic needs the key.
PLATFORM_SIDS = {
    "Logs",
    "Tracing",
    "ConsumeIngestQueue",
    "ConsumeNotifyQueue",
    "JobCode",
    "JobLogs",
    "AlertEncryption",
}
SETTINGS = Settings(
    bucket="b-orders",
    orders_table="t-orders",
    files_table="t-files",
    ingest_queue_url="https://sqs.test/1/ingest",
    notify_queue_url="https://sqs.test/1/notify",
    alerts_topic_arn="arn:aws:sns:us-east-1:1:alerts",
    sender="orders@example.com",
    recipients=("ops@example.com",),
)
RESOURCE_OF_SETTING = {
    SETTINGS.bucket: "OrdersBucket",
    SETTINGS.orders_table: "OrdersTable",
    SETTINGS.files_table: "FilesTable",
    SETTINGS.ingest_queue_url: "IngestQueue",
    SETTINGS.notify_queue_url: "NotifyQueue",
    SETTINGS.alerts_topic_arn: "AlertsTopic",
}
# Where an adapter is not handed its resource: S3 objects named by the event are in the
# orders bucket; SES sends as the stack's sender identity; metrics have no resource.
DEFAULT_RESOURCE = {"s3": "OrdersBucket", "ses": "SenderIdentity", "cloudwatch": "*"}


def _from_sender(statement: dict[str, Any]) -> bool:
    """The statement allows sending only as the stack's sender (``ses:FromAddress``)."""
    equals = statement.get("Condition", {}).get("StringEquals", {})
    return bool(equals.get("ses:FromAddress") == {"Ref": "SenderAddress"})


def statement_resources(statement: dict[str, Any]) -> set[str]:
    """The logical ids a statement's resources name (``*`` stays ``*``)."""
    out = set()
    for resource in as_list(statement["Resource"]):
        if resource == "*":
            out.add("*")
        elif isinstance(resource, dict) and ("Ref" in resource or "Fn::GetAtt" in resource):
            out.add(ref_name(resource))
        else:
            text = str(resource["Fn::Sub"])
            names = {n for n in RES if "${" + n + "}" in text or "${" + n + "." in text}
            if "${SenderAddress}" in text and ":identity/" in text:
                names.add("SenderIdentity")
            if text.endswith(":identity/*") and _from_sender(statement):
                names.add("SenderIdentity")  # any identity, this sender only (sandbox recipients)
            if "${AWS::StackName}" in text and ":stack/" in text:
                names.add("ThisStack")
            assert names, text
            out |= names
    return out


def granted(policy_statements: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(logical resource, action) pairs an Allow list grants, platform statements aside."""
    out = set()
    for statement in policy_statements:
        if statement["Effect"] != "Allow" or statement.get("Sid") in PLATFORM_SIDS:
            continue
        for resource in statement_resources(statement):
            out |= {(resource, a) for a in as_list(statement["Action"])}
    return out


def role_statements(role: str) -> list[dict[str, Any]]:
    return [s for name, s in iam_statements() if name == role]


def derived_grants(entry: Any, roots: tuple[Any, ...], defaults: dict[str, str]) -> set[Any]:
    """(logical resource, action) pairs of the calls ``entry`` makes through what roots wire."""
    from tests.unit.aws_calls import adapter_calls, called_names, function_calls, wired_adapters

    names = called_names(entry.modules) | {"__init__"}
    out = set()
    for cls, instances in wired_adapters(*roots).items():
        calls = adapter_calls(cls, names)
        for instance in instances:
            named = {RESOURCE_OF_SETTING.get(v) for v in vars(instance).values()} - {None}
            for call in calls:
                resources = named or {{**DEFAULT_RESOURCE, **defaults}[call.service]}
                out |= {(r, a) for r in resources for a in call.actions}
    for func in entry.all_functions():
        for call in function_calls(func):
            out |= {({**DEFAULT_RESOURCE, **defaults}[call.service], a) for a in call.actions}
    return out


def function_role_cases() -> list[tuple[str, Any, tuple[Any, ...], dict[str, str]]]:
    from core import bootstrap
    from core.aws.clients import Clients
    from tests.unit.aws_calls import Entry

    clients = Clients(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    return [
        (
            "IngestRole",
            Entry(("handlers.ingest", "core.pipeline.ingest", "core.pipeline.orders_store"), ()),
            (bootstrap.ingest(SETTINGS, clients),),
            {"sqs": "IngestQueue"},  # functions handed a queue client act on the one consumed
        ),
        (
            "NotifyRole",
            Entry(("handlers.notify", "core.pipeline.notify"), ()),
            (bootstrap.notifier(SETTINGS, clients),),
            {"sqs": "NotifyQueue"},
        ),
        (
            "ReconcileRole",
            Entry(("handlers.reconcile_job", "core.ops.reconcile"), ()),
            (bootstrap.reconciler(SETTINGS, clients),),
            {},
        ),
    ]


def test_every_boto3_call_in_the_code_is_one_the_derivation_sees() -> None:
    from tests.unit.aws_calls import ROOT, unclassified_calls

    paths = [*(ROOT / "core").rglob("*.py"), *(ROOT / "handlers").rglob("*.py")]
    found = {re.sub(r":\d+ ", " ", call) for call in unclassified_calls(paths)}
    assert found == {
        "core/console/app.py env.get_template",  # jinja2's, not CloudFormation's
        "core/console/files.py self.query",  # FileFilter's page link, not DynamoDB's Query
        # An adapter's own method, not a client's (AlertsTopic.publish calls sns:Publish).
        "core/ops/reconcile.py self._alerts.publish",
    }


@pytest.mark.parametrize("case", function_role_cases(), ids=lambda c: c[0])
def test_each_function_role_grants_exactly_the_calls_its_code_makes(case: Any) -> None:
    role, entry, roots, defaults = case
    derived = derived_grants(entry, roots, defaults)
    assert derived, role
    assert granted(role_statements(role)) == derived


def people_entries() -> dict[str, Any]:
    from core.aws.stack_outputs import settings_from_stack
    from core.console import backend
    from core.ops.dlq import DeadLetterQueue
    from core.ops.ops_adapters import (
        AlertsTopic,
        BucketObjects,
        CloudWatchMetrics,
        IngestQueue,
        LedgerReader,
        OrderCounter,
    )
    from core.ops.rejects import RejectsObjects
    from core.ops.upload import Uploader
    from core.pipeline.ledger import DynamoLedger
    from tests.unit.aws_calls import Entry

    # `orderpipe alerts` reads the local stack's inbox queue; on AWS the alerts topic mails a
    # person, so no policy grants anything for it.
    return {
        "UploaderPolicy": Entry(("core.cli.upload:command",), (Uploader,)),
        "ViewerPolicy": Entry(
            (
                "core.cli.context",
                "core.cli.status",
                "core.cli.dlq:list_command,show_command",
                "core.cli.rejects",
                "core.cli.console",
                "core.console.app:index,files,file_rows,file_page,rejects_csv,email_frame,"
                "replay_preview,upload_page,upload_rows,dead_letters,dead_letter,health",
                "core.console.backend",
                "core.console.files",
                "core.console.file_detail",
                "core.ops.replay:plan",
                "core.bootstrap",
            ),
            (
                DynamoLedger,
                LedgerReader,
                DeadLetterQueue,
                BucketObjects,
                backend.S3Objects,
                RejectsObjects,
            ),
            (settings_from_stack, backend._depth),
        ),
        "OperatorPolicy": Entry(
            (
                "core.cli.context",
                "core.cli.status",
                "core.cli.dlq",
                "core.cli.replay",
                "core.cli.reconcile",
                "core.cli.rejects",
                "core.cli.console",
                "core.console.app",
                "core.console.backend",
                "core.console.files",
                "core.console.file_detail",
                "core.ops.replay",
                "core.ops.reconcile",
                "core.ops.dlq",
                "core.bootstrap",
            ),
            (
                DynamoLedger,
                LedgerReader,
                DeadLetterQueue,
                BucketObjects,
                IngestQueue,
                OrderCounter,
                AlertsTopic,
                CloudWatchMetrics,
                backend.S3Objects,
                Uploader,
                RejectsObjects,
            ),
            (settings_from_stack, backend._depth),
        ),
    }


@pytest.mark.parametrize("policy", PEOPLE_POLICIES)
def test_each_people_policy_grants_exactly_the_calls_its_commands_make(policy: str) -> None:
    entry = people_entries()[policy]
    granted_actions = {a for _, a in granted(role_statements(policy))}
    assert granted_actions == entry.actions()


def test_people_policies_are_scoped_to_this_stack_and_the_uploader_is_blind() -> None:
    stack_resources = set(RES) | {"SenderIdentity", "ThisStack"}
    for name in PEOPLE_POLICIES:
        for statement in role_statements(name):
            assert statement["Effect"] == "Allow"
            actions = set(as_list(statement["Action"]))
            assert not [a for a in actions if "*" in a], (name, actions)
            resources = statement_resources(statement)
            if "*" in resources:
                assert actions <= NO_RESOURCE_SCOPE, (name, actions)
                assert statement["Condition"]  # e.g. the metrics namespace
            assert resources - {"*"} <= stack_resources, (name, resources)
    (upload,) = role_statements("UploaderPolicy")
    assert set(as_list(upload["Action"])) == {"s3:PutObject", "s3:AbortMultipartUpload"}
    assert upload["Resource"] == {"Fn::Sub": "${OrdersBucket.Arn}/incoming/*"}
    reading = ("Get", "List", "Delete", "Head", "Describe", "Receive", "Query", "Scan")
    assert not [a for a in as_list(upload["Action"]) if a.split(":")[1].startswith(reading)]
    # Only incoming/: an uploader cannot overwrite rejects or reports.
    assert statement_resources(upload) == {"OrdersBucket"}


def test_people_policy_arns_are_stack_outputs() -> None:
    from core.aws.stack_outputs import (
        OUTPUT_OPERATOR_POLICY,
        OUTPUT_UPLOADER_POLICY,
        OUTPUT_VIEWER_POLICY,
    )

    outputs = T["Outputs"]
    for output, policy in [
        (OUTPUT_UPLOADER_POLICY, "UploaderPolicy"),
        (OUTPUT_OPERATOR_POLICY, "OperatorPolicy"),
        (OUTPUT_VIEWER_POLICY, "ViewerPolicy"),
    ]:
        assert outputs[output]["Value"] == {"Ref": policy}


def test_each_function_reports_under_its_handlers_service_name() -> None:
    """Logger, Tracer and Metrics use one name per function: the function's, without the env."""
    import handlers.ingest
    import handlers.notify

    for handler, service in (
        (handlers.ingest, stack_def.INGEST_SERVICE),
        (handlers.notify, stack_def.NOTIFY_SERVICE),
    ):
        assert handler.logger.service == service
        assert handler.tracer.service == service
        assert handler.metrics.service == service
        fn = function_by_handler(f"{handler.__name__}.handler")
        assert fn["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == service
        assert sub_name(fn["FunctionName"], "e") == service.replace("orderpipe-", "orderpipe-e-")


def test_notify_sends_only_as_the_sender_but_to_any_verified_recipient() -> None:
    (send,) = [
        s for s in role_statements("NotifyRole") if "ses:SendRawEmail" in as_list(s["Action"])
    ]
    # In the SES sandbox a send is also authorised against each recipient's identity (denied on
    # identity/<recipient> otherwise; moto checks neither): the resource is every identity ...
    assert send["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/*"
    }
    # ... and the condition holds the From address to the stack's sender.
    assert send["Condition"] == {"StringEquals": {"ses:FromAddress": {"Ref": "SenderAddress"}}}
