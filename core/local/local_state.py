"""Where a running ``orderpipe local`` leaves its address so other commands find it.

The file holds the emulator endpoint and the stack's settings as environment variables.
``ORDERPIPE_STATE_DIR`` moves it (tests give each local stack its own).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from core.aws.settings import Settings

ENV_STATE_DIR = "ORDERPIPE_STATE_DIR"


def state_dir() -> Path:
    return Path(os.environ.get(ENV_STATE_DIR) or Path.home() / ".orderpipe")


def state_file() -> Path:
    return state_dir() / "local.json"


@dataclass(frozen=True)
class LocalState:
    endpoint: str
    settings: Settings
    pid: int

    def save(self) -> Path:
        path = state_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"endpoint": self.endpoint, "env": self.settings.to_env(), "pid": self.pid})
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls) -> LocalState | None:
        """The running local stack, or None when there is none (or it has died)."""
        path = state_file()
        try:
            raw = json.loads(path.read_text())
            pid = int(raw["pid"])
            os.kill(pid, 0)  # signal 0: is the process still there?
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(endpoint=raw["endpoint"], settings=Settings.from_env(raw["env"]), pid=pid)

    @staticmethod
    def clear() -> None:
        state_file().unlink(missing_ok=True)
