"""Hostile input at full size, default limits: how long until the verdict, and at what memory.

    python bench/hostile_bench.py            # every case (about a minute, ~3 GB of temp files)
    python bench/hostile_bench.py --only gzip_bomb

Each input is generated on the fly into a temporary directory (nothing large is committed),
then read by ``iter_table`` in its own subprocess, so the time and the peak RSS (VmHWM,
imports included) are that case's alone. The first row, ``baseline``, reads the nine-row
fixture: its peak is what the imports alone cost, the floor under every other figure.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
HEADER = b"Order_Id,Customer_Id,Order_Date,Order_Status,Order_Total\n"

CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from core.validation.limits import Limits, MB
from core.validation.readers import FileRejected, iter_table
path, name, limits = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
columns = ["Order_Id", "Customer_Id", "Order_Date", "Order_Status", "Order_Total"]
started = time.perf_counter()
rows = 0
bad = 0
source = open(path, "rb") if name.endswith(".stream") else Path(path)
try:
    for frame in iter_table(source, name, columns, Limits(**limits)):
        rows += frame.height
        bad += frame.height - int(frame["field_count_ok"].sum())
    verdict = f"read: {rows} rows, {bad} with a wrong field count"
except FileRejected as exc:
    verdict = f"rejected: {exc}"
seconds = time.perf_counter() - started
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"verdict": verdict, "seconds": seconds, "peak_mb": peak / 1024}))
"""


def gzip_bomb(path: Path) -> tuple[str, dict[str, int]]:
    """~4 MB on disk, 8 GB inflated: one 64 MB member of text, repeated 128 times."""
    member = gzip.compress(HEADER + b"0" * (64 * MB), compresslevel=9)
    with path.open("wb") as f:
        for _ in range(128):
            f.write(member)
    return "orders.csv.gz", {}


def one_gb_line(path: Path) -> tuple[str, dict[str, int]]:
    _long_line(path, 1024 * MB)
    return "orders.csv", {}


def one_gb_line_size_raised(path: Path) -> tuple[str, dict[str, int]]:
    _long_line(path, 1024 * MB)
    return "orders.csv", {"max_bytes": 2048 * MB}


