"""Is a buffer text, which encoding, which line ends — decided without a pass in Python.

UTF-16 with a byte-order mark (Excel's "Unicode Text" export, UTF-16 CSVs, little- or
big-endian) is transcoded to UTF-8 into a temporary file first, block by block, so memory stays
bounded and every line keeps its number. UTF-8 (with or without BOM) with LF or CRLF line ends
goes to polars untouched. Text that is
not valid UTF-8 is Windows-1252. The decision is made per chunk, just before parsing: an ASCII
chunk (``isascii`` runs at memory speed) reads the same either way; the first chunk that is not
valid UTF-8 switches this and every later chunk to Windows-1252, so a file pays for transcoding
only when it needs it. Old Mac CR-only line ends are rewritten to LF into a temporary file.
"""

from __future__ import annotations

import codecs
from typing import BinaryIO

from core.validation.limits import Limits, human_bytes
from core.validation.readers.errors import FileRejected
from core.validation.readers.source import release
from core.validation.readers.text_buffer import Buffer

_BLOCK = 8 * 1024 * 1024
_SCAN_BLOCK = 64 * 1024 * 1024
_SNIFF = 4096
# Bytes that never appear in order text; a few are tolerated, many mean "binary".
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13))
_MAX_CONTROL_SHARE = 0.05


def check_is_text(buf: Buffer) -> None:
    """Reject buffers that are not text: any NUL byte, or a head full of control bytes."""
    if _contains(buf, b"\x00"):
        raise FileRejected("not a readable order file: looks binary (it contains NUL bytes)")
    head = buf[:_SNIFF]
    controls = len(head) - len(head.translate(None, _CONTROL))
    if head and controls / len(head) > _MAX_CONTROL_SHARE:
        raise FileRejected("not a readable order file: looks binary")


def _contains(buf: Buffer, byte: bytes) -> bool:
    """``byte in buf``, block by block, letting each scanned block's pages go."""
    for lo in range(0, len(buf), _SCAN_BLOCK):
        hi = min(len(buf), lo + _SCAN_BLOCK)
        found = buf.find(byte, lo, hi) != -1
        release(buf, lo, hi)
        if found:
            return True
    return False


def is_cr_only(buf: Buffer) -> bool:
    """Line ends are bare CR: no LF anywhere (found at once in ordinary files)."""
    return buf.find(b"\n") == -1 and buf.find(b"\r") != -1


def spool_cr_to_lf(buf: Buffer, out: BinaryIO) -> None:
    # 0x0D never occurs inside a multi-byte UTF-8 sequence, so bytes are safe to rewrite.
    for lo in range(0, len(buf), _BLOCK):
        out.write(buf[lo : lo + _BLOCK].replace(b"\r", b"\n"))


def _keep_undefined(exc: UnicodeError) -> tuple[str, int]:
    # Windows-1252 leaves five bytes undefined; keep them as the Latin-1 characters they name.
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(chr(b) for b in exc.object[exc.start : exc.end]), exc.end


codecs.register_error("orderpipe-cp1252", _keep_undefined)


def cp1252_to_utf8(chunk: bytes) -> bytes:
    return chunk.decode("cp1252", errors="orderpipe-cp1252").encode("utf-8")


class ChunkDecoder:
    """UTF-8 chunks pass through; from the first one that is not UTF-8 on, Windows-1252."""

    def __init__(self) -> None:
        self.utf8 = True

    def __call__(self, chunk: bytes) -> bytes:
        if self.utf8:
            if chunk.isascii() or _is_utf8(chunk):
                return chunk
            self.utf8 = False
        return cp1252_to_utf8(chunk)


def _is_utf8(chunk: bytes) -> bool:
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def utf16_to_utf8(buf: Buffer, out: BinaryIO, limits: Limits) -> None:
    """Write ``buf`` (UTF-16 starting with its BOM) to ``out`` as UTF-8, without the BOM.

    An incremental decoder carries a code unit or surrogate pair cut by a block boundary over
    to the next block. The UTF-8 text may be up to 1.5 times the upload (CJK text), so it is
    held to the same limit as an inflated gzip file.
    """
    decoder = codecs.getincrementaldecoder("utf-16")("strict")  # the BOM picks the byte order
    limit = limits.max_decompressed_bytes
    total = 0
    size = len(buf)
    for lo in range(0, size, _BLOCK):
        block = buf[lo : lo + _BLOCK]
        try:
            text = decoder.decode(block, final=lo + len(block) >= size)
        except UnicodeDecodeError as exc:
            at = lo + exc.start
            raise FileRejected(
                f"not readable as UTF-16: {exc.reason} at byte {at:,} (line {_utf16_line(buf, at)})"
            ) from None
        data = text.encode("utf-8")
        total += len(data)
        if total > limit:
            raise FileRejected(f"the UTF-16 text is over the {human_bytes(limit)} limit as UTF-8")
        out.write(data)
        release(buf, lo, lo + len(block))


def _utf16_line(buf: Buffer, at: int) -> int:
    """The 1-based line holding byte ``at`` of a UTF-16 buffer, counted block by block."""
    decoder = codecs.getincrementaldecoder("utf-16")("replace")
    lines = 1
    for lo in range(0, at, _BLOCK):
        hi = min(at, lo + _BLOCK)
        lines += decoder.decode(buf[lo:hi], final=hi >= at).count("\n")
    return lines
