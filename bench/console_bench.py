"""Is the console responsive under load? Page times with 10,000 files and 1,000 dead letters.

    python bench/console_bench.py                 # 10,000 files, 1,000 dead letters
    python bench/console_bench.py --files 2000 --letters 200

It starts a moto server over HTTP, creates a stack, writes the ledger items straight into the
files table (every status, rejects on some) and sends the dead letters to the ingest DLQ, then
requests each page through the console app (Starlette's test client: the app, the core
functions and every AWS call over HTTP, without a browser). Each page is requested
``--repeat`` times; the best and the median are printed as JSON.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import socket
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
)

import logging  # noqa: E402

from starlette.testclient import TestClient  # noqa: E402

from core.aws.clients import Clients  # noqa: E402
from core.aws.stack import StackNames, create_local_stack  # noqa: E402
from core.console.app import build_app  # noqa: E402
from core.console.backend import Backend  # noqa: E402
from core.console.security import Secrets  # noqa: E402
from core.ops.dlq import DeadLetterQueue  # noqa: E402
from core.ops.event_messages import ObjectVersion, s3_event_body  # noqa: E402
from core.pipeline.ledger import LedgerEntry, Status, _to_item  # noqa: E402

STATUSES = [Status.SUCCEEDED] * 7 + [Status.PARTIAL, Status.REJECTED, Status.FAILED]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(clients: Clients, settings: Any, files: int, letters: int) -> str:
    t0 = datetime.now(UTC) - timedelta(days=3)
    items = []
    some_id = ""
    for n in range(files):
        status = STATUSES[n % len(STATUSES)]
        at = (t0 + timedelta(seconds=20 * n)).isoformat(timespec="milliseconds")
        entry = LedgerEntry(
            file_id=f"{settings.bucket}/incoming/shop-{n % 40}/orders-{n:05}.csv#v{n}",
            bucket=settings.bucket,
            object_key=f"incoming/shop-{n % 40}/orders-{n:05}.csv",
            version=f"v{n}",
            etag=f"e{n}",
            status=status,
            size=2048,
            event_time=at,
            received_at=at,
            started_at=at,
            finished_at=at,
            updated_at=at,
            rows=40,
            valid=40 if status == Status.SUCCEEDED else 35,
            invalid=0 if status == Status.SUCCEEDED else 5,
            reasons={} if status == Status.SUCCEEDED else {"Order_Total.required": 5},
            attempts=1,
        )
        some_id = some_id or (entry.file_id if status == Status.PARTIAL else "")
        items.append({"PutRequest": {"Item": _to_item(entry)}})
    for start in range(0, len(items), 25):
        clients.dynamodb.batch_write_item(
            RequestItems={settings.files_table: items[start : start + 25]}
        )
    dlq = DeadLetterQueue.for_source(clients.sqs, settings.ingest_queue_url)
    for start in range(0, letters, 10):
        clients.sqs.send_message_batch(
            QueueUrl=dlq.url,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": s3_event_body(
                        ObjectVersion(
                            settings.bucket,
                            f"incoming/dead-{start + i}.csv",
                            "etag:e",
                            "e",
                            9,
                            t0.isoformat(),
                        ),
                        source="bench",
                    ),
                }
                for i in range(min(10, letters - start))
            ],
        )
    return some_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--letters", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        clients = Clients(endpoint_url=f"http://127.0.0.1:{port}")
        names = StackNames.for_env("b" + uuid.uuid4().hex[:8])
        settings = create_local_stack(clients, names)
        started = time.perf_counter()
        partial_id = seed(clients, settings, args.files, args.letters)
        seeded_s = time.perf_counter() - started
        keys = Secrets()
        app = build_app(Backend.for_stack(clients, settings, "bench"), keys=keys)
        client = TestClient(app, base_url="http://127.0.0.1:8710")
        client.get(f"/files?token={keys.token}")
        deep = "/files"
        for _ in range(9):  # follow "older →" to page 10, as a person would
            link = re.search(r'<a href="(/files\?[^"]+)">older', client.get(deep).text)
            assert link is not None
            deep = html.unescape(link.group(1))
        pages = {
            "files (page 1)": "/files",
            "files rows (poll)": "/files/rows",
            "files page 10": deep,
            "files status=PARTIAL": "/files?status=PARTIAL",
            "files status=SUCCEEDED": "/files?status=SUCCEEDED",
            "files key=…": "/files?key=shop-3/orders-00003.csv",
            "files since=1h": "/files?since=1h",
            "file page": "/file?" + __import__("urllib.parse").parse.urlencode({"id": partial_id}),
            "dead letters (peek)": "/dlq?queue=ingest",
            "dead letters page 2": "/dlq?queue=ingest&page=1",
            "health": "/health",
        }
        results: dict[str, Any] = {}
        for name, url in pages.items():
            times = []
            for _ in range(args.repeat):
                if name == "dead letters (peek)":
                    time.sleep(5.1)  # let the peek cache lapse: measure a real peek
                t = time.perf_counter()
                answer = client.get(url)
                times.append(time.perf_counter() - t)
                if answer.status_code != 200:
                    raise SystemExit(f"{name}: HTTP {answer.status_code}: {answer.text[:300]}")
            results[name] = {
                "best_s": round(min(times), 3),
                "median_s": round(statistics.median(times), 3),
            }
        print(
            json.dumps(
                {
                    "files": args.files,
                    "dead_letters": args.letters,
                    "seed_s": round(seeded_s, 1),
                    "pages": results,
                },
                indent=2,
            )
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
