"""The local web console (``orderpipe console``): the ledger, files, dead letters, health.

Server-rendered pages over the same core functions the CLI calls; it adds no rule of its own.
It sits beside ``cli``: it may import ``bootstrap`` (where its services are built), ``ops``,
``pipeline``, ``validation`` and ``aws``, and only ``core/cli/console.py`` imports it.
"""
