"""Children of ``orderpipe local`` and ``demo`` end when their parent does, however it ends.

Two mechanisms, because either alone can miss: Linux's ``PR_SET_PDEATHSIG`` makes the kernel
signal the child the moment its parent dies (even by SIGKILL), and a polling thread compares
the parent pid with the one we were started by, for other systems and for a parent that died
before the child could ask the kernel. The watch never writes anything before it acts: a dead
parent's pipe raises BrokenPipeError, and a watch that dies on it leaves an orphan behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_EVERY_S = 0.5


def parent_alive(parent_pid: int) -> bool:
    """Whether ``parent_pid`` is still our parent (a reparented child sees another ppid)."""
    return os.getppid() == parent_pid


def signal_on_parent_death(signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``signum`` when our parent dies; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def watch_parent(
    parent_pid: int,
    on_gone: Callable[[], None],
    *,
    every_s: float = POLL_EVERY_S,
    stop: threading.Event | None = None,
) -> threading.Thread:
    """Call ``on_gone`` once, from a daemon thread, when ``parent_pid`` stops being our parent.

    ``on_gone`` must act first and talk after; anything it raises is swallowed so the thread
    itself can never be what keeps the child alive.
    """
    done = stop or threading.Event()

    def watch() -> None:
        while parent_alive(parent_pid):
            if done.wait(every_s):
                return
        with contextlib.suppress(Exception):
            on_gone()

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


def exit_soon(after_s: float, code: int = 1) -> threading.Thread:
    """Leave the process after ``after_s`` seconds whatever it is doing (a last resort)."""

    def leave() -> None:
        threading.Event().wait(after_s)
        os._exit(code)

    thread = threading.Thread(target=leave, name="exit-soon", daemon=True)
    thread.start()
    return thread
