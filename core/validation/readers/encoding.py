"""Is a buffer text, which encoding, which line ends — decided without a pass in Python.

UTF-8 (with or without BOM) with LF or CRLF line ends goes to polars untouched. Text that is
not valid UTF-8 is Windows-1252. The decision is made per chunk, just before parsing: an ASCII
chunk (``isascii`` runs at memory speed) reads the same either way; the first chunk that is not
valid UTF-8 switches this and every later chunk to Windows-1252, so a file pays for transcoding
only when it needs it. Old Mac CR-only line ends are rewritten to LF into a temporary file.
"""

from __future__ import annotations

import codecs
from typing import BinaryIO

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
