"""Pipeline: what happens to one file on AWS, from its S3 event to its email.

Event parsing, the per-file ledger (claims, leases, outcomes), ingest (stream, validate, write
orders, write rejects, send a notice), the orders writer, and notify with the email it builds.
It may import ``core.validation`` and ``core.aws``; nothing here knows about the CLI, the local
emulator or releases.
"""
