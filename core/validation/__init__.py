"""Validation: the order contract and the engine that judges files against it.

The schema (``schemas/orders.json``), the rules, the readers that turn any supported format into
bounded text chunks, the engine, its outcome frames and the CSV writer for them. This package is
pure: it imports polars and the standard library only, never AWS code or settings, so
``orderpipe validate`` and the Lambda judge a file with exactly the same code.
"""
