"""How fast and how lean is validation? Ratios against polars' own parse, measured in one run.

    python bench/validate_bench.py               # 1M rows (about 2 minutes on 2 cores)
    python bench/validate_bench.py --rows 5000000

It generates an order file with about 8% invalid rows (every kind of reason, repeated ids,
rows with a wrong field count), then runs each variant in its own subprocess so that each
peak RSS is that variant's alone:

- ``parse``: ``pl.read_csv`` with every column as text: the parse-only baseline, and the
  "plain read" whose peak RSS is the memory baseline;
- ``read``: the engine's reader alone (``iter_table``), to show where the time goes;
- ``validate``: ``core.validation.engine.validate`` with each chunk consumed (counted and dropped);
- ``whole``: the straightforward vectorised way: the whole file in one frame, same rules;
- ``floor`` and ``floor+unique``: a lower bound, not an implementation: the parse plus the
  fewest column passes the rules need, without and with the id check (see ``_floor``);
- ``old``: the old job's row loop (``bench/old_loop.py``) on the first ``--old-rows`` rows,
  against ``validate`` on that same small file.

Each timed variant runs ``--repeat`` times inside its process and keeps the best wall time and
the best CPU time (all threads): on a shared machine the minimum is the least noisy estimate,
and CPU time, which other processes barely move, shows the work itself. Peak RSS is the process's
high-water mark (VmHWM), imports included (the same imports in every variant).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
COLUMNS = ("Order_Id", "Customer_Id", "Order_Date", "Order_Status", "Order_Total")
BAD_KINDS = ("cust", "date", "calendar", "status", "negative", "decimals", "repeat", "fields")


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """``rows`` data rows and a header; each bad kind hits 1% of rows (8% in all)."""
    import polars as pl

    i = pl.col("i")
    bucket = pl.col("i").hash(seed) % 10_000
    bad = {kind: (bucket >= k * 125) & (bucket < (k + 1) * 125) for k, kind in enumerate(BAD_KINDS)}
    day = (i % 28 + 1).cast(pl.String)
    month = (i // 28 % 12 + 1).cast(pl.String)
    year = (i % 4 + 21).cast(pl.String)
    order_id = pl.when(bad["repeat"]).then(pl.lit("ORD000000001"))
    order_id = order_id.otherwise(pl.lit("ORD") + i.cast(pl.String).str.zfill(9))
    customer = pl.when(bad["cust"]).then(pl.lit("")).otherwise("CUST" + (i % 5000).cast(pl.String))
    date = (
        pl.when(bad["date"]).then(pl.lit("2023/13/01"))
        .when(bad["calendar"]).then(pl.lit("31/04/23"))
        .when(i % 3 == 0).then("20" + year + "-" + month.str.zfill(2) + "-" + day.str.zfill(2))
        .otherwise(day + "/" + month + "/" + year)
    )  # fmt: skip
    status = (
        pl.when(bad["status"]).then(pl.lit("Shipped"))
        .when(i % 4 == 0).then(pl.lit("Pending"))
        .when(i % 4 == 1).then(pl.lit("Completed"))
        .when(i % 4 == 2).then(pl.lit("Inprogress"))
        .otherwise(pl.lit("pending"))
    )  # fmt: skip
    total = (
        pl.when(bad["negative"]).then(pl.lit("-12.50"))
        .when(bad["decimals"]).then(pl.lit("12.505"))
        .otherwise((i % 100_000).cast(pl.String) + "." + (i % 90 + 10).cast(pl.String))
    )  # fmt: skip
    line = pl.concat_str([order_id, customer, date, status, total], separator=",")
    line = pl.when(bad["fields"]).then(line + ",extra").otherwise(line)
    frame = pl.select(pl.int_range(0, rows, dtype=pl.Int64).alias("i")).select(line.alias("l"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write((",".join(COLUMNS) + "\n").encode())
        frame.write_csv(f, include_header=False, quote_style="never")
    tmp.replace(path)


# --- variants, each run in its own process -------------------------------------------------


def _parse(path: Path) -> int:
    import polars as pl

    return pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True).height


def _read(path: Path) -> int:
    from core.validation.engine import DEFAULT_CHUNK_ROWS
    from core.validation.limits import Limits
    from core.validation.readers import iter_table

    chunks = iter_table(path, path.name, COLUMNS, Limits(), DEFAULT_CHUNK_ROWS)
    return sum(f.height for f in chunks)


def _validate(path: Path) -> int:
    from core.validation.engine import validate

    rows = [0]

    def consume(chunk: Any) -> None:
        rows[0] += chunk.valid.height + chunk.rejects.height

    outcome = validate(path, path.name, on_chunk=consume)
    assert outcome.status == "accepted", outcome.error
    assert rows[0] == outcome.rows
    return outcome.rows


def _whole(path: Path) -> int:
    """The straightforward way: one frame for the file, rules and splits over all of it."""
    import polars as pl

    from core.validation.rules import (
        derived_values,
        normalised_values,
        row_rules,
        seen_col,
        trimmed_values,
        value_col,
    )
    from core.validation.schema import default_schema

    schema = default_schema()
    rules = row_rules(schema)
    frame = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True)
    frame = frame.with_columns(
        pl.int_range(2, frame.height + 2).alias("line"),
        pl.lit(True).alias("field_count_ok"),
    )
    judged = frame
    for stage in trimmed_values(schema):
        judged = judged.with_columns(stage)
    repeat = ~pl.col(value_col("Order_Id")).is_first_distinct()
    judged = judged.with_columns(repeat.alias(seen_col("Order_Id")))
    for stages in derived_values(schema).values():
        for stage in stages:
            judged = judged.with_columns(stage)
    judged = judged.with_columns(**rules)
    judged = judged.with_columns(pl.any_horizontal(list(rules)).alias("bad"))
    judged.filter(~pl.col("bad")).select("line", *normalised_values(schema).values())
    judged.filter(pl.col("bad")).select("line", *COLUMNS)
    return frame.height


def _floor(path: Path, *, unique: bool = False) -> int:
    """A lower bound for any polars implementation of the contract, not an implementation.

    The parse-only read, then the fewest column passes the rules need, in one plan over the
    whole frame (polars' best case: no chunks, both cores): trim each value, then per column
    one check, required everywhere, a single format regex for dates (no calendar check, no
    ISO form), one case-folded lookup for statuses, one regex for totals (sign included), and
    with ``unique`` the Order_Id repeat check. No line numbers, no field counts, no reasons,
    no normalised values, no valid and rejected frames: everything the contract asks beyond
    these passes only adds to it.
    """
    import polars as pl

    frame = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True)
    trimmed = frame.lazy().select(pl.col(c).str.strip_chars() for c in COLUMNS)
    broken = [pl.col(c).is_null() | (pl.col(c).str.len_bytes() == 0) for c in COLUMNS]
    broken += [
        ~pl.col("Order_Date").str.contains(r"^(\d{1,2}/\d{1,2}/\d{2}(\d{2})?|\d{4}-\d{2}-\d{2})$"),
        ~pl.col("Order_Status").str.to_lowercase().is_in(["pending", "completed", "inprogress"]),
        ~pl.col("Order_Total").str.contains(r"^\d+(\.\d{1,2})?$"),
    ]
    if unique:
        broken.append(~pl.col("Order_Id").is_first_distinct())
    bad = trimmed.select(pl.any_horizontal(broken).sum()).collect().item()
    assert 0 < bad < frame.height
    return frame.height


def _old(path: Path) -> int:
    sys.path.insert(0, str(HERE))
    from old_loop import validate_like_the_old_job

    valid, _ = validate_like_the_old_job(path)
    return valid


VARIANTS: dict[str, Callable[[Path], int]] = {
    "parse": _parse,
    "read": _read,
    "validate": _validate,
    "whole": _whole,
    "floor": _floor,
    "floor+unique": lambda path: _floor(path, unique=True),
    "old": _old,
}


def child(variant: str, path: Path, repeat: int) -> None:
    sys.path.insert(0, str(ROOT))
    import polars  # noqa: F401 - every variant pays the same import before measuring

    func = VARIANTS[variant]
    best, best_cpu, rows = float("inf"), float("inf"), 0
    for _ in range(repeat):
        cpu_start, start = _cpu_seconds(), time.perf_counter()
        rows = func(path)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, _cpu_seconds() - cpu_start)
    result = {"variant": variant, "seconds": best, "cpu": best_cpu, "rows": rows}
    print(json.dumps({**result, "peak_mb": _peak_mb()}))


def _peak_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the process image, so it starts afresh at
    exec; ru_maxrss would carry over the parent's size at fork (Linux keeps it across exec)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    # CPU time (all threads) barely moves when other work shares the cores; wall time does.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(variant: str, path: Path, repeat: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", variant, str(path), "--repeat", str(repeat)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{variant} failed:\n{done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--old-rows", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-whole", action="store_true", help="skip the one-frame variant")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.repeat)
        return

    big = OUT / f"orders_{args.rows}.csv"
    small = OUT / f"orders_{args.old_rows}.csv"
    for path, rows in ((big, args.rows), (small, args.old_rows)):
        if not path.exists():
            print(f"generating {path.relative_to(ROOT)} ({rows:,} rows)...", flush=True)
            # In a child, so that this process stays small for the ones it starts.
            code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import validate_bench as b; "
            code += f"b.generate(b.Path({str(path)!r}), {rows})"
            subprocess.run([sys.executable, "-c", code], check=True)
    size_mb = big.stat().st_size / 1e6
    print(f"file: {big.relative_to(ROOT)}, {args.rows:,} rows, {size_mb:.0f} MB; "
          f"best of {args.repeat}; each variant in its own process\n")  # fmt: skip

    names = ["parse", "read", "validate"] + ([] if args.skip_whole else ["whole"])
    names += ["floor", "floor+unique"]
    print(
        f"{'variant':<13}{'seconds':>9}{'rows/s':>13}{'x parse':>9}"
        f"{'cpu s':>9}{'x parse':>9}{'peak MB':>9}{'x RSS':>7}"
    )
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        r = results[name] = run(name, big, args.repeat)
        base = results["parse"]
        print(
            f"{name:<13}{r['seconds']:>9.3f}{r['rows'] / r['seconds']:>13,.0f}"
            f"{r['seconds'] / base['seconds']:>9.2f}{r['cpu']:>9.3f}{r['cpu'] / base['cpu']:>9.2f}"
            f"{r['peak_mb']:>9.0f}"
            f"{r['peak_mb'] / base['peak_mb']:>7.2f}",
            flush=True,
        )

    old = run("old", small, 1)
    new = run("validate", small, args.repeat)
    print(
        f"\nold row loop on {args.old_rows:,} rows: {old['seconds']:.2f} s "
        f"({args.old_rows / old['seconds']:,.0f} rows/s); validate: {new['seconds']:.4f} s; "
        f"speed-up {old['seconds'] / new['seconds']:,.0f}x"
    )
    v = results["validate"]
    print(
        f"\ntargets: validate <= 2.0x parse: {v['seconds'] / base['seconds']:.2f}x wall, "
        f"{v['cpu'] / base['cpu']:.2f}x CPU; "
        f"peak RSS <= plain read: {v['peak_mb'] / base['peak_mb']:.2f}x"
    )
    floor = results["floor"]
    print(
        f"floor (parse + the rules' fewest passes, whole frame, no outputs): "
        f"{floor['seconds'] / base['seconds']:.2f}x wall, {floor['cpu'] / base['cpu']:.2f}x CPU; "
        f"with the id check {results['floor+unique']['seconds'] / base['seconds']:.2f}x wall"
    )


if __name__ == "__main__":
    main()
