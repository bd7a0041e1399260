"""What the reliability scenarios share: order files with a known answer, and the end-state check.

``OrderFile`` builds a CSV whose stored orders and rejected rows are known in advance, so a
scenario can say exactly what the tables, the ledger, the mailbox and the DLQs must hold after
the pipeline has survived whatever was done to it. ``Scenario`` records what each test injected
and whether its end state held, for docs/reliability.md (``bench/reliability_report.py``).
"""

from __future__ import annotations

import contextlib
import email
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from core import bootstrap
from core.pipeline.email_report import version_text
from core.pipeline.ledger import LOCK_PREFIX
from tests.support.faults import FaultPlan, installed

HEADER = "Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total"
STATUSES = ("Pending", "Completed", "Inprogress")
TERMINAL = {"SUCCEEDED", "PARTIAL", "REJECTED"}
ENV_RESULTS = "ORDERPIPE_RELIABILITY_RESULTS"  # where scenarios append their JSON lines

Order = tuple[str, str, str, Decimal]  # Customer_Id, Order_Date (ISO), Order_Status, Order_Total


@dataclass
class OrderFile:
    """A CSV with ``valid`` good rows and ``invalid`` rows that must be rejected."""

    key: str
    ids: list[str]
    invalid: int = 0
    variant: int = 0  # changes every value, so a newer upload of the same ids is recognisable

    @property
    def orders(self) -> dict[str, Order]:
        return {
            oid: (
                f"C{self.variant}-{n}",
                f"2023-{1 + (n + self.variant) % 12:02d}-{1 + n % 28:02d}",
                STATUSES[(n + self.variant) % 3],
                Decimal(f"{n + self.variant * 1000}.{n % 100:02d}"),
            )
            for n, oid in enumerate(self.ids)
        }

    @property
    def body(self) -> bytes:
        lines = [HEADER]
        for oid, (customer, day, status, total) in self.orders.items():
            y, m, d = day.split("-")
            # The file spells dates and statuses as people do; the table holds them normalised.
            lines.append(f"{oid},{customer},{int(d)}/{int(m)}/{y[2:]},{status.lower()},{total}")
        lines += [f"BAD{self.variant}-{n},C,not-a-date,Pending,1" for n in range(self.invalid)]
        return ("\n".join(lines) + "\n").encode()

    @property
    def status(self) -> str:
        return "PARTIAL" if self.invalid else "SUCCEEDED"

    @property
    def etag(self) -> str:
        return hashlib.md5(self.body, usedforsecurity=False).hexdigest()


class UnreadableFile(OrderFile):
    """A file rejected whole (no order columns): stores nothing, still tells a person once."""

    def __init__(self, key: str) -> None:
        super().__init__(key, [])

    @property
    def body(self) -> bytes:
        return b"Order_Id,Customer_Id\nA1,C1\n"  # three required columns missing

    @property
    def status(self) -> str:
        return "REJECTED"


def order_file(key: str, prefix: str, n: int, *, invalid: int = 0, variant: int = 0) -> OrderFile:
    return OrderFile(key, [f"{prefix}{i:05d}" for i in range(n)], invalid, variant)


def newest(*files: OrderFile) -> dict[str, Order]:
    """The orders table after all files, each later file replacing the earlier's orders."""
    out: dict[str, Order] = {}
    for f in files:
        out.update(f.orders)
    return out


