"""Validation against what a user would pick instead: the same contract, the same file, one run.

    make bench-peers                          # 1M rows, then 5M rows
    python bench/peers.py --rows 1000000 --repeat 3

The file is the one bench/validate_bench.py generates (seeded, 8% invalid: every reason of the
contract, repeated ids, rows with an extra field). Each variant runs in its own process, in an
order that rotates between repeats, and must reach exactly the engine's outcome: the same
number of valid rows and the same rejected line numbers (checked, or the bench fails). Printed:
best wall time, CPU time (all threads) and peak RSS of each, and each as a multiple of polars'
parse-only read of the same file.

Variants:

- ``parse``: ``pl.read_csv``, every column as text: the baseline;
- ``engine``: ``core.validation.engine.validate``, chunks consumed as ingest consumes them;
- ``polars``: the straightforward whole-frame version: one frame, one expression per rule,
  ``collect_all`` for the valid rows and the rejects with their reasons;
- ``dataframely``, ``pandera`` (polars backend) and ``pointblank``: the contract in each
  library's own terms, with custom expressions where its built-ins fall short (``GAPS``).

The peer libraries are bench-only extras (``pip install -e '.[peers]'``), never runtime
dependencies.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from validate_bench import COLUMNS, _cpu_seconds, _peak_mb, generate  # noqa: E402

EXTRA = "extra_field"  # a sixth column: non-null exactly when a row has too many fields
STATUSES = ("pending", "completed", "inprogress")
TOTAL_FORMAT = r"^-?0*[0-9]{1,36}(?:\.[0-9]{1,2})?$"

# What each library cannot state with its built-in checks, so each needed a custom expression
# (or a polars step before it). Printed with the table.
GAPS = {
    "dataframely": (
        "first-occurrence uniqueness (primary_key flags every copy), case-insensitive allowed "
        "set, d/m/yy calendar dates, total >= 0 on decimal text, field count; no trimming"
    ),
    "pandera": (
        "first-occurrence uniqueness (unique flags every copy), case-insensitive allowed set, "
        "d/m/yy calendar dates, total >= 0 on decimal text, field count; no trimming"
    ),
    "pointblank": (
        "first-occurrence uniqueness (rows_distinct flags every copy), case-insensitive allowed "
        "set, d/m/yy calendar dates, total >= 0 on decimal text, field count; no trimming"
    ),
}


# --- the contract as plain polars expressions (true = the row passes) ---------------------


def _contract() -> dict[str, Any]:
    """Each rule of the order contract once, as an expression over the prepared frame."""
    import polars as pl

    from core.validation.schema import default_schema

    date_col = next(c for c in default_schema().columns if c.name == "Order_Date")
    strptime = {
        ("day", "month", "year", True): "%d/%m/%y",
        ("day", "month", "year", False): "%d/%m/%Y",
        ("year", "month", "day", False): "%Y-%m-%d",
    }
    value = pl.col("Order_Date")
    dates = [
        pl.when(value.str.contains(f.match_pattern)).then(
            value.str.to_date(strptime[(*f.order, f.two_digit_year)], strict=False)
        )
        for f in date_col.date_formats
    ]
    aligned = pl.col(EXTRA).is_null()
    order_id = pl.col("Order_Id")
    total = pl.col("Order_Total")
    return {
        "row.field_count": aligned,
        **{f"{c}.required": pl.col(c).is_not_null() for c in COLUMNS},
        # Only aligned rows claim an id; the first occurrence is valid, later ones are not.
        "Order_Id.unique": order_id.is_null()
        | ~aligned
        | order_id.is_first_distinct().over(aligned),
        "Order_Date.format": value.is_null() | pl.coalesce(dates).is_not_null(),
        "Order_Status.allowed": pl.col("Order_Status").is_null()
        | pl.col("Order_Status").str.to_lowercase().is_in(STATUSES),
        "Order_Total.format": total.is_null() | total.str.contains(TOTAL_FORMAT),
        "Order_Total.range": total.is_null()
        | ~(total.str.starts_with("-") & total.str.contains("[1-9]")),
    }


def _prepared(path: Path) -> Any:
    """The file as five text columns plus the extra-field marker and a line number, trimmed,
    empty values as null: the transform every library needs done before it (none trims)."""
    import polars as pl

    frame = pl.read_csv(
        path,
        has_header=False,
        skip_rows=1,
        schema={**dict.fromkeys(COLUMNS, pl.String), EXTRA: pl.String},
        truncate_ragged_lines=True,
        missing_columns="insert",
    )
    trimmed = [pl.col(c).str.strip_chars() for c in COLUMNS]
    return frame.with_columns(
        *[
            pl.when(t.str.len_bytes() > 0).then(t).alias(c)
            for t, c in zip(trimmed, COLUMNS, strict=True)
        ],
        pl.int_range(2, pl.len() + 2, dtype=pl.Int64).alias("line"),
    )


def _result(valid: int, lines: Any) -> dict[str, Any]:
    lines = sorted(int(x) for x in lines)
    return {"valid": valid, "rejected": len(lines), "lines_hash": hash(tuple(lines))}


# --- variants -------------------------------------------------------------------------------


def _parse(path: Path) -> dict[str, Any]:
    import polars as pl

    rows = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True).height
    return {"valid": rows, "rejected": 0, "lines_hash": None}


def _engine(path: Path) -> dict[str, Any]:
    from core.validation.engine import validate
    from core.validation.rules import LINE

    valid, lines = [0], []

    def consume(chunk: Any) -> None:
        valid[0] += chunk.valid.height
        lines.append(chunk.rejects[LINE])  # a column, as the other variants keep theirs

    outcome = validate(path, path.name, on_chunk=consume)
    assert outcome.status == "accepted", outcome.error
    return _result(valid[0], [x for part in lines for x in part])


def _polars(path: Path) -> dict[str, Any]:
    """Whole frame, one expression per rule, both outputs from one ``collect_all``."""
    import polars as pl

    rules = _contract()
    frame = _prepared(path).lazy()
    aligned = rules["row.field_count"]
    broken = {
        code: ~ok if code == "row.field_count" else (aligned & ~ok) for code, ok in rules.items()
    }
    judged = frame.with_columns(**broken).with_columns(
        pl.any_horizontal(list(broken)).alias("__bad")
    )
    reasons = pl.concat_list(
        [pl.when(pl.col(code)).then(pl.lit(code)) for code in broken]
    ).list.drop_nulls()
    valid, rejects = pl.collect_all(
        [
            judged.filter(~pl.col("__bad")).select("line", *COLUMNS),
            judged.filter(pl.col("__bad")).select("line", *COLUMNS, reasons.alias("reasons")),
        ]
    )
    return _result(valid.height, rejects["line"])


def _dataframely(path: Path) -> dict[str, Any]:
    import dataframely as dy
    import polars as pl

    rules = _contract()

    class Orders(dy.Schema):
        line = dy.Int64(nullable=False)
        Order_Id = dy.String(nullable=False)
        Customer_Id = dy.String(nullable=False)
        Order_Date = dy.String(nullable=False)
        Order_Status = dy.String(nullable=False)
        Order_Total = dy.String(nullable=False, regex=TOTAL_FORMAT)
        extra_field = dy.String(nullable=True)

        @dy.rule()
        def field_count(cls) -> pl.Expr:
            return rules["row.field_count"]

        @dy.rule()
        def order_id_unique(cls) -> pl.Expr:
            return rules["Order_Id.unique"]

        @dy.rule()
        def order_date_format(cls) -> pl.Expr:
            return rules["Order_Date.format"]

        @dy.rule()
        def order_status_allowed(cls) -> pl.Expr:
            return rules["Order_Status.allowed"]

        @dy.rule()
        def order_total_range(cls) -> pl.Expr:
            return rules["Order_Total.range"]

    good, failures = Orders.filter(_prepared(path), cast=False)
    return _result(good.height, failures.invalid()["line"])


def _pandera(path: Path) -> dict[str, Any]:
    import pandera.polars as pa
    import polars as pl

    rules = _contract()

    def custom(code: str) -> Any:
        return pa.Check(lambda data: data.lazyframe.select(rules[code]), name=code)

    columns = {c: pa.Column(str, nullable=False) for c in COLUMNS}
    columns["Order_Total"] = pa.Column(
        str, nullable=False, checks=[pa.Check.str_matches(TOTAL_FORMAT)]
    )
    schema = pa.DataFrameSchema(
        {**columns, "line": pa.Column(pl.Int64), EXTRA: pa.Column(str, nullable=True)},
        checks=[
            custom(code)
            for code in (
                "row.field_count",
                "Order_Id.unique",
                "Order_Date.format",
                "Order_Status.allowed",
                "Order_Total.range",
            )
        ],
    )
    frame = _prepared(path)
    try:
        schema.validate(frame, lazy=True)
        bad = pl.Series("index", [], dtype=pl.Int64)
    except pa.errors.SchemaErrors as exc:
        bad = exc.failure_cases["index"].drop_nulls().unique()
    rejected = frame.with_row_index("index").filter(pl.col("index").is_in(bad.implode()))
    valid = frame.height - rejected.height
    return _result(valid, rejected["line"])


def _pointblank(path: Path) -> dict[str, Any]:
    import pointblank as pb

    rules = _contract()
    frame = _prepared(path)
    validation = pb.Validate(data=frame).col_vals_not_null(columns=list(COLUMNS))
    validation = validation.col_vals_regex(
        columns="Order_Total", pattern=TOTAL_FORMAT, na_pass=True
    )
    for code in (
        "row.field_count",
        "Order_Id.unique",
        "Order_Date.format",
        "Order_Status.allowed",
        "Order_Total.range",
    ):
        validation = validation.col_vals_expr(expr=rules[code].fill_null(False))
    validation = validation.interrogate()
    passed = validation.get_sundered_data(type="pass")
    failed = validation.get_sundered_data(type="fail")
    return _result(passed.height, failed["line"])


VARIANTS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "parse": _parse,
    "engine": _engine,
    "polars": _polars,
    "dataframely": _dataframely,
    "pandera": _pandera,
    "pointblank": _pointblank,
}


def child(variant: str, path: Path) -> None:
    import polars  # noqa: F401 - every variant pays the same import before measuring

    cpu_start, start = _cpu_seconds(), time.perf_counter()
    result = VARIANTS[variant](path)
    result.update(seconds=time.perf_counter() - start, cpu=_cpu_seconds() - cpu_start)
    print(json.dumps({"variant": variant, **result, "peak_mb": _peak_mb()}))


def run(variant: str, path: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", variant, str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"variant": variant, "error": tail[0]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(path: Path, names: list[str], repeat: int) -> dict[str, dict[str, Any]]:
    """Best wall, best CPU and highest peak of ``repeat`` runs, the order rotated each round."""
    best: dict[str, dict[str, Any]] = {}
    for round_ in range(repeat):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            r = run(name, path)
            if "error" in r:
                best[name] = r
                continue
            if name not in best or "error" in best[name]:
                best[name] = r
            else:
                kept = best[name]
                kept["seconds"] = min(kept["seconds"], r["seconds"])
                kept["cpu"] = min(kept["cpu"], r["cpu"])
                kept["peak_mb"] = max(kept["peak_mb"], r["peak_mb"])
    return best


def report(rows: int, size_mb: float, results: dict[str, dict[str, Any]], repeat: int) -> bool:
    base, engine = results["parse"], results["engine"]
    print(f"\n{rows:,} rows ({size_mb:.0f} MB); best of {repeat}, each variant in its own process")
    print(
        f"{'variant':<12}{'wall s':>8}{'x parse':>9}{'cpu s':>8}{'x parse':>9}"
        f"{'peak MB':>9}{'x parse':>9}  outcome"
    )
    same = True
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<12} failed: {r['error'][:60]}")
            same = same and name not in ("parse", "engine", "polars")
            continue
        if name == "parse":
            verdict = "baseline"
        elif (r["valid"], r["rejected"], r["lines_hash"]) == (
            engine["valid"],
            engine["rejected"],
            engine["lines_hash"],
        ):
            verdict = "same as engine"
        else:
            verdict = f"DIFFERS: {r['valid']:,} valid, {r['rejected']:,} rejected"
            same = False
        print(
            f"{name:<12}{r['seconds']:>8.2f}{r['seconds'] / base['seconds']:>9.2f}"
            f"{r['cpu']:>8.2f}{r['cpu'] / base['cpu']:>9.2f}"
            f"{r['peak_mb']:>9.0f}{r['peak_mb'] / base['peak_mb']:>9.2f}  {verdict}"
        )
    if "polars" in results and "error" not in results["polars"]:
        p = results["polars"]
        print(
            f"engine vs whole-frame polars: {engine['seconds'] / p['seconds']:.2f}x wall, "
            f"{engine['cpu'] / p['cpu']:.2f}x CPU; engine peak vs plain read: "
            f"{engine['peak_mb'] / base['peak_mb']:.2f}x"
        )
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="a subset of variants")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    names = list(VARIANTS)
    if args.only:
        names = ["parse", "engine", *[n for n in args.only if n not in ("parse", "engine")]]
    ok = True
    for rows in args.rows:
        path = OUT / f"orders_{rows}.csv"
        if not path.exists():
            print(f"generating {path.relative_to(ROOT)} ({rows:,} rows)...", flush=True)
            generate(path, rows)
        results = measure(path, names, args.repeat)
        ok = report(rows, path.stat().st_size / 1e6, results, args.repeat) and ok
    print("\nwhat each library could not state with its built-in checks:")
    for name, gap in GAPS.items():
        if name in names:
            print(f"  {name}: {gap}")
    if not ok:
        sys.exit("a variant's outcome differs from the engine's (see DIFFERS above)")


if __name__ == "__main__":
    main()
