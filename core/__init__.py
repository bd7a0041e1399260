"""orderpipe core, in rooms by job.

Layer rule (checked by tests/unit/test_layers.py): ``validation`` ← ``pipeline`` ← ``ops`` ←
``cli``; ``aws`` sits below all of them; ``local`` and ``release`` sit beside ``cli``. A module
imports only from its own room and the rooms below it. See docs/architecture.md.
"""