class Pipeline:
    """A stack under test: upload, run the real handlers, read back every table and mailbox."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.s3 = stack.clients.s3
        self.sqs = stack.clients.sqs
        self.ddb = stack.clients.dynamodb
        self.bucket = stack.names.bucket

    def file_id(self, f: OrderFile) -> str:
        return f"{self.bucket}/{f.key}#etag:{f.etag}"

    def upload(self, *files: OrderFile) -> dict[str, float]:
        """Put the files; return each file id's upload time (epoch seconds)."""
        sent = {}
        for f in files:
            self.s3.put_object(Bucket=self.bucket, Key=f.key, Body=f.body)
            sent[self.file_id(f)] = time.time()
        return sent

    def take_events(self) -> list[str]:
        """Remove and return the S3 event bodies waiting on the ingest queue (test events too)."""
        bodies = []
        url = self.stack.settings.ingest_queue_url
        while True:
            got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return bodies
            for m in got:
                if "Records" in json.loads(m["Body"]):
                    bodies.append(m["Body"])
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    def deliver(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.stack.settings.ingest_queue_url, MessageBody=body)

    # -- reading the end state ----------------------------------------------------------------
    def _scan(self, table: str, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        pages = self.ddb.get_paginator("scan").paginate(
            TableName=table, ConsistentRead=True, **kwargs
        )
        for page in pages:
            items.extend(page["Items"])
        return items

    def orders(self) -> dict[str, Order]:
        return {
            it["Order_Id"]["S"]: (
                it["Customer_Id"]["S"],
                it["Order_Date"]["S"],
                it["Order_Status"]["S"],
                Decimal(it["Order_Total"]["N"]),
            )
            for it in self._scan(
                self.stack.settings.orders_table,
                ProjectionExpression="Order_Id, Customer_Id, Order_Date, Order_Status, Order_Total",
            )
        }

    def ledger(self) -> dict[str, dict[str, Any]]:
        out = {}
        for it in self._scan(self.stack.settings.files_table):
            if it["file_id"]["S"].startswith(LOCK_PREFIX):
                continue  # the per-key lock items the ledger keeps beside the file entries
            out[it["file_id"]["S"]] = {
                k: next(iter(v.values())) for k, v in it.items() if isinstance(v, dict)
            }
        return out

    def locks(self) -> list[str]:
        """The per-key lock items still held (none once every file is finished)."""
        return [
            it["file_id"]["S"]
            for it in self._scan(self.stack.settings.files_table)
            if it["file_id"]["S"].startswith(LOCK_PREFIX)
        ]

    def ses_accepted(self) -> list[str]:
        """Every raw email SES accepted for this stack's files, as the emulator recorded it."""
        with urlopen(f"{self.stack.endpoint}/moto-api/data.json") as response:  # nosec B310
            data = json.load(response)
        marker = f"s3://{self.bucket}/"
        return [
            m["raw_data"]
            for m in data.get("ses", {}).get("RawMessage", [])
            if marker in _text_of(email.message_from_string(m["raw_data"]))
        ]

    def emails(self) -> list[Message]:
        """Every email notify sent for this stack: its outbox keeps a copy of each SES accepted.

        (The emulator's ``/moto-api/data.json`` has them too, but it dumps every service's whole
        state, orders included, which costs more than the scenario itself on a large file.)
        """
        outbox = Path(self.stack.settings.outbox_dir)
        assert self.stack.settings.outbox_dir, "the stack under test needs an outbox folder"
        return [
            email.message_from_bytes(path.read_bytes()) for path in sorted(outbox.glob("*.eml"))
        ]

    def notifications(self) -> Counter[str]:
        """How many emails name each file id (by its ``Source: s3://bucket/key (...)`` line)."""
        seen: Counter[str] = Counter()
        file_ids = list(self.ledger())
        for msg in self.emails():
            text = _text_of(msg)
            for fid in file_ids:
                bucket_key, _, tag = fid.rpartition("#")  # a key may hold "#"
                if f"s3://{bucket_key} ({version_text(tag)})" in text:
                    seen[fid] += 1
        return seen

    def queue_depth(self, name: str) -> int:
        url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    def assert_end_state(
        self,
        orders: dict[str, Order],
        files: dict[str, str],
        *,
        ingest_dlq: int = 0,
        notify_dlq: int = 0,
    ) -> None:
        """The promise, checked whole: tables, ledger, one email per file outcome, DLQs."""
        # Messages spelled out: this module is not rewritten by pytest's assert introspection.
        got = self.orders()
        if got != orders:
            missing, extra = sorted(set(orders) - set(got)), sorted(set(got) - set(orders))
            stale = sorted(k for k in set(got) & set(orders) if got[k] != orders[k])
            raise AssertionError(
                f"orders differ: {len(missing)} missing {missing[:5]}, {len(extra)} unexpected "
                f"{extra[:5]}, {len(stale)} with other values {stale[:5]}"
            )
        ledger = self.ledger()
        statuses = {fid: e["status"] for fid, e in ledger.items()}
        assert statuses == files, f"ledger statuses {statuses}, expected {files}"
        wants_mail = {fid for fid, status in files.items() if status in ("PARTIAL", "REJECTED")}
        mailed = self.notifications()
        assert mailed == Counter(dict.fromkeys(wants_mail, 1)), (
            f"emails per file {dict(mailed)}, expected one for each of {sorted(wants_mail)}"
        )
        for fid in wants_mail:
            assert ledger[fid].get("notified_at"), f"{fid} not marked notified"
        names = self.stack.names
        depths = {
            q: self.queue_depth(q)
            for q in (names.ingest_dlq, names.notify_dlq, names.ingest_queue, names.notify_queue)
        }
        wanted = {
            names.ingest_dlq: ingest_dlq,
            names.notify_dlq: notify_dlq,
            names.ingest_queue: 0,
            names.notify_queue: 0,
        }
        assert depths == wanted, f"queue depths {depths}, expected {wanted}"


def _text_of(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload.decode(part.get_content_charset() or "utf-8", "replace")
    return ""


@contextlib.contextmanager
def handler_faults(plan: FaultPlan) -> Iterator[FaultPlan]:
    """Install ``plan`` for the real handlers' clients (they cache theirs across invocations)."""
    _forget_handler_clients()
    try:
        with installed(plan):
            yield plan
    finally:
        _forget_handler_clients()  # later tests get clients without faults


def _forget_handler_clients() -> None:
    bootstrap.forget_warm_clients()


@dataclass
class Scenario:
    """One row of the reliability table: what was done, what must hold, and whether it held."""

    test: str
    name: str = ""
    injected: str = ""
    expected: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    result: str = "FAILED"
    started: float = field(default_factory=time.monotonic)

    def describe(self, name: str, injected: str, expected: str) -> None:
        self.name, self.injected, self.expected = name, injected, expected

    def measure(self, **figures: Any) -> None:
        self.figures.update(figures)

    def passed(self) -> None:
        """Call as the last line of a scenario: only then does the table say it held."""
        self.result = "passed"

    def save(self) -> None:
        target = os.environ.get(ENV_RESULTS)
        if not target or not self.name:
            return
        self.figures.setdefault("seconds", round(time.monotonic() - self.started, 1))
        row = {
            "test": self.test,
            "scenario": self.name,
            "injected": self.injected,
            "expected": self.expected,
            "result": self.result,
            "figures": self.figures,
        }
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(row, default=str) + "\n")
