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


# The rows: a name, the bench._server kind and options, and whether the clients offer
# permessage-deflate (the servers then accept it: uvicorn's own default).
ROWS: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("bare", "bare", (), False),
    ("raw", "raw", (), False),
    ("tbone", "tbone", (), False),
    ("tbone (prepared)", "tbone", ("--ws", "prepared"), False),
    ("bare, deflate", "bare", ("--ws-per-message-deflate", "true"), True),
    ("raw, deflate", "raw", ("--ws-per-message-deflate", "true"), True),
    ("tbone, deflate", "tbone", ("--ws-per-message-deflate", "true"), True),
    (
        "tbone (prepared), deflate",
        "tbone",
        ("--ws", "prepared", "--ws-per-message-deflate", "true"),
        True,
    ),
)


def _once(
    kind: str, options: tuple[str, ...], deflate: bool, n: int, procs: int
) -> tuple[float, float]:
    with Server(kind, options=options) as server:
        before = server.stats()["rss"]
        start = time.perf_counter()
        with Clients(server.ws_url, n, procs, timeout=120, deflate=deflate) as clients:
            after = server.wait_clients(n, timeout=300)
            seconds = time.perf_counter() - start
            if deflate and clients.deflated != n:
                raise RuntimeError(f"{kind}: {clients.deflated} of {n} negotiated deflate")
        return seconds, (after["rss"] - before) / n


def run(*, n: int = 10_000, runs: int = 1, procs: int = 4) -> str:
    """Run the benchmark with ``n`` connections; return the table (Markdown)."""
    from bench.fanout import available_kinds

    kinds, note = available_kinds()
    rows = [row for row in ROWS if row[1] == "bare" or row[1] in kinds]
    seconds: dict[str, list[float]] = {row[0]: [] for row in rows}
    per_conn: dict[str, list[float]] = {row[0]: [] for row in rows}
    for _ in range(runs):
        for name, kind, options, deflate in rows:
            s, b = _once(kind, options, deflate, n, procs)
            seconds[name].append(s)
            per_conn[name].append(b)
    table = Table(
        f"{n:,} idle subscribers on one uvicorn process (median of {runs} runs)",
        [
            "server",
            "deflate",
            "time to connect s",
            "connections/s",
            "KiB per connection",
            "beyond bare KiB",
        ],
        note=(
            f"{n:,} websocket clients in {procs} processes, {100} handshakes at a time each; "
            "deflate yes: the clients offer permessage-deflate and the server accepts it (each "
            "row against the bare row of its group). (prepared): tbone_asgi.uvicorn's protocol. "
            + note
        ).strip(),
    )
    for name, _kind, _options, deflate in rows:
        bare = median(per_conn["bare, deflate" if deflate else "bare"])
        s, b = median(seconds[name]), median(per_conn[name])
        table.add(name, "yes" if deflate else "no", s, n / s, b / 1024, (b - bare) / 1024)
    return table.render()
