"""Is a buffer text, which encoding, which line ends: one C-speed pass in bounded blocks.

UTF-8 (with or without BOM) and LF/CRLF text goes to polars untouched. Anything else (not valid
UTF-8, so Windows-1252; or old Mac CR-only line ends) is transcoded block by block into a
temporary UTF-8 file, never held whole in memory.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import BinaryIO

from core.readers.text import Buffer

_BLOCK = 8 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
# Bytes that never appear in order text; a few are tolerated, many mean "binary".
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 13))
# Windows-1252 leaves five bytes undefined; keep them as the Latin-1 characters they would be.
_CP1252_HOLES = {0x81, 0x8D, 0x8F, 0x90, 0x9D}


@dataclass(frozen=True)
class TextProfile:
    encoding: str  # "utf-8" | "cp1252"
    has_nul: bool
    cr_only: bool  # line ends are bare CR (no LF anywhere)
    control_ratio: float  # share of control bytes in the first block

    @property
    def needs_transcoding(self) -> bool:
        return self.encoding != "utf-8" or self.cr_only


def profile_text(buf: Buffer) -> TextProfile:
    size = len(buf)
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8 = True
    has_nul = has_lf = has_cr = False
    control_ratio = 0.0
    for lo in range(0, size, _BLOCK):
        block = buf[lo : lo + _BLOCK]
        if lo == 0:
            control_ratio = _control_ratio(block[:4096])
        has_nul = has_nul or b"\x00" in block
        has_lf = has_lf or b"\n" in block
        has_cr = has_cr or b"\r" in block
        if utf8 and not block.isascii():
            try:
                decoder.decode(block, final=lo + _BLOCK >= size)
            except UnicodeDecodeError:
                utf8 = False
        if has_nul:
            break
    return TextProfile(
        encoding="utf-8" if utf8 else "cp1252",
        has_nul=has_nul,
        cr_only=has_cr and not has_lf,
        control_ratio=control_ratio,
    )


def _control_ratio(head: bytes) -> float:
    if not head:
        return 0.0
    return (len(head) - len(head.translate(None, _CONTROL))) / len(head)


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return "".join(chr(b) for b in bad), exc.end


codecs.register_error("orderpipe-cp1252", _cp1252_fallback)


def transcode(buf: Buffer, profile: TextProfile, out: BinaryIO) -> None:
    decoder = codecs.getincrementaldecoder(profile.encoding)(
        errors="orderpipe-cp1252" if profile.encoding == "cp1252" else "strict"
    )
    size = len(buf)
    start = len(_BOM) if profile.encoding == "utf-8" and buf[:3] == _BOM else 0
    for lo in range(start, size, _BLOCK):
        text = decoder.decode(buf[lo : lo + _BLOCK], final=lo + _BLOCK >= size)
        if profile.cr_only:
            text = text.replace("\r", "\n")
        out.write(text.encode("utf-8"))
