"""``python -m fluid``: the ``fluid`` command (see [`fluid.cli`][fluid.cli])."""

from __future__ import annotations

from .cli import console

# Guarded: a child process started with ``spawn`` imports this module again
# (as ``__mp_main__``) and must not run the command a second time.
if __name__ == "__main__":
    console()
