"""Load figures on the local stack: one large file, then a burst of small files.

Starts the same stack as ``orderpipe local`` (emulator child process, resources, supervised
worker child process) and measures:

1. **large file**: ``--rows`` rows (default 5,000,000, 0.1% rejected) uploaded as one object.
   Reports the worker process's peak RSS (the kernel's high-water mark, ``VmHWM``) against its
   idle RSS and the file size, the time to the outcome, and checks the counts exactly: the
   ledger's rows/valid/invalid and the orders the file stored.
2. **burst**: ``--files`` small files (default 500, one in five with a rejected row) uploaded as
   fast as 8 threads can, then upload → outcome latency per file (p50/p95, from the upload's
   acknowledgement to the ledger's ``finished_at``) and upload → email for files with rejects.

Baselines, measured in the same run against the same emulator: for the large file, the rate of
one raw BatchWriteItem writer (25 items a call) — DynamoDB writes dominate locally — so the
ratio says what the whole pipeline achieves against bare writes; for the burst, the latency of
one small file alone on the idle stack, so the ratio says what queueing 500 at once costs.

    .venv/bin/python bench/load_bench.py                        # the full figures (long)
    .venv/bin/python bench/load_bench.py --rows 200000 --files 100   # a quick look

Results are printed and written to ``bench/out/load.json`` (``bench/reliability_report.py``
puts them in docs/reliability.md). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from boto3.s3.transfer import TransferConfig

from core.aws.clients import Clients
from core.aws.stack import orders_table_definition
from core.local.embedded import EmbeddedConfig, EmbeddedStack

OUT = Path(__file__).resolve().parent / "out"
HEADER = "Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total"
TERMINAL = {"SUCCEEDED", "PARTIAL", "REJECTED"}
MEMORY_FLOOR_MB = 2048  # stop the large run before it takes the shared machine's last memory


# -- inputs -------------------------------------------------------------------------------------


def large_file(path: Path, rows: int) -> tuple[int, int]:
    """``rows`` data rows, one in a thousand with an impossible date; (valid, invalid)."""
    import polars as pl

    i = pl.int_range(0, rows, eager=True).alias("i")
    bad = i % 1000 == 999
    frame = pl.DataFrame({"i": i}).select(
        Order_Id=pl.format("L{}", pl.col("i")),
        Customer_Id=pl.format("C{}", pl.col("i") % 9973),
        Order_Date=pl.when(bad)
        .then(pl.lit("31/02/23"))
        .otherwise(pl.format("{}/{}/23", pl.col("i") % 28 + 1, pl.col("i") % 12 + 1)),
        Order_Status=pl.lit("Pending"),
        Order_Total=pl.format("{}.{}", pl.col("i") % 5000, pl.col("i") % 90 + 10),
    )
    frame.write_csv(path)
    invalid = int(bad.sum())
    return rows - invalid, invalid


def small_file(index: int, letter: str = "S") -> tuple[bytes, bool]:
    rows = [HEADER]
    rows += [f"{letter}{index:04d}-{n},C{n},{1 + n}/3/24,Completed,{n}.50" for n in range(10)]
    with_reject = index % 5 == 0
    if with_reject:
        rows.append(f"{letter}{index:04d}-bad,C,not-a-date,Pending,1")
    return ("\n".join(rows) + "\n").encode(), with_reject


# -- reading the stack --------------------------------------------------------------------------


class RssWatch:
    """Samples a process's resident set; the kernel's high-water mark is the figure kept."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.idle_kb = self._field("VmRSS")
        self.sampled_kb = self.idle_kb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _field(self, name: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.sampled_kb = max(self.sampled_kb, self._field("VmRSS"))
            except OSError:
                return  # the process is gone (killed or restarted): keep what we saw

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_kb(self) -> int:
        try:
            return max(self._field("VmHWM"), self.sampled_kb)
        except OSError:
            return self.sampled_kb


def ledger(clients: Clients, table: str) -> dict[str, dict[str, Any]]:
    out = {}
    for page in clients.dynamodb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            fid = item["file_id"]["S"]
            if "#" in fid and not fid.startswith("lock#"):
                out[fid] = {k: next(iter(v.values())) for k, v in item.items()}
    return out


def count_orders(clients: Clients, table: str) -> int:
    """Items in the table, as the emulator counts them (exact there, unlike AWS's estimate).

    A scan would be exact too, but the emulator scans 300,000 items in minutes, not seconds.
    """
    described = clients.dynamodb.describe_table(TableName=table)["Table"]
    return int(described["ItemCount"])


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


_last_progress = [0.0]


def log_progress(emulator: RssWatch) -> None:
    """Once a minute: the emulator's size and the machine's free memory, so a run that would
    exhaust memory shows it long before it does (and stops itself below a floor)."""
    if time.monotonic() - _last_progress[0] < 60:
        return
    _last_progress[0] = time.monotonic()
    free_mb = available_mb()
    print(
        f"{time.strftime('%H:%M:%S')} emulator RSS {emulator.sampled_kb / 1024:,.0f} MB, "
        f"machine available {free_mb:,} MB",
        flush=True,
    )
    if free_mb < MEMORY_FLOOR_MB:
        raise SystemExit(f"stopped: machine memory available fell to {free_mb} MB")


def wait_until(done: Any, timeout_s: float, poll_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


# -- the measurements ---------------------------------------------------------------------------


def raw_write_rate(clients: Clients, table: str, items: int = 5000) -> float:
    """Items/s of one bare BatchWriteItem writer on this emulator: the write baseline."""
    clients.dynamodb.create_table(**orders_table_definition(table))
    started = time.monotonic()
    for start in range(0, items, 25):
        batch = [
            {
                "PutRequest": {
                    "Item": {
                        "Order_Id": {"S": f"X{n}"},
                        "Customer_Id": {"S": f"C{n}"},
                        "Order_Date": {"S": "2023-01-01"},
                        "Order_Status": {"S": "Pending"},
                        "Order_Total": {"N": "1.50"},
                    }
                }
            }
            for n in range(start, min(start + 25, items))
        ]
        pending: dict[str, Any] = {table: batch}
        while pending:
            pending = clients.dynamodb.batch_write_item(RequestItems=pending)["UnprocessedItems"]
    return items / (time.monotonic() - started)


def bench_large(stack: EmbeddedStack, work: Path, rows: int, timeout_s: float) -> dict[str, Any]:
    assert stack.clients is not None
    assert stack.settings is not None
    assert stack.worker is not None
    clients, settings = stack.clients, stack.settings
    path = work / "large.csv"
    t0 = time.monotonic()
    valid, invalid = large_file(path, rows)
    size = path.stat().st_size
    print(
        f"large file: {rows:,} rows, {size / 1e6:.0f} MB generated in {time.monotonic() - t0:.0f} s"
    )
    baseline = raw_write_rate(clients, settings.orders_table + "-baseline")
    print(f"baseline: one raw BatchWriteItem writer {baseline:,.0f} items/s")

    pid = stack.worker.pid
    emulator_pid = stack.emulator.pid
    assert pid is not None
    assert emulator_pid is not None
    key = "incoming/large.csv"
    # The emulator keeps every item in memory: its growth is what bounds the size that fits.
    with RssWatch(pid) as rss, RssWatch(emulator_pid) as emulator_rss:
        started = time.time()
        # One PUT (no multipart), so the object is one version with one event.
        clients.s3.upload_file(
            str(path), settings.bucket, key, Config=TransferConfig(multipart_threshold=2**40)
        )
        uploaded = time.time()

        def done() -> bool:
            entries = [
                e for e in ledger(clients, settings.files_table).values() if e["object_key"] == key
            ]
            if bool(entries) and entries[0]["status"] in TERMINAL:
                return True
            log_progress(emulator_rss)
            return False

        wait_until(done, timeout_s, 10.0, "the large file's outcome")
        finished = time.time()
    (entry,) = [e for e in ledger(clients, settings.files_table).values() if e["object_key"] == key]
    stored = count_orders(clients, settings.orders_table)  # only this file's orders so far
    seconds = epoch(entry["finished_at"]) - uploaded
    result = {
        "rows": rows,
        "bytes": size,
        "status": entry["status"],
        "ledger_rows": int(entry["rows"]),
        "ledger_valid": int(entry["valid"]),
        "ledger_invalid": int(entry["invalid"]),
        "expected_valid": valid,
        "expected_invalid": invalid,
        "orders_stored": stored,
        "counts_exact": int(entry["rows"]) == rows
        and int(entry["valid"]) == valid == stored
        and int(entry["invalid"]) == invalid,
        "upload_s": round(uploaded - started, 1),
        "upload_to_outcome_s": round(seconds, 1),
        "observed_s": round(finished - started, 1),
        "rows_per_s": round(valid / seconds),
        "baseline_items_per_s": round(baseline),
        "ratio_to_raw_writes": round((valid / seconds) / baseline, 2),
        "worker_idle_rss_mb": round(rss.idle_kb / 1024),
        "worker_peak_rss_mb": round(rss.peak_kb() / 1024),
        "worker_growth_mb": round((rss.peak_kb() - rss.idle_kb) / 1024),
        "peak_rss_to_file_size": round(rss.peak_kb() * 1024 / size, 2),
        "worker_restarts": stack.worker.restarts,
        "emulator_peak_rss_mb": round(emulator_rss.peak_kb() / 1024),
    }
    print(json.dumps(result, indent=2))
    return result


def bench_burst(stack: EmbeddedStack, files: int, timeout_s: float) -> dict[str, Any]:
    assert stack.clients is not None
    assert stack.settings is not None
    clients, settings = stack.clients, stack.settings

    def put(index: int, prefix: str = "burst") -> tuple[str, float, bool]:
        body, rejects = small_file(index, "S" if prefix == "burst" else "A")
        key = f"incoming/{prefix}/{index:04d}.csv"
        clients.s3.put_object(Bucket=settings.bucket, Key=key, Body=body)
        return key, time.time(), rejects

    before = count_orders(clients, settings.orders_table)  # the large file's, if it ran
    # Baseline: one small file alone on the idle stack.
    key, sent, _ = put(9999, "alone")
    wait_until(
        lambda: any(
            e["object_key"] == key and e["status"] in TERMINAL
            for e in ledger(clients, settings.files_table).values()
        ),
        120,
        0.05,
        "the single file",
    )
    (alone,) = [e for e in ledger(clients, settings.files_table).values() if e["object_key"] == key]
    single_s = epoch(alone["finished_at"]) - sent
    print(f"baseline: one small file alone, upload → outcome {single_s:.2f} s")

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        sent_files = list(pool.map(put, range(files)))
    upload_s = time.monotonic() - started
    sent_at = {k: t for k, t, _ in sent_files}
    wants_mail = {k for k, _, r in sent_files if r}

    def all_done() -> bool:
        entries = ledger(clients, settings.files_table).values()
        done = [e for e in entries if e["object_key"] in sent_at and e["status"] in TERMINAL]
        mailed = [e for e in done if e["object_key"] in wants_mail and e.get("notified_at")]
        return len(done) == files and len(mailed) == len(wants_mail)

    wait_until(all_done, timeout_s, 2.0, "the burst")
    entries = [
        e for e in ledger(clients, settings.files_table).values() if e["object_key"] in sent_at
    ]
    outcome = [epoch(e["finished_at"]) - sent_at[e["object_key"]] for e in entries]
    mailed = [
        epoch(e["notified_at"]) - sent_at[e["object_key"]]
        for e in entries
        if e["object_key"] in wants_mail
    ]
    statuses: dict[str, int] = {}
    for e in entries:
        statuses[e["status"]] = statuses.get(e["status"], 0) + 1
    stored = count_orders(clients, settings.orders_table) - before - 10  # less large + alone
    result = {
        "files": files,
        "orders_already_stored": before,
        "statuses": statuses,
        "orders_stored": stored,
        "counts_exact": stored == files * 10 and statuses.get("PARTIAL", 0) == len(wants_mail),
        "upload_all_s": round(upload_s, 1),
        "outcome_p50_s": round(percentile(outcome, 0.5), 2),
        "outcome_p95_s": round(percentile(outcome, 0.95), 2),
        "outcome_max_s": round(max(outcome), 2),
        "email_p50_s": round(percentile(mailed, 0.5), 2) if mailed else None,
        "email_p95_s": round(percentile(mailed, 0.95), 2) if mailed else None,
        "files_per_s": round(files / max(outcome), 1),
        "baseline_single_file_s": round(single_s, 2),
        "ratio_p50_to_single": round(statistics.median(outcome) / single_s, 1),
    }
    print(json.dumps(result, indent=2))
    return result


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def code_version() -> str:
    """The commit the run's code came from, and whether the tree had uncommitted changes."""
    import subprocess  # nosec B404 - git on our own tree

    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the large file")
    parser.add_argument("--files", type=int, default=500, help="files in the burst")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per part")
    parser.add_argument(
        "--out", type=Path, default=OUT / "load.json", help="JSON file the figures are merged into"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="orderpipe-load-"))
    config = EmbeddedConfig(
        state_dir=work / "state", outbox_dir=work / "outbox", env_name="load", save_state=False
    )
    results: dict[str, Any] = {}
    code = code_version()
    with EmbeddedStack(config) as stack:
        print(f"stack ready at {stack.endpoint}; worker log {stack.worker_log}")
        if not args.skip_large:
            stamp = now_iso()
            results["large"] = {
                **bench_large(stack, work, args.rows, args.timeout),
                "at": stamp,
                "code": code,
            }
        if not args.skip_burst:
            stamp = now_iso()
            results["burst"] = {
                **bench_burst(stack, args.files, args.timeout),
                "at": stamp,
                "code": code,
            }
    target: Path = args.out
    target.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(target.read_text()) if target.exists() else {}
    previous.update(results)  # a partial run keeps the other part's last figures
    target.write_text(json.dumps(previous, indent=2) + "\n")
    print(f"written to {target}")


if __name__ == "__main__":
    main()
