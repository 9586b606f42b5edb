"""Benchmarks of tbone-asgi against hand-written loops and its peers.

Run them all with ``python -m bench`` (or one: ``python -m bench signals``); each prints a
Markdown table of medians over several runs, with the ratio to each baseline measured side by
side in the same run. ``docs/performance.md`` keeps the latest tables and how they were made.

Benchmark-only dependencies (blinker, Django, broadcaster) come with the ``bench`` extra:
``pip install 'tbone-asgi[bench]'``. The test suite never times anything: it only runs each
benchmark with tiny sizes so the harness keeps working (``tests/test_bench_smoke.py``).
"""

from __future__ import annotations

__all__: list[str] = []
