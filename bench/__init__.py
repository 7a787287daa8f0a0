"""fluid's benchmark suite: each case against hand-written asyncio, in the same run.

Run it with ``make bench`` or ``python -m bench --help``; see bench/README.md.
"""
