"""``python -m core.cli``: the orderpipe command without the installed script (child processes)."""

from core.cli import main

main()
