"""Resource limits for reading one order file.

Every limit exists so that a hostile or broken file ends as a clear rejection instead of an
out-of-memory kill or a time-out. The defaults fit a 1,769 MB Lambda: the largest file we accept
(512 MB) is read in bounded chunks, and nothing a file declares (a header width, a zip member's
size, a line length) can make the reader allocate more than a small multiple of these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    # The file as stored (compressed size for gzip/xlsx/parquet).
    max_bytes: int = 512 * MB
    # Data rows (header and blank lines not counted). The pipeline's default (what ingest can
    # write within its runs, docs/deploy.md), so `validate` accepts what the pipeline accepts.
    max_rows: int = 12_000_000
    # What a gzip file may expand to before we stop inflating it: no more text than a plain
    # file may hold.
    max_decompressed_bytes: int = 512 * MB
    # One physical line of delimited text; an order line is ~100 bytes.
    max_line_bytes: int = 1 * MB
    # Fields in the header (or the first row without one).
    max_columns: int = 1_000
    # One value; longer values reject the file rather than flow into DynamoDB (400 KB items).
    max_cell_bytes: int = 64 * 1024
    # Sum of the uncompressed sizes an xlsx claims for its members, and the sheet itself.
    max_xlsx_uncompressed: int = 256 * MB
    # Members of an xlsx zip; real workbooks have a few dozen.
    max_xlsx_members: int = 10_000

    def with_(self, **changes: int) -> Limits:
        return replace(self, **changes)


def human_bytes(n: int) -> str:
    """``536870912`` -> ``"512 MB"``: limits are quoted to people in rejection messages."""
    for unit, size in (("GB", 1024 * MB), ("MB", MB), ("KB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"
