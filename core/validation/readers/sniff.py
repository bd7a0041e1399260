"""Which reader a file needs: its first bytes decide, its name only breaks ties.

A name that promises a binary format the bytes do not have (``orders.xlsx`` holding text, a
truncated ``.parquet``) means a damaged upload, so it is rejected as corrupt rather than read
as text and reported as hundreds of bad rows.
"""

from __future__ import annotations

import enum
from pathlib import PurePosixPath

from core.validation.readers.errors import FileRejected


class Format(enum.Enum):
    TEXT = "delimited text"
    GZIP = "gzip"
    XLSX = "xlsx"
    PARQUET = "parquet"
    JSONL = "JSON Lines"
    UTF16 = "UTF-16 text"


_GZIP = b"\x1f\x8b"
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_PARQUET = b"PAR1"
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .xls / .doc
_OTHER_BINARY = {
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"7z\xbc\xaf": "a 7-Zip archive",
    b"Rar!": "a RAR archive",
    b"BZh": "a bzip2 archive",
    b"\xfd7zXZ\x00": "an xz archive",
    b"\x28\xb5\x2f\xfd": "a zstd archive",
}
_BY_SUFFIX = {
    ".gz": Format.GZIP,
    ".gzip": Format.GZIP,
    ".xlsx": Format.XLSX,
    ".xlsm": Format.XLSX,
    ".parquet": Format.PARQUET,
    ".pq": Format.PARQUET,
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
}
_UTF8_BOM = b"\xef\xbb\xbf"


def suffix_format(name: str) -> Format | None:
    suffixes = PurePosixPath(name.lower()).suffixes
    return _BY_SUFFIX.get(suffixes[-1]) if suffixes else None


def detect_format(head: bytes, name: str) -> Format:
    """The format of a file from its first bytes (at least 8 KB when the file has them)."""
    if head.startswith(_GZIP):
        return Format.GZIP
    if head.startswith(_ZIP):
        return Format.XLSX  # whether it really is a workbook is checked on opening
    if head.startswith(_PARQUET):
        return Format.PARQUET
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        # UTF-16 with a byte-order mark: Excel's "Unicode Text" export and UTF-16 CSVs.
        return Format.UTF16
    if head.startswith(_OLE2):
        raise FileRejected(
            "not a readable order file: a legacy Excel (.xls) workbook; save it as .xlsx or CSV"
        )
    for magic, what in _OTHER_BINARY.items():
        if head.startswith(magic):
            raise FileRejected(f"not a readable order file: looks like {what}")
    claimed = suffix_format(name)
    if claimed in (Format.GZIP, Format.XLSX, Format.PARQUET):
        raise FileRejected(
            f"corrupt {claimed.value}: the file is named {PurePosixPath(name).name!r}"
            f" but does not start like {claimed.value} data"
        )
    if claimed is Format.JSONL or _looks_like_json_lines(head):
        return Format.JSONL
    return Format.TEXT


def _looks_like_json_lines(head: bytes) -> bool:
    text = head.removeprefix(_UTF8_BOM).lstrip()
    return text.startswith(b"{")
