"""How long notify takes to build its email for a full batch, against a bare MIME baseline.

Batches of 50 file notices (the notify queue's batch size), rejects CSVs held in memory:

- *attached*: 50 CSVs of 100 KB, all attached (about 7 MB of message);
- *over-cap*: 50 CSVs of 150 KB: base64 takes them past 10 MB, so the largest become links;
- *huge*: the over-cap batch plus one 200 MB CSV, which must become a link without being read.

Baseline, measured in the same run: an ``EmailMessage`` with the same attachments and no
bodies, serialised once. The ratio says what orderpipe's bodies, size planning and final size
check cost on top of what any email with these attachments costs.

    .venv/bin/python bench/notify_bench.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP

from core.pipeline.email_report import SES_MAX_MESSAGE_BYTES, compose
from core.pipeline.notice import FileNotice, SampleRow
from core.validation.schema import default_schema

BUCKET = "orderpipe-bench-orders"


class Store:
    """Sizes for every object; bodies made on demand, so a linked 200 MB CSV costs nothing."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.read_bytes = 0

    def size(self, bucket: str, key: str) -> int | None:
        return self.sizes.get(key)

    def read(self, bucket: str, key: str) -> bytes:
        self.read_bytes += self.sizes[key]
        return _csv(self.sizes[key])

    def presign(self, bucket: str, key: str, expires_s: int) -> str:
        return f"https://{bucket}.s3.amazonaws.com/{key}?X-Amz-Expires={expires_s}&X-Amz-Sig=x"


def _csv(size: int) -> bytes:
    row = b"123,Ord0000123,Cust0042,31/02/24,Completed,12.50,Order_Date.format\n"
    return (row * (size // len(row) + 1))[:size]


def _notice(i: int) -> FileNotice:
    key = f"incoming/batch/orders-{i:03d}.csv"
    return FileNotice(
        file_id=f"{BUCKET}/{key}#etag:{i}",
        bucket=BUCKET,
        key=key,
        version=f"etag:{i}",
        status="PARTIAL",
        rows=10_000,
        valid=8_000,
        invalid=2_000,
        reasons={"Order_Date.format": 1_500, "Order_Total.range": 500},
        rejects_key=f"rejects/{key}.csv",
        sample=[
            SampleRow(
                n,
                {
                    "Order_Id": f"Ord{n}",
                    "Customer_Id": "Cust42",
                    "Order_Date": "31/02/24",
                    "Order_Status": "Completed",
                    "Order_Total": "12.50",
                },
                ["Order_Date.format"],
            )
            for n in range(2, 22)
        ],
        finished_at="2026-11-25T09:00:00.000Z",
    )


def _baseline(store: Store, notices: list[FileNotice], attached: list[str]) -> int:
    message = EmailMessage(policy=SMTP)
    message["Subject"] = "rejects"
    message.set_content("see attachments")
    for n in notices:
        if n.rejects_key in attached:
            body = store.read(n.bucket, n.rejects_key)
            message.add_attachment(body, maintype="text", subtype="csv", filename=n.key)
    return len(message.as_bytes())


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    schema = default_schema()
    notices = [_notice(i) for i in range(50)]
    cases = {
        "attached": {n.rejects_key or "": 100_000 for n in notices},
        "over-cap": {n.rejects_key or "": 150_000 for n in notices},
        "huge": {n.rejects_key or "": 150_000 for n in notices},
    }
    big = _notice(50)
    cases["huge"][big.rejects_key or ""] = 200 * 1024 * 1024
    print(
        f"{'case':<10} {'files':>5} {'attached':>8} {'linked':>6} {'MB':>6} "
        f"{'compose s':>9} {'baseline s':>10} {'ratio':>6} {'read MB':>7}"
    )
    for name, sizes in cases.items():
        batch = notices + ([big] if name == "huge" else [])
        store = Store(sizes)
        result = compose(
            batch,
            store,
            sender="orders@orderpipe.local",
            recipients=["ops@orderpipe.local"],
            schema=schema,
        )
        assert len(result.data) < SES_MAX_MESSAGE_BYTES
        read_mb = store.read_bytes / 1e6

        def run(batch: list[FileNotice] = batch, store: Store = store) -> object:
            return compose(
                batch,
                store,
                sender="orders@orderpipe.local",
                recipients=["ops@orderpipe.local"],
                schema=schema,
            )

        def base(
            batch: list[FileNotice] = batch,
            store: Store = store,
            attached: list[str] = result.attached,
        ) -> object:
            return _baseline(store, batch, attached)

        t_compose = _best(run, args.repeat)
        t_base = _best(base, args.repeat)
        print(
            f"{name:<10} {len(batch):>5} {len(result.attached):>8} {len(result.linked):>6} "
            f"{len(result.data) / 1e6:>6.2f} {t_compose:>9.3f} {t_base:>10.3f} "
            f"{t_compose / t_base:>6.2f} {read_mb:>7.1f}"
        )


if __name__ == "__main__":
    main()
