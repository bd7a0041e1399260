"""``iter_table``: from bytes, a binary stream or a path to bounded text frames."""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import polars as pl

from core.limits import Limits, human_bytes
from core.readers.encoding import check_is_text, is_cr_only, spool_cr_to_lf
from core.readers.errors import FileRejected
from core.readers.text import FIELD_COUNT_OK, LINE, iter_text
from core.readers.text_buffer import Buffer

__all__ = ["FIELD_COUNT_OK", "LINE", "iter_table"]

Source = bytes | BinaryIO | os.PathLike[str] | str
_COPY_BLOCK = 8 * 1024 * 1024


def iter_table(
    source: bytes | BinaryIO | os.PathLike[str],
    name: str,
    columns: Sequence[str],
    limits: Limits | None = None,
    chunk_rows: int = 256_000,
) -> Iterator[pl.DataFrame]:
    """Yield the rows of an order file in frames of about ``chunk_rows`` rows.

    Raises FileRejected (possibly after some frames, e.g. for the row limit) when the file
    cannot be read as orders.
    """
    limits = limits or Limits()
    if not columns:
        raise ValueError("iter_table needs at least one column")
    with _buffer(source, limits) as buf:
        rows = 0
        for frame in _iter_buffer(buf, name, columns, limits, chunk_rows):
            rows += frame.height
            if rows > limits.max_rows:
                raise FileRejected(f"the file has more than {limits.max_rows:,} rows")
            yield frame
        if rows == 0:
            raise FileRejected("no data rows")


def _iter_buffer(
    buf: Buffer, name: str, columns: Sequence[str], limits: Limits, chunk_rows: int
) -> Iterator[pl.DataFrame]:
    if len(buf) == 0:
        raise FileRejected("the file is empty")
    check_is_text(buf)
    if is_cr_only(buf):
        with _spooled(buf, spool_cr_to_lf) as text:
            yield from iter_text(text, columns, limits, chunk_rows)
    else:
        yield from iter_text(buf, columns, limits, chunk_rows)


@contextlib.contextmanager
def _spooled(buf: Buffer, convert: Callable[[Buffer, BinaryIO], None]) -> Iterator[Buffer]:
    """A converted copy in a temporary file: bounded memory, whatever the size."""
    with tempfile.TemporaryFile(prefix="orderpipe-") as tmp:
        convert(buf, tmp)
        tmp.flush()
        if tmp.tell() == 0:
            yield b""
            return
        with mmap.mmap(tmp.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield _Mapped(mapped)


@contextlib.contextmanager
def _buffer(source: Source, limits: Limits) -> Iterator[Buffer]:
    """The source as something sliceable without holding a second copy in memory."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        _check_size(len(data), limits)
        yield data
        return
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            size = path.stat().st_size
            _check_size(size, limits)
            if size == 0:
                yield b""
                return
            handle = path.open("rb")
        except OSError as exc:
            raise FileRejected(f"cannot open the file: {exc.strerror or exc}") from None
        with handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield _Mapped(mapped)
        return
    with tempfile.TemporaryFile(prefix="orderpipe-src-") as tmp:
        total = 0
        while block := source.read(_COPY_BLOCK):
            total += len(block)
            _check_size(total, limits)
            tmp.write(block)
        tmp.flush()
        if total == 0:
            yield b""
            return
        with mmap.mmap(tmp.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield _Mapped(mapped)


class _Mapped:
    """An mmap with ``count`` (mmap lacks it before Python 3.13), counted in bounded blocks."""

    def __init__(self, mapped: mmap.mmap) -> None:
        self._m = mapped
        self.find = mapped.find
        self.rfind = mapped.rfind

    def __len__(self) -> int:
        return len(self._m)

    def __getitem__(self, index: slice, /) -> bytes:
        return self._m[index]

    def count(self, sub: bytes, start: int = 0, end: int | None = None, /) -> int:
        end = len(self._m) if end is None else min(end, len(self._m))
        total = 0
        for lo in range(start, end, _COPY_BLOCK):
            hi = min(end, lo + _COPY_BLOCK)
            # reach len(sub) - 1 bytes past the cut so a match across it is counted once
            total += self._m[lo : min(end, hi + len(sub) - 1)].count(sub)
        return total


def _check_size(size: int, limits: Limits) -> None:
    if size > limits.max_bytes:
        raise FileRejected(f"the file is over the {human_bytes(limits.max_bytes)} limit")
