"""Strings a hostile or careless uploader can put in a key, a value or a header, for testing
every surface a person reads (email HTML, text and Subject, CLI tables, console pages).

Each surface must show each string as text: escaped, visible, never acted on, never dropped.
``MUST_NOT_APPEAR`` holds, per string, raw fragments that would mean it acted (an unescaped tag,
a raw control character); ``MUST_APPEAR`` a fragment that proves it is still visible.
"""

from __future__ import annotations

from typing import NamedTuple


class Hostile(NamedTuple):
    name: str
    text: str
    # What a surface must show (after its escaping) for the string to count as visible.
    shown: str


HOSTILE: tuple[Hostile, ...] = (
    Hostile("script", "<script>alert(1)</script>", "alert(1)"),
    Hostile("img-onerror", '"><img src=x onerror=alert(1)>', "onerror=alert(1)"),
    Hostile("html-entity", "&lt;b&gt;bold&lt;/b&gt; &amp; &#x41;", "bold"),
    Hostile("quotes", 'O\'Brien "quoted" `tick`', "O'Brien"),
    Hostile("newline", "orders\nBcc: victim@example.com", "Bcc: victim@example.com"),
    Hostile("crlf", "a\r\nSubject: injected", "Subject: injected"),
    Hostile("cr-only", "line1\rline2", "line2"),
    Hostile("tab", "col\tcol", "col"),
    Hostile("nul", "nul\x00byte", "byte"),
    Hostile("escape-seq", "\x1b[31mred\x1b[0m \x1b]8;;http://evil.example\x07link", "red"),
    Hostile("bell-backspace", "bell\x07back\x08space", "space"),
    Hostile("c1-control", "c1\x85next\x9bcsi", "next"),
    Hostile("bidi-override", "invoice\u202ecod.exe", "cod.exe"),
    Hostile("bidi-isolate", "\u2067hidden\u2069 text", "hidden"),
    Hostile("zero-width", "Ord\u200b1\u200d", "Ord"),
    Hostile("line-separator", "a\u2028b\u2029c", "c"),
    Hostile("bom", "\ufeffOrd1", "Ord1"),
    Hostile("rich-markup", "[red]red[/red] [link=http://evil.example]x[/link] [/]", "[red]red"),
    Hostile("formula", '=HYPERLINK("http://evil.example","Click")', "HYPERLINK"),
    Hostile("emoji", "📦 order ✅ 👩‍👩‍👧", "📦 order"),
    Hostile("rtl-script", "طلب رقم ١٢٣", "طلب"),
    Hostile("combining", "Z̷̨͉a̸͖l̴g̵o̶", "a"),
    Hostile("very-long", "A" * 5000 + "END", "AAAA"),
    Hostile("path-traversal", "../../etc/passwd", "../../etc/passwd"),
    Hostile("percent", "100%25 %s %n {0} ${x}", "%s"),
    Hostile("backslashes", "C:\\orders\\new.csv \\n", "C:\\orders"),
)

# Characters that must never reach a reader raw: they act instead of showing.
ACTING_CHARS = "".join(chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]) + (
    "\u061c\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2066\u2067\u2068\u2069\ufeff"
)


def acting_in(text: str, allowed: str = "") -> list[str]:
    """The acting characters in ``text`` (those in ``allowed`` excepted, e.g. a layout's own
    newlines), so a test can say which one leaked."""
    return sorted({c for c in text if c in ACTING_CHARS and c not in allowed})
