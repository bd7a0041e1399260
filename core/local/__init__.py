"""Local: the embedded stack that runs orderpipe on one machine with no AWS account.

The moto server process, the stack built on it from ``core.aws.stack``, the worker that polls
the queues and calls the real Lambda handlers, the state file other commands use to find a
running stack, and the reconcile timer. Sits beside the CLI: it may import anything below it,
and nothing in the pipeline, ops or validation imports it. Never shipped to Lambda or Glue.
"""
