"""Inputs as a random-access buffer, with a path when one exists, in bounded memory.

A path is memory-mapped (the page cache holds it, not the heap); a stream is spooled to a
temporary file first, counting bytes against the size limit as it goes; bytes are used as
they are. gzip is inflated into a temporary file the same way, stopping at the limit, so a
small file that expands to gigabytes costs at most the limit in disk and time.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from core.validation.limits import Limits, human_bytes
from core.validation.readers.errors import FileRejected
from core.validation.readers.text_buffer import Buffer

_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Loaded:
    buf: Buffer
    # A file holding exactly ``buf`` (for readers that want a path), None for in-memory bytes.
    path: Path | None

    def data_or_path(self) -> bytes | Path:
        return self.path if self.path is not None else bytes(self.buf[:])


class Mapped:
    """An mmap with ``count`` (mmap lacks it before Python 3.13), counted in bounded blocks."""

    def __init__(self, mapped: mmap.mmap) -> None:
        self._m = mapped
        self.find = mapped.find
        self.rfind = mapped.rfind

    def __len__(self) -> int:
        return len(self._m)

    def __getitem__(self, index: slice, /) -> bytes:
        return self._m[index]

    def release(self, start: int, end: int) -> None:
        """Let go of the pages of [start, end): read again from the page cache if touched.

        The mapping is read-only and file-backed, so this only keeps the process's resident
        set to the part being worked on instead of the whole file.
        """
        lo = start - start % mmap.PAGESIZE
        if end > lo:
            self._m.madvise(mmap.MADV_DONTNEED, lo, min(end, len(self._m)) - lo)

    def count(self, sub: bytes, start: int = 0, end: int | None = None, /) -> int:
        end = len(self._m) if end is None else min(end, len(self._m))
        total = 0
        for lo in range(start, end, _BLOCK):
            hi = min(end, lo + _BLOCK)
            # reach len(sub) - 1 bytes past the cut so a match across it is counted once
            total += self._m[lo : min(end, hi + len(sub) - 1)].count(sub)
        return total


def release(buf: Buffer, start: int, end: int) -> None:
    if isinstance(buf, Mapped):
        buf.release(start, end)


def check_size(size: int, limits: Limits) -> None:
    if size > limits.max_bytes:
        raise FileRejected(f"the file is over the {human_bytes(limits.max_bytes)} limit")


@contextlib.contextmanager
def load(source: bytes | BinaryIO | os.PathLike[str] | str, limits: Limits) -> Iterator[Loaded]:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        check_size(len(data), limits)
        yield Loaded(data, None)
        return
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            check_size(path.stat().st_size, limits)
            handle = path.open("rb")
        except OSError as exc:
            raise FileRejected(f"cannot open the file: {exc.strerror or exc}") from None
        with handle, _mapped(handle) as buf:
            yield Loaded(buf, path)
        return
    with spooled(lambda out: _copy_stream(source, out, limits)) as loaded:
        yield loaded


def _copy_stream(source: BinaryIO, out: BinaryIO, limits: Limits) -> None:
    total = 0
    while block := source.read(_BLOCK):
        total += len(block)
        check_size(total, limits)
        out.write(block)


@contextlib.contextmanager
def spooled(write: Callable[[BinaryIO], None]) -> Iterator[Loaded]:
    """What ``write`` produces, in a temporary file mapped back for reading."""
    with tempfile.NamedTemporaryFile(prefix="orderpipe-") as tmp:
        handle = cast(BinaryIO, tmp)
        write(handle)
        handle.flush()
        with _mapped(handle) as buf:
            yield Loaded(buf, Path(tmp.name))


@contextlib.contextmanager
def _mapped(handle: BinaryIO) -> Iterator[Buffer]:
    if os.fstat(handle.fileno()).st_size == 0:
        yield b""  # mmap refuses empty files
        return
    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        yield Mapped(mapped)


def gunzip(buf: Buffer, out: BinaryIO, limits: Limits) -> None:
    """Inflate every gzip member of ``buf`` into ``out``, refusing to pass the limit."""
    limit = limits.max_decompressed_bytes
    total = 0
    inflater = zlib.decompressobj(wbits=31)
    pos, size = 0, len(buf)
    try:
        while pos < size:
            block = buf[pos : pos + _BLOCK]
            pos += len(block)
            while block:
                # max_length bounds each step's output, so a bomb never lands in memory whole
                piece = inflater.decompress(block, _BLOCK)
                total += len(piece)
                if total > limit:
                    raise FileRejected(
                        f"the gzip file expands beyond the {human_bytes(limit)} limit"
                    )
                out.write(piece)
                block = inflater.unconsumed_tail
                if inflater.eof:
                    rest = inflater.unused_data
                    inflater = zlib.decompressobj(wbits=31)
                    block = rest.lstrip(b"\x00")  # padding after a member is allowed
                    if not block and pos >= size:
                        return
        if not inflater.eof:
            raise FileRejected("corrupt gzip: the file ends in the middle of compressed data")
    except zlib.error as exc:
        raise FileRejected(f"corrupt gzip: {exc}") from None
