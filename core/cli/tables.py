"""What the commands' tables share: the console, column layout, status colours, reasons."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from core.validation.visible import visible

Justify = Literal["left", "right"]

# The columns every outcome table shows, between its own leading and trailing ones.
OUTCOME_COLUMNS: tuple[tuple[str, Justify], ...] = (
    ("Status", "left"),
    ("Rows", "right"),
    ("Valid", "right"),
    ("Invalid", "right"),
    ("Reasons / error", "left"),
)

STATUS_STYLE = {
    "SUCCEEDED": "green",
    "PARTIAL": "yellow",
    "REJECTED": "red",
    "FAILED": "red bold",
    "PROCESSING": "cyan",
    "PENDING": "dim",
}


def table_console() -> Console:
    """Stdout for tables: a terminal's width, or wide enough to stay readable in a pipe."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=160)
    return console


def titled_table(title: str, columns: Sequence[tuple[str, Justify]]) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in columns:
        table.add_column(name, justify=justify)
    return table


def cell(value: str | None) -> Text:
    """A value from outside (a key, a file's value, an error, a message) as a table cell: its
    markup (``[red]``) stays text and its control and bidi characters show as escapes."""
    return Text(visible(value))


def styled_status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, '')}]{status}[/]"


def reasons_text(reasons: Mapping[str, int] | None) -> str:
    """``Order_Date.format ×3, Order_Total.range ×1``: codes in order, each with its rows."""
    return ", ".join(f"{code} ×{n}" for code, n in sorted((reasons or {}).items()))
