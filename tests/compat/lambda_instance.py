"""One ingest "function instance" for the busy-file scenario: its own process, one message a batch.

On AWS the ingest function takes one message per invocation (``AWS_TIMINGS``) and Lambda runs
as many instances as there are messages, so two versions of one key are ingested at the same
time and one of them finds the key busy. In one process the handlers cannot run side by side
(Powertools' batch processor is a module-level object), so the scenario starts two of these.

Reads the stack from the environment (``Settings.from_env``, ``AWS_ENDPOINT_URL``,
``AWS_ENDPOINT_URL_DYNAMODB``), prints ``ready`` once it polls, logs each batch to stderr as the
local worker does, and stops after the batch in flight on SIGTERM or when the test that started
it is gone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

from core.aws.clients import Clients
from core.aws.settings import Settings
from core.local.worker import INGEST, Worker

READY = "ready"


def main() -> None:
    stop = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    parent = os.getppid()

    def watch_parent() -> None:  # a killed test run must not leave this polling forever
        while not stop.wait(1):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    worker = Worker(
        Clients(),
        Settings.from_env(),
        queues=(INGEST,),
        ingest_batch_size=1,
        wait_time_s=1,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(READY, flush=True)
    worker.run(stop)


if __name__ == "__main__":
    main()
