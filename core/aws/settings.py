"""Typed settings for every orderpipe entry point.

The environment variable names are constants so the CloudFormation template test, the local
stack and the handlers all read the same list. Settings are built inside a handler call
(``Settings.from_env()``), never at import time, so tests and the CLI can point one process at
several stacks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

# Environment variable names: the template sets exactly these on the functions.
ENV_BUCKET = "ORDERPIPE_BUCKET"
ENV_ORDERS_TABLE = "ORDERPIPE_ORDERS_TABLE"
ENV_FILES_TABLE = "ORDERPIPE_FILES_TABLE"
ENV_INGEST_QUEUE_URL = "ORDERPIPE_INGEST_QUEUE_URL"
ENV_NOTIFY_QUEUE_URL = "ORDERPIPE_NOTIFY_QUEUE_URL"
ENV_ALERTS_TOPIC_ARN = "ORDERPIPE_ALERTS_TOPIC_ARN"
ENV_SENDER = "ORDERPIPE_SENDER"
ENV_RECIPIENTS = "ORDERPIPE_RECIPIENTS"
ENV_WRITE_THREADS = "ORDERPIPE_WRITE_THREADS"
ENV_FUNCTION_TIMEOUT = "ORDERPIPE_FUNCTION_TIMEOUT"
ENV_MAX_FILE_BYTES = "ORDERPIPE_MAX_FILE_BYTES"
ENV_MAX_ROWS = "ORDERPIPE_MAX_ROWS"
ENV_TMP_MB = "ORDERPIPE_TMP_MB"
ENV_OUTBOX_DIR = "ORDERPIPE_OUTBOX_DIR"
# Seconds a failed message waits before its 2nd, 3rd, ... receive (comma-separated). Not set on
# AWS (the default is the production schedule); the local stack sets a scaled one.
ENV_RETRY_SCHEDULE = "ORDERPIPE_RETRY_SCHEDULE"
# The CloudFormation stack's name, so an email's commands say `--stack NAME`; unset locally,
# where the commands find the running local stack by themselves.
ENV_STACK_NAME = "ORDERPIPE_STACK_NAME"

# Every variable a deployed function may carry; the template test compares against this.
ALL_ENV_VARS = (
    ENV_BUCKET,
    ENV_ORDERS_TABLE,
    ENV_FILES_TABLE,
    ENV_INGEST_QUEUE_URL,
    ENV_NOTIFY_QUEUE_URL,
    ENV_ALERTS_TOPIC_ARN,
    ENV_SENDER,
    ENV_RECIPIENTS,
    ENV_WRITE_THREADS,
    ENV_FUNCTION_TIMEOUT,
    ENV_MAX_FILE_BYTES,
    ENV_MAX_ROWS,
    ENV_TMP_MB,
    ENV_STACK_NAME,
)

INCOMING_PREFIX = "incoming/"
REJECTS_PREFIX = "rejects/"
REPORTS_PREFIX = "reports/"

MIB = 1024 * 1024

# The default limits follow from what one file can be given (docs/deploy.md, "Big files"):
# rows ≤ write rate × (timeout − setup per attempt) × attempts that write, and the object plus
# its compressed spill must fit the function's /tmp.
WRITE_RATE = 4_000  # items/s: what a new on-demand table sustains (AWS: 4,000 writes/s)
WRITE_ATTEMPTS = 4  # of the queue's 5 receives: one is left for a transient failure
SETUP_S = 30  # per attempt: read and validate the whole file again, and stop in time
SPILL_RATIO = 0.45  # zstd Arrow spill of the valid rows / the CSV (measured: 0.03 to 0.42)
DEFAULT_TMP_MB = 1024  # the template's IngestTmpMb (the function's EphemeralStorage)


def rows_within(timeout_s: int, rate: int = WRITE_RATE, attempts: int = WRITE_ATTEMPTS) -> int:
    """The most rows one file can have written within its attempts."""
    return rate * max(0, timeout_s - SETUP_S) * attempts


# Defaults sized for a 1,769 MB Lambda (one full vCPU) with a 900 s timeout and 1 GB of /tmp:
# rows_within(900) is 13.9M; 12M leaves room for throttled retries. 512 MB of CSV is about
# 11M order rows (47-50 bytes each), and 512 MB × (1 + SPILL_RATIO) fits 1 GB of /tmp.
DEFAULT_MAX_FILE_BYTES = 512 * MIB
DEFAULT_MAX_ROWS = 12_000_000
DEFAULT_WRITE_THREADS = 16
DEFAULT_FUNCTION_TIMEOUT = 300
# A failed message comes back after 30 s, 2 min, 8 min, then 30 min (docs/operations.md).
DEFAULT_RETRY_SCHEDULE_S = (30, 120, 480, 1800)
MAX_VISIBILITY_S = 12 * 3600  # SQS's ceiling for a message's visibility timeout


class SettingsError(ValueError):
    """A required setting is missing or malformed; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {value}")
    return value


