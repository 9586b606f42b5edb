"""One server process, ~20,000 subscribers: one event's fan-out, its CPU, and memory per client.

N is 19,500 by default: a process here may hold at most 20,000 open files (the hard limit,
which it cannot raise), and the server needs a few besides its sockets.

Each row is a server of :mod:`bench._server` on its own (one at a time: 20,000 connections per
row), with N websocket clients in several processes (``bench._client``). It measures:

* RSS per connection: (server RSS with N connected - RSS before any) / N;
* one event to all: the server publishes one event (~200 bytes) and the round ends when every
  client holds it; the time from publish to the last arrival (the largest publish-to-receive
  latency of the round). Repeated ``events`` times, one event at a time, median;
* CPU µs per delivery: the server's CPU time over those rounds divided by the deliveries.

Rows: ``floor`` (a pre-built frame written with ``transport.write``: see :mod:`bench._server`),
``tbone`` on stock uvicorn, ``tbone (prepared)`` on tbone_asgi.uvicorn's protocol; each with
clients that offer no compression and with clients that offer permessage-deflate (the floor
then compresses each event once, the stock server once per connection).
"""

from __future__ import annotations

from bench._procs import Clients, Server
from bench._report import Table, median

__all__ = ["ROWS", "run"]

# name -> (bench._server kind, options)
# The endpoint's max_connections (10,000 by default) raised for this many subscribers.
MAX = ("--max-connections", "1000000")
ROWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "floor": ("floor", ()),
    "tbone": ("tbone", MAX),
    "tbone (prepared)": ("tbone", (*MAX, "--ws", "prepared")),
}
DEFLATE = ("--ws-per-message-deflate", "true")


def _row(
    kind: str, options: tuple[str, ...], deflate: bool, n: int, procs: int, events: int
) -> tuple[float, float, float, int]:
    """(seconds to all, CPU µs per delivery, KiB per connection, connections that deflate)."""
    with Server(kind, options=(*options, *(DEFLATE if deflate else ()))) as server:
        before = server.stats()["rss"]
        with Clients(server.ws_url, n, procs, timeout=300, deflate=deflate) as clients:
            connected = server.wait_clients(n, timeout=600)
            per_connection = (connected["rss"] - before) / n / 1024
            spans: list[float] = []
            cpu = delivered = 0.0
            for _ in range(events):
                clients.arm(1)
                start = server.stats()["cpu"]
                server.request("POST", "/burst?k=1&wait=1")
                result = clients.collect()
                cpu += server.stats()["cpu"] - start
                delivered += result["received"]
                if result["received"] != n:
                    raise RuntimeError(f"{kind}: {result['received']} of {n} deliveries")
                spans.append(max(result["latency_us"]) / 1e6)
            return median(spans), cpu / delivered * 1e6, per_connection, clients.deflated


def run(*, n: int = 19_500, procs: int = 8, events: int = 7) -> str:
    """Run every row with ``n`` clients; return the table (Markdown)."""
    table = Table(
        f"{n:,} subscribers on one server process",
        [
            "server",
            "deflate",
            "one event to all ms",
            "CPU µs/delivery",
            "KiB per connection",
            "to all vs floor",
            "CPU vs floor",
        ],
        note=(
            f"One server process at a time with {n:,} clients in {procs} processes; {events} "
            "events of ~200 bytes, one at a time (median). 'one event to all': from its publish "
            "to its arrival at the last client. deflate yes: the clients offer "
            "permessage-deflate and the server accepts it; the floor compresses once per "
            "event, stock uvicorn once per connection, the prepared protocol once per event."
        ),
    )
    for deflate in (False, True):
        results = {
            name: _row(kind, options, deflate, n, procs, events)
            for name, (kind, options) in ROWS.items()
        }
        floor = results["floor"]
        for name, (span, cpu, kib, deflated) in results.items():
            table.add(
                name,
                f"{'yes' if deflate else 'no'} ({deflated:,})",
                span * 1000,
                cpu,
                kib,
                f"{span / floor[0]:.2f}x",
                f"{cpu / floor[1]:.2f}x",
            )
    return table.render()
