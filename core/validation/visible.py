"""Text from an uploaded file, made safe to show a person: nothing in it acts, all of it shows.

Keys, values and errors come from people outside the team. Shown as they are, a newline breaks
an email header or a table row, an escape sequence recolours a terminal, and U+202E (right-to-
left override) turns ``invoice_exe.csv`` around on screen. ``visible`` replaces every character
that would act instead of showing with an escape a person can read and report: ``\\n``,
``\\r``, ``\\t``, ``\\xNN`` for other ASCII controls, ``\\uNNNN`` for C1 controls and invisible
format characters (bidi controls, zero-width characters, line and paragraph separators, BOM).
They are also the escapes of a shell's ``$'...'`` word (the email's fetch command uses them).
Everything else is kept, emoji and other scripts included. Markup (``<script>``, ``[red]``) is
each surface's own escaping: ``html.escape`` in the email, ``rich.text.Text`` in the CLI.
"""

from __future__ import annotations

import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0 controls, DEL and C1 controls; bidi embeddings, overrides and isolates; zero-width and
# joiner characters; line/paragraph separators; the BOM / zero-width no-break space.
_ACTING = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    # \xNN only for ASCII: in a shell's $'...' word it is a byte, and C1 controls are not
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def visible(value: str | None) -> str:
    """``value`` with every acting character escaped (``None`` is the empty string)."""
    if not value:
        return ""
    return _ACTING.sub(_escape, value)


def visible_line(value: str | None, limit: int | None = None) -> str:
    """``visible(value)`` on one line, cut to ``limit`` characters with an ellipsis."""
    shown = visible(value)
    if limit is not None and len(shown) > limit:
        return shown[: limit - 1] + "…"
    return shown
