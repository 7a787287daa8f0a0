"""fluid against other libraries doing the same job: aio-fluid, aiomisc and aiojobs.

``python -m bench.others --loop asyncio|uvloop [--quick] --json PATH`` runs,
for each library, the rows of the suite (``python -m bench``) where that
library does the same job, with the suite's sizes, repeats and statistic, on
the chosen loop. Each figure names the suite row it belongs to by the row's
``key``; ``python -m bench.report`` puts them next to fluid's and hand-written
asyncio's figures. ``make bench`` runs all of it on both loops.

The libraries are not dependencies of fluid: aiomisc and aiojobs are in the
``bench`` extra (``.venv-bench``), and aio-fluid, which installs a top-level
package also named ``fluid``, lives in its own virtualenv (``.venv-aiofluid``)
and is measured in a subprocess (``with_aiofluid.py``).

Files:

* ``_figures.py``: ``Figure``, ``NotCompared`` and ``Library``, the results.
* ``with_aiomisc.py``, ``with_aiojobs.py``: each library's cases, run in this
  process.
* ``with_aiofluid.py``: aio-fluid's cases, a script run by path in aio-fluid's
  virtualenv with ``python -I``.
* ``__main__.py``: the command line; runs the cases and the aio-fluid
  subprocess, prints the figures and writes the JSON file.
"""
