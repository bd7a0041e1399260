"""Glue Python shell entry point of the hourly reconcile (Python 3.9, no polars).

Job arguments (Glue passes ``--name value``; the template sets them as DefaultArguments):
``--bucket``, ``--files_table``, ``--orders_table``, ``--ingest_queue_url`` (required);
``--alerts_topic_arn``, ``--function_timeout`` (s), ``--window_minutes`` (120),
``--grace_minutes`` (5), ``--dry_run`` (true/false), ``--endpoint_url`` (optional).
A run that raises ends FAILED, which EventBridge turns into an alert.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from core import bootstrap
from core.aws.settings import Settings
from core.ops.reconcile import ReconcileOptions

REQUIRED = ("bucket", "files_table", "orders_table", "ingest_queue_url")
OPTIONAL = {
    "alerts_topic_arn": "",
    "function_timeout": "300",
    "window_minutes": "120",
    "grace_minutes": "5",
    "dry_run": "false",
    "endpoint_url": "",
}
# What the Glue job must ship besides this script (core/ is not pip-installable on 3.9: the
# project needs 3.11). tests/unit/test_py39_compat.py proves this list is the whole closure.
SHIPPED_MODULES = (
    "core/__init__.py",
    "core/bootstrap.py",
    "core/aws/__init__.py",
    "core/aws/clients.py",
    "core/aws/dynamo_json.py",
    "core/aws/settings.py",
    "core/ops/__init__.py",
    "core/ops/event_messages.py",
    "core/ops/ops_adapters.py",
    "core/ops/reconcile.py",
)


def _plain_args(argv: Sequence[str], names: Sequence[str]) -> dict[str, str]:
    """``--name value`` and ``--name=value`` pairs for the names asked; others ignored."""
    found: dict[str, str] = {}
    items = list(argv)
    for i, item in enumerate(items):
        if not item.startswith("--"):
            continue
        name, eq, value = item[2:].partition("=")
        if name in names:
            if not eq:
                value = items[i + 1] if i + 1 < len(items) else ""
            found[name] = value
    return found


def job_arguments(argv: Sequence[str]) -> dict[str, str]:
    """Glue's resolver for the required arguments when present, plain argv otherwise."""
    try:
        from awsglue.utils import getResolvedOptions  # type: ignore[import-not-found]
    except ImportError:
        required = _plain_args(argv, REQUIRED)
    else:
        required = dict(getResolvedOptions(list(argv), list(REQUIRED)))
    missing = [name for name in REQUIRED if not required.get(name)]
    if missing:
        raise SystemExit(
            "reconcile job: missing argument(s) " + ", ".join(f"--{m}" for m in missing)
        )
    args = dict(OPTIONAL)
    args.update({k: v for k, v in _plain_args(argv, tuple(OPTIONAL)).items() if v != ""})
    args.update(required)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = job_arguments(sys.argv if argv is None else argv)
    settings = Settings(
        bucket=args["bucket"],
        files_table=args["files_table"],
        orders_table=args["orders_table"],
        ingest_queue_url=args["ingest_queue_url"],
        alerts_topic_arn=args["alerts_topic_arn"],
        function_timeout_s=int(args["function_timeout"]),
    )
    options = ReconcileOptions(
        window_s=int(float(args["window_minutes"]) * 60),
        grace_s=int(float(args["grace_minutes"]) * 60),
        function_timeout_s=settings.function_timeout_s,
        dry_run=args["dry_run"].strip().lower() in ("1", "true", "yes"),
    )
    clients = bootstrap.clients(args["endpoint_url"])
    report = bootstrap.reconciler(settings, clients).run(options)
    print(json.dumps(report.to_json(), sort_keys=True))  # the run's log in CloudWatch
    return 0


if __name__ == "__main__":
    sys.exit(main())
