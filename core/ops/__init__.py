"""Operations: what an operator does to a running stack.

Reconcile (bucket against ledger), replay, dead-letter review and redrive, alerts, upload and
the small AWS adapters they share. The Glue job ships ``reconcile`` and its adapters, so those
stay Python 3.9-compatible. It may import ``core.pipeline``, ``core.validation`` and
``core.aws``; never the CLI, the local stack or release code.
"""
