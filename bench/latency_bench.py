"""Upload → ledger outcome latency of a 1k-row file on the embedded local stack.

Starts the same stack as ``orderpipe local`` (emulator child, resources, worker child), uploads
N distinct files one at a time and measures, for each, the time from S3 acknowledging the
PutObject to the outcome the ledger records (its ``finished_at``; the client polling for it
sees it up to one poll interval later, reported too). The breakdown comes from the ledger's own
timestamps: queued (event → claim) and processing (claim → outcome).

Baseline, measured in the same run against the same emulator: the least work any design must
do for such a file — PutObject it elsewhere, validate it in-process, write its rows with a raw
``batch_writer``. The ratio says what the event-driven path (S3 event, SQS, worker, ledger,
rejects, notices) costs on top.

    .venv/bin/python bench/latency_bench.py            # 20 files of 1,000 rows
    .venv/bin/python bench/latency_bench.py --files 5  # quick look while iterating
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import bootstrap
from core.aws.stack import orders_table_definition
from core.local.embedded import EmbeddedConfig, EmbeddedStack
from core.ops.upload import wait_for_outcomes
from core.validation.engine import validate

TARGET_P50_S = 1.5


def make_file(folder: Path, index: int, rows: int) -> Path:
    """A valid order file with ids of its own, so every upload writes fresh items."""
    lines = ["Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total"]
    statuses = ("Pending", "Completed", "Inprogress")
    for n in range(rows):
        lines.append(
            f"B{index:03d}-{n:06d},Cust{n % 997:04d},2024-{1 + n % 12:02d}-{1 + n % 28:02d},"
            f"{statuses[n % 3]},{(n * 37) % 10_000}.{n % 100:02d}"
        )
    path = folder / f"bench_{index:03d}.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _seconds(start: str, end: str | None) -> float:
    if not start or not end:
        return float("nan")
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="orderpipe-latency-"))
    files = [make_file(work, i, args.rows) for i in range(args.files + 1)]  # +1 warm-up
    config = EmbeddedConfig(
        state_dir=work / "state", outbox_dir=work / "outbox", env_name="bench", save_state=False
    )
    started = time.monotonic()
    with EmbeddedStack(config) as stack:
        assert stack.clients is not None
        assert stack.settings is not None
        print(f"stack ready in {time.monotonic() - started:.1f} s at {stack.endpoint}")
        clients, settings = stack.clients, stack.settings
        uploader = bootstrap.uploader(settings, clients)
        ledger = bootstrap.ledger(settings, clients)

        latencies, seen, queued, processing = [], [], [], []
        for index, path in enumerate(files):
            uploaded = uploader.put(path, f"incoming/{path.name}")
            acknowledged = datetime.now(UTC)
            # Polled gently: every read competes with the pipeline for the emulator. The
            # latency itself comes from the ledger's own finished_at, not from the polling.
            (result,) = wait_for_outcomes(ledger, [uploaded], 60, poll_s=0.1)
            if result.seconds is None or result.entry is None or result.status != "SUCCEEDED":
                raise SystemExit(f"{path.name}: no clean outcome ({result.status})")
            entry = result.entry
            latency = _seconds(acknowledged.isoformat(), entry.finished_at)
            if index == 0:
                print(f"warm-up file: {latency:.2f} s (not counted)")
                continue
            latencies.append(latency)
            seen.append(result.seconds)
            queued.append(_seconds(entry.event_time, entry.started_at))
            processing.append(_seconds(entry.started_at, entry.finished_at))

        # Baseline: the same files, put (no event), validated and written directly.
        scratch = settings.orders_table + "-baseline"
        clients.dynamodb.create_table(**orders_table_definition(scratch))
        table = clients.session.resource("dynamodb", endpoint_url=stack.endpoint).Table(scratch)
        direct = []
        for path in files[1:]:
            t0 = time.monotonic()
            clients.s3.put_object(
                Bucket=settings.bucket, Key=f"baseline/{path.name}", Body=path.read_bytes()
            )
            frames: list[Any] = []
            validate(path, path.name, on_chunk=lambda chunk, out=frames: out.append(chunk.valid))
            with table.batch_writer(overwrite_by_pkeys=["Order_Id"]) as writer:
                for frame in frames:
                    for row in frame.drop("line").iter_rows(named=True):
                        writer.put_item(Item=row)
            direct.append(time.monotonic() - t0)

    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    base50 = percentile(direct, 0.5)
    print(f"\nupload → ledger outcome, {args.rows:,}-row file, {len(latencies)} files:")
    print(f"  p50 {p50:.3f} s   p95 {p95:.3f} s", end="   ")
    print(f"min {min(latencies):.3f} s   max {max(latencies):.3f} s")
    print(f"  seen by the polling client p50 {statistics.median(seen):.3f} s")
    print(f"  of which queued (event → claim) p50 {statistics.median(queued):.3f} s,")
    print(f"           processing (claim → outcome) p50 {statistics.median(processing):.3f} s")
    print(f"baseline (put + validate + raw batch_writer, no events) p50 {base50:.3f} s")
    print(f"ratio pipeline p50 / baseline p50: {p50 / base50:.2f}")
    verdict = "meets" if p50 <= TARGET_P50_S else "MISSES"
    print(f"target p50 ≤ {TARGET_P50_S} s: {verdict}")


if __name__ == "__main__":
    main()
