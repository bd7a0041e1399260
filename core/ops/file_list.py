"""The files a command was given: paths as named, a folder for the visible files inside it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given; a directory stands for the visible files directly inside it."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")
            )
        else:
            files.append(path)
    return files
