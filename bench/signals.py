"""Signals: the cost of ``await signal.send()`` per receiver, against blinker and Django.

For 1, 10 and 100 receivers, all async or all sync, each implementation sends the same
signal ``iterations`` times per run; the table shows the median over the runs of the time per
receiver (send time / receivers). The implementations run in turn inside each run, so drift
from other processes on the machine hits them alike.

Receivers are plain functions connected the default way (``connect(fn)``: weakly held by all
three libraries).

* tbone: ``await Signal.send(sender, **kw)``;
* blinker: ``await Signal.send_async(sender, **kw)``; sync receivers need a ``_sync_wrapper``:
  we give it the cheapest possible one (an ``async def`` that calls the receiver), not a thread;
* Django: ``await Signal.asend(sender, **kw)``, which runs async receivers concurrently under
  ``asyncio.gather`` and sync ones in a thread through ``sync_to_async``: that is its design.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bench._report import Table, median, ratio

__all__ = ["run"]

Send = Callable[[], Awaitable[Any]]
IMPLS = ("tbone", "blinker", "django")


# Receivers are connected the default way (weakly held), so the benchmark keeps them alive.
_alive: list[Callable[..., Any]] = []


def _receivers(kind: str, n: int) -> list[Callable[..., Any]]:
    out: list[Callable[..., Any]] = []
    for _ in range(n):
        if kind == "async":

            async def areceiver(sender: Any, **kwargs: Any) -> int:
                return 1

            out.append(areceiver)
        else:

            def sreceiver(sender: Any, **kwargs: Any) -> int:
                return 1

            out.append(sreceiver)
    _alive.extend(out)
    return out


def _tbone(kind: str, n: int) -> Send:
    from tbone.dispatch import Signal

    signal = Signal("bench")
    for fn in _receivers(kind, n):
        signal.connect(fn)
    return lambda: signal.send(None, value=1)


def _blinker(kind: str, n: int) -> Send:
    import blinker

    signal = blinker.Signal("bench")
    for fn in _receivers(kind, n):
        signal.connect(fn)

    def wrap(fn: Callable[..., Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return call

    return lambda: signal.send_async(None, _sync_wrapper=wrap, value=1)


def _django(kind: str, n: int) -> Send:
    from django.conf import settings  # type: ignore[import-untyped]

    if not settings.configured:
        settings.configure()  # asend needs no setting, but connect() reads DEBUG
    from django.dispatch import Signal  # type: ignore[import-untyped]

    signal = Signal()
    for fn in _receivers(kind, n):
        signal.connect(fn)
    return lambda: signal.asend(None, value=1)


_FACTORIES: dict[str, Callable[[str, int], Send]] = {
    "tbone": _tbone,
    "blinker": _blinker,
    "django": _django,
}


async def _time(send: Send, iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        await send()
    return (time.perf_counter() - start) / iterations


async def _measure(runs: int, calls: int, sizes: tuple[int, ...], budget: float) -> Table:
    table = Table(
        "Signals: await send(), cost per receiver (ns, median)",
        [
            "receivers",
            "kind",
            "tbone",
            "blinker",
            "django",
            "tbone / blinker",
            "django / tbone",
        ],
        note=(
            f"Median of {runs} runs; each run makes up to {calls:,} receiver calls per "
            f"implementation and row (fewer for one slower than {budget}s per run)."
        ),
    )
    for kind in ("async", "sync"):
        for n in sizes:
            sends = {impl: _FACTORIES[impl](kind, n) for impl in IMPLS}
            # Warm-up (receiver caches, Django's thread pool) also sizes each sample: about
            # ``calls`` receiver calls, but no more than ``budget`` seconds for the slow ones.
            iterations = {}
            for impl, send in sends.items():
                per_send = await _time(send, 10)
                iterations[impl] = max(3, min(calls // n, int(budget / per_send)))
            samples: dict[str, list[float]] = {impl: [] for impl in IMPLS}
            for _ in range(runs):
                for impl, send in sends.items():
                    samples[impl].append(await _time(send, iterations[impl]) / n * 1e9)
            med = {impl: median(s) for impl, s in samples.items()}
            table.add(
                n,
                kind,
                med["tbone"],
                med["blinker"],
                med["django"],
                ratio(med["tbone"], med["blinker"]),
                ratio(med["django"], med["tbone"]),
            )
    return table


def run(
    *,
    runs: int = 5,
    calls: int = 20_000,
    sizes: tuple[int, ...] = (1, 10, 100),
    budget: float = 0.05,
) -> str:
    """Run the benchmark and return its table (Markdown)."""
    try:
        return asyncio.run(_measure(runs, calls, sizes, budget)).render()
    finally:
        _alive.clear()