def _long_line(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.write(HEADER)
        block = b"x" * MB
        for _ in range(size // MB):
            f.write(block)
        f.write(b",c,1/1/23,Pending,1\n")


def million_columns(path: Path) -> tuple[str, dict[str, int]]:
    path.write_bytes(",".join(f"c{i}" for i in range(1_000_000)).encode() + b"\n1,2,3\n")
    return "wide.csv", {}


def million_columns_line_raised(path: Path) -> tuple[str, dict[str, int]]:
    million_columns(path)
    return "wide.csv", {"max_line_bytes": 16 * MB}


def xlsx_bomb_declared(path: Path) -> tuple[str, dict[str, int]]:
    """A 1 GB sheet that says so: refused from the zip directory alone."""
    _xlsx_bomb(path, 1024 * MB, lie=False)
    return "orders.xlsx", {}


def xlsx_bomb_lying(path: Path) -> tuple[str, dict[str, int]]:
    """A 1 GB sheet whose headers claim 100 bytes: refused while inflating, at the limit."""
    _xlsx_bomb(path, 1024 * MB, lie=True)
    return "orders.xlsx", {}


def _xlsx_bomb(path: Path, size: int, *, lie: bool) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", b"<Types/>")
        archive.writestr("xl/workbook.xml", b"<workbook/>")
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as part:
            block = b" " * MB
            for _ in range(size // MB):
                part.write(block)
    if lie:
        raw = bytearray(path.read_bytes())
        name = b"xl/worksheets/sheet1.xml"
        for signature, offset, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
            at = raw.find(signature)
            while at != -1:
                if raw[at + name_at : at + name_at + len(name)] == name:
                    raw[at + offset : at + offset + 4] = (100).to_bytes(4, "little")
                at = raw.find(signature, at + 4)
        path.write_bytes(bytes(raw))


def parquet_bomb(path: Path) -> tuple[str, dict[str, int]]:
    """40 distinct 16 MB values (640 MB of data) in a file of a few hundred KB."""
    import polars as pl

    values = [chr(65 + i % 26) * (16 * MB - i) for i in range(40)]
    frame = pl.DataFrame({"Order_Id": values}).with_columns(
        pl.lit("c").alias("Customer_Id"),
        pl.lit("1/1/23").alias("Order_Date"),
        pl.lit("Pending").alias("Order_Status"),
        pl.lit("1").alias("Order_Total"),
    )
    frame.write_parquet(path, compression="zstd")
    return "orders.parquet", {}


def deep_json(path: Path) -> tuple[str, dict[str, int]]:
    good = json.dumps(
        {
            "Order_Id": "A",
            "Customer_Id": "c",
            "Order_Date": "1/1/23",
            "Order_Status": "Pending",
            "Order_Total": 1,
        }
    ).encode()
    deep = b'{"Order_Id": ' + b"[" * 400_000 + b"]" * 400_000 + b"}"
    path.write_bytes(good + b"\n" + deep + b"\n" + good + b"\n")
    return "orders.jsonl", {}


def huge_json_line(path: Path) -> tuple[str, dict[str, int]]:
    with path.open("wb") as f:
        f.write(b'{"Order_Id": "')
        block = b"y" * MB
        for _ in range(256):
            f.write(block)
        f.write(b'"}\n')
    return "orders.jsonl", {}


def ten_mb_order_id(path: Path) -> tuple[str, dict[str, int]]:
    path.write_bytes(HEADER + b"A" * (10 * MB) + b",c,1/1/23,Pending,1\n")
    return "orders.csv", {}


def ten_mb_order_id_quoted(path: Path) -> tuple[str, dict[str, int]]:
    value = b"A" * (10 * MB)
    wrapped = b"\n".join(value[i : i + 100] for i in range(0, len(value), 100))
    path.write_bytes(HEADER + b'"' + wrapped + b'",c,1/1/23,Pending,1\n')
    return "orders.csv", {}


def random_bytes(path: Path) -> tuple[str, dict[str, int]]:
    path.write_bytes(zlib.compress(b"") + bytes(range(256)) * (256 * 1024))  # 64 MB
    return "orders.csv", {}


def endless_stream(path: Path) -> tuple[str, dict[str, int]]:
    """A 600 MB upload read as a stream: spooling stops at the 512 MB size limit."""
    with path.open("wb") as f:
        f.truncate(600 * MB)
    return "upload.stream", {}


def baseline(path: Path) -> tuple[str, dict[str, int]]:
    path.write_bytes((ROOT / "fixtures" / "formats" / "orders.csv").read_bytes())
    return "orders.csv", {}


CASES: dict[str, Callable[[Path], tuple[str, dict[str, int]]]] = {
    "baseline": baseline,
    "gzip_bomb": gzip_bomb,
    "one_gb_line": one_gb_line,
    "one_gb_line_size_raised": one_gb_line_size_raised,
    "million_columns": million_columns,
    "million_columns_line_raised": million_columns_line_raised,
    "xlsx_bomb_declared": xlsx_bomb_declared,
    "xlsx_bomb_lying": xlsx_bomb_lying,
    "parquet_bomb": parquet_bomb,
    "deep_json": deep_json,
    "huge_json_line": huge_json_line,
    "ten_mb_order_id": ten_mb_order_id,
    "ten_mb_order_id_quoted": ten_mb_order_id_quoted,
    "random_bytes": random_bytes,
    "endless_stream": endless_stream,
}


def run(name: str, build: Callable[[Path], tuple[str, dict[str, int]]]) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="orderpipe-hostile-") as tmp:
        path = Path(tmp) / "input"
        file_name, limits = build(path)
        size = path.stat().st_size
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(ROOT), str(path), file_name, json.dumps(limits)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    if done.returncode != 0:
        return {"case": name, "size_mb": size / MB, "verdict": "CRASH: " + done.stderr[-300:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"case": name, "size_mb": size / MB, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(CASES), action="append")
    args = parser.parse_args()
    print("| case | input on disk | verdict | time s | peak RSS MB |")
    print("| --- | ---: | --- | ---: | ---: |")
    for name in args.only or CASES:
        r = run(name, CASES[name])
        seconds = r.get("seconds")
        peak = r.get("peak_mb")
        print(
            f"| {name} | {r['size_mb']:.1f} MB | {r['verdict']} | {seconds:.2f} | {peak:.0f} |"
            if seconds is not None and peak is not None
            else f"| {name} | {r['size_mb']:.1f} MB | {r['verdict']} | - | - |",
            flush=True,
        )


if __name__ == "__main__":
    main()
