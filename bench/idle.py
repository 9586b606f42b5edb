"""Idle connections: memory per connection and time to connect N subscribers.

For each server kind, one uvicorn process; N websocket clients (several processes) connect and
stay idle. Reported per run, median over runs:

* time to connect: from starting the client processes until the server counts N subscribers
  (client start-up included, the same for every kind);
* resident memory per connection: (RSS with N connected - RSS before any) / N, server side;
* "beyond bare": that cost minus the bare uvicorn websocket's (a pure ASGI app that accepts and
  waits), measured in the same run: what the subscribe endpoint itself adds.
"""

from __future__ import annotations

import time

from bench._procs import Clients, Server
from bench._report import Table, median

__all__ = ["run"]


def _once(kind: str, n: int, procs: int) -> tuple[float, float]:
    with Server(kind) as server:
        before = server.stats()["rss"]
        start = time.perf_counter()
        with Clients(server.ws_url, n, procs, timeout=120):
            after = server.wait_clients(n, timeout=300)
            seconds = time.perf_counter() - start
        return seconds, (after["rss"] - before) / n


def run(*, n: int = 10_000, runs: int = 1, procs: int = 4) -> str:
    """Run the benchmark with ``n`` connections; return the table (Markdown)."""
    from bench.fanout import available_kinds

    kinds, note = available_kinds()
    kinds = ["bare", *(k for k in kinds if k != "broadcaster")]
    seconds: dict[str, list[float]] = {k: [] for k in kinds}
    per_conn: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(runs):
        for kind in kinds:
            s, b = _once(kind, n, procs)
            seconds[kind].append(s)
            per_conn[kind].append(b)
    table = Table(
        f"{n:,} idle subscribers on one uvicorn process (median of {runs} runs)",
        ["server", "time to connect s", "connections/s", "KiB per connection", "beyond bare KiB"],
        note=(
            f"{n:,} websocket clients in {procs} processes, {100} handshakes at a time each. "
            + note
        ).strip(),
    )
    bare = median(per_conn["bare"])
    for kind in kinds:
        s, b = median(seconds[kind]), median(per_conn[kind])
        table.add(kind, s, n / s, b / 1024, (b - bare) / 1024)
    return table.render()
