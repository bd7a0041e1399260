"""The one exception readers raise for a file that cannot be read as orders."""

from __future__ import annotations


class FileRejected(Exception):
    """The file as a whole is refused; ``str(exc)`` is a sentence for the person who sent it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def is_native_panic(exc: BaseException) -> bool:
    """A Rust panic surfaced by a native reader (pyo3 ``PanicException``, a BaseException).

    Each native extension has its own class of that name, so it is recognised by name.
    """
    return type(exc).__name__ == "PanicException"
