"""The CLI's shared table layout: fits 80 columns in a terminal, plain lines in a pipe."""

from __future__ import annotations

import io

import click
import pytest
from rich.console import Console

from core.cli.tables import Column, by_prefix, emit_table, short_ids, styled_status

COLUMNS = (
    Column("Key", squeeze=True),
    Column("Outcome"),
    Column("Rows", "right"),
    Column("Reasons / error", squeeze=True, min_width=16),
    Column("Seconds", "right", optional=True),
)
ROWS = [
    [
        "incoming/a-rather-long-folder/orders-2026-12-04.csv",
        styled_status("PARTIAL"),
        "12",
        "Customer_Id.required ×4, Order_Date.required ×2, Order_Status.allowed ×1\nsecond",
        "0.31",
    ]
]


def test_a_terminal_table_fits_80_columns_on_one_line_per_row() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    emit_table("Outcomes", COLUMNS, ROWS, console=console)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # title, header, one row: nothing wrapped
    assert all(len(line) <= 80 for line in lines)
    assert "partly accepted" in lines[2]  # the word, whole
    assert "…" in lines[2]  # the long key and reasons were cut


def test_a_pipe_gets_tab_separated_lines_with_nothing_cut(capsys) -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False)
    emit_table("Outcomes", COLUMNS, ROWS, console=console)
    printed = capsys.readouterr().out
    assert not printed.startswith("\n")
    assert printed.splitlines() == [
        "incoming/a-rather-long-folder/orders-2026-12-04.csv\tPARTIAL\t12\t"
        "Customer_Id.required ×4, Order_Date.required ×2, Order_Status.allowed ×1\\nsecond\t0.31"
    ]


def test_ids_are_cut_to_a_unique_prefix() -> None:
    ids = ["2799bc55-1111", "2799bc55-2222", "83aa0000-0000"]
    assert short_ids(ids) == {
        "2799bc55-1111": "2799bc55-1",
        "2799bc55-2222": "2799bc55-2",
        "83aa0000-0000": "83aa0000",
    }


def test_a_prefix_names_one_id_or_fails_in_one_line_naming_the_candidates() -> None:
    ids = ["2799bc55-1111", "2799bc55-2222", "83aa0000-0000"]
    assert by_prefix("83", ids, "message") == "83aa0000-0000"
    assert by_prefix("2799bc55-2222", ids, "message") == "2799bc55-2222"
    with pytest.raises(click.ClickException) as ambiguous:
        by_prefix("2799", ids, "message")
    assert ambiguous.value.message == (
        "2799 matches 2 messages (2799bc55-1, 2799bc55-2): give more of the id"
    )
    with pytest.raises(click.ClickException) as missing:
        by_prefix("ffff", ids, "message")
    assert missing.value.message == "no message starts with ffff"
