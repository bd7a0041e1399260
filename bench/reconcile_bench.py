"""Reconcile's cost against the listing it cannot avoid, on a local moto server.

Fills a bucket with N objects under incoming/ (most with a SUCCEEDED ledger entry and their
orders, some with none), then in the same run times:
- baseline: paging through ListObjectVersions under incoming/ (what any reconcile must do);
- reconcile --dry-run over the same objects (listing + ledger lookups + order counts).
Prints the ratio, objects/s and the Python heap peak of the reconcile run (tracemalloc), for N
and 2N objects, so a flat peak shows the streaming holds.

    .venv/bin/python bench/reconcile_bench.py [--objects 1000]
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)


from core import bootstrap
from core.aws.clients import Clients
from core.aws.settings import Settings
from core.aws.stack import StackNames, create_local_stack
from core.local.emulator import Emulator
from core.ops.reconcile import ReconcileOptions


def fill(clients: Clients, settings: Settings, start: int, count: int) -> None:
    s3, ddb = clients.s3, clients.dynamodb
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def put(n: int) -> None:
        key = f"incoming/bench/{n:07d}.csv"
        got = s3.put_object(Bucket=settings.bucket, Key=key, Body=f"row {n}\n".encode())
        if n % 10 == 0:
            return  # one in ten never got its event: reconcile must find it
        file_id = f"{settings.bucket}/{key}#{got['VersionId']}"
        ddb.put_item(
            TableName=settings.files_table,
            Item={
                "file_id": {"S": file_id},
                "bucket": {"S": settings.bucket},
                "object_key": {"S": key},
                "version": {"S": got["VersionId"]},
                "etag": {"S": got["ETag"].strip('"')},
                "status": {"S": "SUCCEEDED"},
                "valid": {"N": "1"},
                "updated_at": {"S": now},
                "received_at": {"S": now},
            },
        )
        ddb.put_item(
            TableName=settings.orders_table,
            Item={"Order_Id": {"S": f"B{n}"}, "source_file_id": {"S": file_id}},
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(start, start + count)))


def measure(clients: Clients, settings: Settings) -> tuple[float, float, int, int]:
    started = time.perf_counter()
    pages = clients.s3.get_paginator("list_object_versions").paginate(
        Bucket=settings.bucket, Prefix="incoming/"
    )
    listed = sum(len(p.get("Versions", [])) for p in pages)
    baseline = time.perf_counter() - started

    tracemalloc.start()
    started = time.perf_counter()
    report = bootstrap.reconciler(settings, clients).run(
        ReconcileOptions(window_s=int(timedelta(hours=2).total_seconds()), grace_s=0, dry_run=True)
    )
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.objects_checked == listed, (report.objects_checked, listed)
    assert report.counts["missing"] == listed // 10
    assert report.counts["drift"] == 0
    return baseline, elapsed, listed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    args = parser.parse_args()
    # The emulator runs in its own process, so timings and the heap peak are reconcile's alone.
    with Emulator() as emulator:
        clients = bootstrap.clients(emulator.endpoint)
        settings = create_local_stack(clients, StackNames.for_env("bench"))
        header = ("objects", "list s", "reconcile s", "ratio", "obj/s", "peak MiB")
        print("{:>8} {:>8} {:>12} {:>6} {:>8} {:>9}".format(*header))
        done = 0
        for target in (args.objects, 2 * args.objects):
            fill(clients, settings, done, target - done)
            done = target
            baseline, elapsed, listed, peak = measure(clients, settings)
            print(
                f"{listed:>8} {baseline:>8.2f} {elapsed:>12.2f} {elapsed / baseline:>6.1f}"
                f" {listed / elapsed:>8.0f} {peak / 2**20:>9.2f}"
            )


if __name__ == "__main__":
    main()
