"""Subscribers that stop reading: does the server's memory stay bounded?

One uvicorn server per kind, S websocket clients that connect and then never read (after a few
frames the websockets library stops reading the socket, as a hung client would). The server
publishes K events of ~200 bytes as fast as it accepts them, for at most ``timeout`` seconds.
Reported per kind:

* published: how many of the K publishes returned in time (the hand loop's publisher blocks
  as soon as one client's transport is full: every other subscriber then waits too);
* peak RSS growth during the burst, and RSS ``settle`` seconds after it (MiB). RSS rarely
  shrinks (CPython keeps freed memory for reuse), so what the server really still holds for
  clients that do not read is shown as "objects held": live objects (after a full garbage
  collection) beyond those before the burst;
* still subscribed: stuck connections the server still holds at the end (tbone closes a
  subscriber that falls too far behind with 1013 and frees what it held).
"""

from __future__ import annotations

import time

from bench._procs import Clients, Server
from bench._report import Table

__all__ = ["run"]


def run(*, stuck: int = 50, events: int = 20_000, timeout: float = 5.0, settle: float = 6.0) -> str:
    """Run once per server kind; return the table (Markdown)."""
    from bench.fanout import available_kinds

    kinds, note = available_kinds()
    table = Table(
        f"{stuck} subscribers that stop reading, {events:,} events published",
        [
            "server",
            "published",
            "seconds",
            "peak RSS +MiB",
            f"RSS {settle:g} s later +MiB",
            "objects held",
            "still subscribed",
        ],
        note=(
            f"Each server publishes {events:,} events of ~200 bytes as fast as it accepts "
            f"them, given up after {timeout:g} s. " + note
        ).strip(),
    )
    for kind in kinds:
        with Server(kind) as server, Clients(server.ws_url, stuck, 1, stuck=True):
            server.wait_clients(stuck)
            before = server.stats(reset_peak=True, objects=True)
            answer = server.request("POST", f"/burst?k={events}&wait=1&timeout={timeout}")
            peak = server.stats()["peak_rss"]
            # Closing a peer that does not read takes the carrier's close_timeout (5 s) before
            # the transport is aborted; what is still held after that is held for good.
            time.sleep(settle)
            after = server.stats(objects=True)
            table.add(
                kind,
                f"{answer['published']:,}",
                answer["seconds"],
                (peak - before["rss"]) / 2**20,
                (after["rss"] - before["rss"]) / 2**20,
                after["objects"] - before["objects"],
                after["clients"],
            )
    return table.render()
