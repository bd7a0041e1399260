"""What the commands' tables share: one layout that fits a terminal, plain lines in a pipe.

In a terminal a table fits its width (80 columns included): optional columns go first, then
keys and texts are cut to one line ending in ``…`` (a ``show``/``status KEY`` view prints them
whole). In a pipe there is no decoration at all: one line per row, fields separated by tabs,
nothing cut, statuses as the ledger's codes (SUCCEEDED, PARTIAL, REJECTED), the way
``aws --output text`` prints; ``--json`` is the format for scripts that need names.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from core.validation.verdict import word
from core.validation.visible import visible

Justify = Literal["left", "right"]

STATUS_STYLE = {
    "SUCCEEDED": "green",
    "PARTIAL": "yellow",
    "REJECTED": "red",
    "FAILED": "red bold",
    "PROCESSING": "cyan",
    "PENDING": "dim",
}
SHORT_ID_MIN = 8  # characters an id keeps at least when cut to a unique prefix


@dataclass(frozen=True)
class Column:
    name: str
    justify: Justify = "left"
    squeeze: bool = False  # may be cut with … to fit the terminal (keys, errors)
    min_width: int = 12  # a squeezed column keeps at least this many characters
    optional: bool = False  # left out when the terminal is too narrow for it


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def table_console() -> Console:
    """Stdout for tables and notes: the terminal's width (COLUMNS honoured)."""
    return Console(highlight=False)


def emit_table(
    title: str,
    columns: Sequence[Column],
    rows: Iterable[Sequence[str | Text]],
    *,
    console: Console | None = None,
) -> None:
    """A fitted table in a terminal; tab-separated lines in a pipe."""
    rows = list(rows)
    if not (console.is_terminal if console is not None else stdout_is_terminal()):
        for row in rows:
            click.echo("\t".join(_plain(cell) for cell in row))
        return
    console = console or table_console()
    console.print(fitted_table(title, columns, rows, console.width))


def fitted_table(
    title: str, columns: Sequence[Column], rows: Sequence[Sequence[str | Text]], width: int
) -> Table:
    """A rich table of ``width`` characters at most, one line per row."""
    # Plain Text, never markup: values come from files and messages people wrote.
    texts = [[c if isinstance(c, Text) else cell(c) for c in row] for row in rows]
    keep = _fit(columns, texts, width)
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    for index in keep:
        column, size = columns[index], keep[index]
        table.add_column(
            column.name, justify=column.justify, no_wrap=True, overflow="ellipsis", width=size
        )
    for row in texts:
        table.add_row(*(row[i] for i in keep))
    return table


GAP = 2  # a space of padding on each side between two columns


def _fit(columns: Sequence[Column], rows: list[list[Text]], total: int) -> dict[int, int]:
    """Column index → width: natural widths, optional columns dropped and squeezed ones cut
    until the table fits ``total`` characters."""
    natural = [
        max([len(c.name), *(rows[r][i].cell_len for r in range(len(rows)))])
        for i, c in enumerate(columns)
    ]
    keep = list(range(len(columns)))

    def needed() -> int:
        return sum(natural[i] for i in keep) + GAP * (len(keep) - 1)

    # Optional columns go first (rightmost first), before anything is cut.
    for i in reversed(range(len(columns))):
        if needed() <= total:
            break
        if columns[i].optional:
            keep.remove(i)
    widths = {i: natural[i] for i in keep}
    over = sum(widths.values()) + GAP * (len(keep) - 1) - total
    squeezable = [i for i in keep if columns[i].squeeze]
    while over > 0 and squeezable:
        # Cut the widest squeezable column one character at a time, down to its floor.
        widest = max(squeezable, key=lambda i: widths[i])
        if widths[widest] <= columns[widest].min_width:
            squeezable.remove(widest)
            continue
        widths[widest] -= 1
        over -= 1
    return widths


def note(text: str) -> None:
    """A line for people after a table; only in a terminal (a pipe gets the rows alone)."""
    if stdout_is_terminal():
        click.echo(text)


def _plain(cell: str | Text) -> str:
    if isinstance(cell, StatusText):
        return cell.code  # scripts read the ledger's code; people read the word
    return visible(cell.plain if isinstance(cell, Text) else cell)


class StatusText(Text):
    """A status cell: the word in a terminal, the code (SUCCEEDED…) in plain lines."""

    def __init__(self, code: str) -> None:
        super().__init__(word(code), style=STATUS_STYLE.get(code.upper(), ""))
        self.code = code.upper()


def styled_status(status: str) -> Text:
    """The person's word for a status, coloured in a terminal."""
    return StatusText(str(status))


def reasons_text(reasons: Mapping[str, int] | None) -> str:
    """``Order_Date.format ×3, Order_Total.range ×1``: codes in order, each with its rows."""
    return ", ".join(f"{code} ×{n}" for code, n in sorted((reasons or {}).items()))


def cell(value: str | None) -> Text:
    """A value from outside (a key, a file's value, an error, a message) as a table cell: its
    markup (``[red]``) stays text and its control and bidi characters show as escapes."""
    return Text(visible(value))


def one_line(text: str | None) -> str:
    """A multi-line error as one line (the table cuts it; ``show`` prints it whole)."""
    return " ".join((text or "").split())


def short_ids(ids: Sequence[str], minimum: int = SHORT_ID_MIN) -> dict[str, str]:
    """Each id cut to the shortest prefix (at least ``minimum``) no other id shares."""
    out: dict[str, str] = {}
    for this in ids:
        length = min(minimum, len(this))
        while length < len(this) and any(
            other != this and other.startswith(this[:length]) for other in ids
        ):
            length += 1
        out[this] = this[:length]
    return out


def by_prefix(prefix: str, ids: Iterable[str], what: str, where: str = "") -> str:
    """The one id starting with ``prefix``; else one line naming the candidates."""
    ids = list(dict.fromkeys(ids))
    if prefix in ids:
        return prefix
    matches = [i for i in ids if i.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    place = f" {where}" if where else ""
    if not matches:
        raise click.ClickException(f"no {what}{place} starts with {prefix}")
    shown = ", ".join(short_ids(matches).values())
    raise click.ClickException(
        f"{prefix} matches {len(matches)} {what}s{place} ({shown}): give more of the id"
    )
