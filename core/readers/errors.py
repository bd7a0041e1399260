"""The one exception readers raise for a file that cannot be read as orders."""

from __future__ import annotations


class FileRejected(Exception):
    """The file as a whole is refused; ``str(exc)`` is a sentence for the person who sent it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
