"""The old hourly job's validation, re-implemented step for step to measure what it cost.

The old job read every file with pandas (no header handling) and then, for each row:

- looked every cell up through ``df.iloc[row, col]`` and ``df.loc[row].iat[col]`` (each
  ``loc[row]`` builds a new row Series);
- on the row's first problem copied its five cells into the e-mail body as text, then added
  one sentence per problem (missing id, customer, date, status or total; date not a date;
  status not one of Pending, Completed, Inprogress);
- for a valid row, selected every row with the same Order_Id (a scan of the whole column) and
  appended the selection to the growing valid frame with ``pd.concat``; for an invalid row it
  did the same on the row's first non-empty column, into the invalid frame.

The column scan and the growing concat make the loop quadratic: about 632 s per 100k rows.
The old date check asked whether the cell was a date object, which a text read never gives;
here the text is parsed with the same day-first formats so valid rows are really valid. This
module is for the benchmark only; orderpipe never runs it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

STATUSES = {"Pending", "Completed", "Inprogress"}
_DATE_FORMATS = ("%d/%m/%y", "%d/%m/%Y", "%Y-%m-%d")
_MISSING = (
    "Order Id is not found",
    "Customer Id is not found",
    "Order Date is not found",
    "Order Status is not found",
    "Order Total is not found",
)


def _is_date(text: Any) -> bool:
    for fmt in _DATE_FORMATS:
        try:
            dt.datetime.strptime(str(text), fmt)
        except ValueError:
            continue
        return True
    return False


def _check_row(df: pd.DataFrame, body: list[str], row: int) -> bool:
    valid = True

    def problem(sentence: str) -> None:
        nonlocal valid
        if valid:
            body.append("\n\n")
            body.extend(str(df.loc[row].iat[col]) + "\t\t\t\t" for col in range(5))
            body.append("\n!! The errors in this data set are ...!!")
            valid = False
        body.append("\n" + sentence + " .")

    for col in (0, 1):
        if pd.isnull(df.iloc[row, col]):
            problem(_MISSING[col])
    if pd.isnull(df.iloc[row, 2]):
        problem(_MISSING[2])
    elif not _is_date(df.loc[row].iat[2]):
        problem("Order date format is not correct")
    if pd.isnull(df.iloc[row, 3]):
        problem(_MISSING[3])
    elif df.loc[row].iat[3] not in STATUSES:
        problem("Order Status is not valid")
    if pd.isnull(df.iloc[row, 4]):
        problem(_MISSING[4])
    return valid


def validate_like_the_old_job(path: Path) -> tuple[int, int]:
    """Rows kept as valid and as invalid, the way the old job split them."""
    df = pd.read_csv(path, header=None, dtype=str, usecols=range(5), on_bad_lines="skip")
    valid_df, invalid_df = pd.DataFrame(), pd.DataFrame()
    body: list[str] = []
    for row in range(1, len(df)):  # row 0 is the header
        if _check_row(df, body, row):
            entry = df.loc[df[0] == df.loc[row].iat[0]]
            valid_df = pd.concat([valid_df, entry], ignore_index=True)
        else:
            col = 0
            while pd.isnull(df.iloc[row, col]):
                col += 1
            entry = df.loc[df[col] == df.loc[row].iat[col]]
            invalid_df = pd.concat([invalid_df, entry], ignore_index=True)
    return len(valid_df), len(invalid_df)
