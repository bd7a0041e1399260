"""Fault injection for whole processes, test-only: put this directory on ``PYTHONPATH``.

Python imports ``sitecustomize`` at start-up, so a process run with
``PYTHONPATH=tests/support/site ORDERPIPE_FAULTS="..."`` (and every child it starts, such as
the worker of ``orderpipe local``) installs that fault plan on every botocore session it
creates. A spec that cannot be read ends the process with one line and exit 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if os.environ.get("ORDERPIPE_FAULTS", "").strip():
    sys.path.append(str(Path(__file__).resolve().parents[3]))  # the checkout, for ``tests``
    from tests.support.faults import FaultSpecError, install_from_env

    try:
        install_from_env()
    except FaultSpecError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        sys.stderr.flush()
        os._exit(2)