def _schedule(env: Mapping[str, str], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise SettingsError(
            f"{name} must be whole seconds separated by commas, got {raw!r}"
        ) from None
    if any(v < 0 or v > MAX_VISIBILITY_S for v in values):
        raise SettingsError(f"{name} values must be 0 to {MAX_VISIBILITY_S} seconds, got {raw!r}")
    return values


@dataclass(frozen=True)
class Settings:
    bucket: str = ""
    orders_table: str = ""
    files_table: str = ""
    ingest_queue_url: str = ""
    notify_queue_url: str = ""
    alerts_topic_arn: str = ""
    sender: str = ""
    recipients: tuple[str, ...] = field(default_factory=tuple)
    write_threads: int = DEFAULT_WRITE_THREADS
    function_timeout_s: int = DEFAULT_FUNCTION_TIMEOUT
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_rows: int = DEFAULT_MAX_ROWS
    tmp_mb: int = DEFAULT_TMP_MB  # the function's /tmp (EphemeralStorage), for its spill
    outbox_dir: str = ""
    retry_schedule_s: tuple[int, ...] = DEFAULT_RETRY_SCHEDULE_S
    stack_name: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        recipients = tuple(r.strip() for r in env.get(ENV_RECIPIENTS, "").split(",") if r.strip())
        return cls(
            bucket=env.get(ENV_BUCKET, ""),
            orders_table=env.get(ENV_ORDERS_TABLE, ""),
            files_table=env.get(ENV_FILES_TABLE, ""),
            ingest_queue_url=env.get(ENV_INGEST_QUEUE_URL, ""),
            notify_queue_url=env.get(ENV_NOTIFY_QUEUE_URL, ""),
            alerts_topic_arn=env.get(ENV_ALERTS_TOPIC_ARN, ""),
            sender=env.get(ENV_SENDER, ""),
            recipients=recipients,
            write_threads=_int(env, ENV_WRITE_THREADS, DEFAULT_WRITE_THREADS),
            function_timeout_s=_int(env, ENV_FUNCTION_TIMEOUT, DEFAULT_FUNCTION_TIMEOUT),
            max_file_bytes=_int(env, ENV_MAX_FILE_BYTES, DEFAULT_MAX_FILE_BYTES),
            max_rows=_int(env, ENV_MAX_ROWS, DEFAULT_MAX_ROWS),
            tmp_mb=_int(env, ENV_TMP_MB, DEFAULT_TMP_MB),
            outbox_dir=env.get(ENV_OUTBOX_DIR, ""),
            retry_schedule_s=_schedule(env, ENV_RETRY_SCHEDULE, DEFAULT_RETRY_SCHEDULE_S),
            stack_name=env.get(ENV_STACK_NAME, ""),
        )

    def to_env(self) -> dict[str, str]:
        """The inverse of ``from_env``: what the local stack hands its worker."""
        env = {
            ENV_BUCKET: self.bucket,
            ENV_ORDERS_TABLE: self.orders_table,
            ENV_FILES_TABLE: self.files_table,
            ENV_INGEST_QUEUE_URL: self.ingest_queue_url,
            ENV_NOTIFY_QUEUE_URL: self.notify_queue_url,
            ENV_ALERTS_TOPIC_ARN: self.alerts_topic_arn,
            ENV_SENDER: self.sender,
            ENV_RECIPIENTS: ",".join(self.recipients),
            ENV_WRITE_THREADS: str(self.write_threads),
            ENV_FUNCTION_TIMEOUT: str(self.function_timeout_s),
            ENV_MAX_FILE_BYTES: str(self.max_file_bytes),
            ENV_MAX_ROWS: str(self.max_rows),
            ENV_TMP_MB: str(self.tmp_mb),
        }
        if self.outbox_dir:
            env[ENV_OUTBOX_DIR] = self.outbox_dir
        if self.stack_name:
            env[ENV_STACK_NAME] = self.stack_name
        if self.retry_schedule_s != DEFAULT_RETRY_SCHEDULE_S:
            env[ENV_RETRY_SCHEDULE] = ",".join(str(s) for s in self.retry_schedule_s)
        return env

    def require(self, *names: str) -> Settings:
        """Fail with one clear line when a handler needs a setting that is empty."""
        by_attr = {
            "bucket": ENV_BUCKET,
            "orders_table": ENV_ORDERS_TABLE,
            "files_table": ENV_FILES_TABLE,
            "ingest_queue_url": ENV_INGEST_QUEUE_URL,
            "notify_queue_url": ENV_NOTIFY_QUEUE_URL,
            "alerts_topic_arn": ENV_ALERTS_TOPIC_ARN,
            "sender": ENV_SENDER,
            "recipients": ENV_RECIPIENTS,
        }
        missing = [by_attr[n] for n in names if not getattr(self, n)]
        if missing:
            raise SettingsError("missing setting(s): " + ", ".join(missing))
        return self

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
