"""Server settings: what uvicorn's and Hypercorn's websocket options do for the endpoint.

Each row runs the ``tbone`` server of :mod:`bench._server` (``channel_route`` with the default
``Limits``: client frames over 64 KiB are closed with 1009) under one server and setting, in
its own process; the clients run in this process. Three tables:

* **Oversized frames.** N connections open, then each sends one text frame of ``size`` bytes
  at once, all of it, as a hostile client would (after a close frame too), then answers the
  close. Reported: the close code and who sent it (the endpoint: ``"frame too big"``; the
  server, at the frame's header or once the bytes read pass its limit), the median time from
  the frame's first byte to that close, the connections the server ended itself within
  ``grace`` seconds, and the server's peak RSS growth during the flood.
* **Per-message deflate.** N connections from the ``websockets`` client, which offers
  permessage-deflate by default; K events of ~200 bytes are published. Reported: whether
  deflate was negotiated, RSS per connection once connected and after the fan-out, and the
  server's CPU µs per delivered frame (compression is per connection: the frame encoded once
  is compressed N times).
* **Pings.** N connections that stop reading (``bench._client --stuck``, so no pong ever
  comes back); reported: the seconds until the server drops them, or that it has not after
  ``give_up`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench._procs import BenchError, Clients, Server
from bench._report import Table, median
from bench._server import raise_fd_limit
from tbone.dispatch.protocol import CLOSE_MESSAGE_TOO_BIG, CLOSE_REASONS

__all__ = ["run"]

MIB = 1 << 20
CHUNK = 256 * 1024  # bytes handed to the kernel per send: progress is seen between chunks
# (server, setting, bench._server options) of the oversized-frame table.
FRAME_SETTINGS: list[tuple[str, str, list[str]]] = [
    ("uvicorn", "default (ws_max_size 16 MiB)", ["--ws-max-size", str(16 * MIB)]),
    ("uvicorn", "--ws-max-size 65536", ["--ws-max-size", "65536"]),
    (
        "Hypercorn",
        "default (websocket_max_message_size 16 MiB)",
        ["--server", "hypercorn", "--ws-max-size", str(16 * MIB)],
    ),
    (
        "Hypercorn",
        "websocket_max_message_size=65536",
        ["--server", "hypercorn", "--ws-max-size", "65536"],
    ),
]
# (server, setting, bench._server options, the client offers deflate) of the deflate table.
DEFLATE_SETTINGS: list[tuple[str, str, list[str], bool]] = [
    (
        "uvicorn",
        "default (--ws-per-message-deflate true)",
        ["--ws-per-message-deflate", "true"],
        True,
    ),
    ("uvicorn", "--ws-per-message-deflate false", ["--ws-per-message-deflate", "false"], True),
    ("Hypercorn", "no setting: deflate offered", ["--server", "hypercorn"], True),
    ("Hypercorn", "no setting: deflate not offered", ["--server", "hypercorn"], False),
]


# -- oversized frames ----------------------------------------------------------------------------


@dataclass
class _Outcome:
    code: int | None = None  # the close code the server sent, if one arrived
    reason: str = ""
    close_after: float | None = None  # seconds from the frame's first byte to that close
    server_ended: bool = False  # the server closed the TCP connection itself


def _header(length: int) -> bytes:
    """A final text frame's header, masked with a zero key.

    Clients must mask; a zero key leaves the payload as it is, so every connection sends the
    same bytes object instead of a masked copy each (the server unmasks it all the same).
    """
    if length < 126:
        return struct.pack("!BB4x", 0x81, 0x80 | length)
    if length < 1 << 16:
        return struct.pack("!BBH4x", 0x81, 0x80 | 126, length)
    return struct.pack("!BBQ4x", 0x81, 0x80 | 127, length)


class _RawClient:
    """One websocket: the ``websockets`` sans-I/O client protocol on a non-blocking socket.

    The handshake and the server's frames go through the protocol; the big frame is written
    straight to the socket (the protocol would copy and mask it), in chunks, so a server that
    closes the connection stops the sending as it would stop a real client.
    """

    def __init__(self, url: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.uri = parse_uri(url)
        self.protocol = ClientProtocol(self.uri, max_size=None)  # offers no extension
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.outcome = _Outcome()
        self.close_rcvd = asyncio.Event()

    async def open(self) -> None:
        from websockets.protocol import State

        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, (self.uri.host, self.uri.port))
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        while self.protocol.state is State.CONNECTING:
            data = await loop.sock_recv(self.sock, 65536)
            if not data:
                raise BenchError("the server closed the connection during the handshake")
            self.protocol.receive_data(data)
        if self.protocol.handshake_exc is not None:
            raise BenchError(f"handshake refused: {self.protocol.handshake_exc}")

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for data in self.protocol.data_to_send():
            if data:  # b"" asks for a half-close, which the server does first here
                await loop.sock_sendall(self.sock, data)

    async def _read(self, start: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(self.sock, 65536)
            except OSError:  # reset: the server closed with our bytes still unread
                data = b""
            if not data:
                self.outcome.server_ended = True
                return
            self.protocol.receive_data(data)
            close = self.protocol.close_rcvd
            if close is not None and self.outcome.code is None:
                self.outcome.code, self.outcome.reason = close.code, close.reason
                self.outcome.close_after = time.perf_counter() - start
                self.close_rcvd.set()

    async def flood(self, payload: memoryview, go: asyncio.Event, grace: float) -> _Outcome:
        """At ``go``, send ``payload`` as one text frame; wait ``grace`` s for the server's end."""
        loop = asyncio.get_running_loop()
        await go.wait()
        start = time.perf_counter()
        reader = asyncio.ensure_future(self._read(start))
        try:
            try:
                await loop.sock_sendall(self.sock, _header(len(payload)))
                for at in range(0, len(payload), CHUNK):
                    await loop.sock_sendall(self.sock, payload[at : at + CHUNK])
                # The frame is out: answer the server's close frame once it comes.
                closing = asyncio.ensure_future(self.close_rcvd.wait())
                await asyncio.wait({closing, reader}, timeout=grace)
                closing.cancel()
                await self._flush()
            except OSError:
                pass  # the server closed the connection: the rest of the frame never left
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), grace)
        finally:
            reader.cancel()
            self.sock.close()
        return self.outcome


async def _flood(server: Server, n: int, size: int, grace: float) -> tuple[list[_Outcome], float]:
    """Outcomes of ``n`` connections each sending one ``size``-byte frame; peak RSS growth."""
    clients = [_RawClient(server.ws_url) for _ in range(n)]
    await asyncio.gather(*(c.open() for c in clients))
    await asyncio.to_thread(server.wait_clients, n)
    before = await asyncio.to_thread(server.stats, True)
    payload = memoryview(b"x" * size)
    go = asyncio.Event()
    flooding = asyncio.gather(*(c.flood(payload, go, grace) for c in clients))
    go.set()
    outcomes = await flooding
    after = await asyncio.to_thread(server.stats)
    return outcomes, (after["peak_rss"] - before["rss"]) / MIB


def _who(outcome: _Outcome) -> str:
    if outcome.code is None:
        return "none"
    if outcome.reason == CLOSE_REASONS[CLOSE_MESSAGE_TOO_BIG]:
        return f"{outcome.code} endpoint"
    return f"{outcome.code} server"


def _oversized_table(n: int, size: int, grace: float) -> str:
    table = Table(
        f"{n} connections each send one {size / MIB:.1f} MiB text frame",
        ["server", "setting", "closed with", "close after ms", "ended by server", "peak RSS +MiB"],
        note=(
            f'The endpoint\'s limit is 64 KiB (close 1009 "frame too big"). Each client sends '
            f'its whole frame even after a close frame, then answers the close; "ended by '
            f'server": the server closed the TCP connection within {grace:g} s. Peak RSS: '
            "the server process's high-water mark during the flood minus its RSS before."
        ),
    )
    for server_name, setting, options in FRAME_SETTINGS:
        with Server("tbone", options=options) as server:
            outcomes, peak = asyncio.run(_flood(server, n, size, grace))
        codes = Counter(_who(o) for o in outcomes)
        times = [o.close_after * 1000 for o in outcomes if o.close_after is not None]
        table.add(
            server_name,
            setting,
            ", ".join(f"{who} ({count})" for who, count in codes.most_common()),
            median(times),
            f"{sum(o.server_ended for o in outcomes)}/{n}",
            peak,
        )
    return table.render()


# -- per-message deflate -------------------------------------------------------------------------


async def _fan_out(
    server: Server, n: int, events: int, compression: str | None, timeout: float = 120.0
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    received = [0] * n
    done = asyncio.Event()
    target = [0]  # event frames each connection should hold

    async def reader(i: int, ws: Any) -> None:
        async for message in ws:
            if json.loads(message).get("type") == "event":
                received[i] += 1
                if target[0] and all(r >= target[0] for r in received):
                    done.set()

    before = await asyncio.to_thread(server.stats)
    gate = asyncio.Semaphore(100)  # handshakes at a time

    async def open_one() -> Any:
        async with gate:
            return await connect(
                server.ws_url, compression=compression, ping_interval=None, proxy=None
            )

    sockets = await asyncio.gather(*(open_one() for _ in range(n)))
    readers = [asyncio.ensure_future(reader(i, ws)) for i, ws in enumerate(sockets)]
    try:
        connected = await asyncio.to_thread(server.wait_clients, n)
        target[0] = events
        await asyncio.to_thread(server.request, "POST", f"/burst?k={events}")
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            raise BenchError(f"{sum(received):,} of {n * events:,} frames in {timeout}s") from None
        after = await asyncio.to_thread(server.stats)
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "deflate": bool(sockets[0].protocol.extensions),
        "kib_connected": (connected["rss"] - before["rss"]) / n / 1024,
        "kib_after": (after["rss"] - before["rss"]) / n / 1024,
        "cpu_us": (after["cpu"] - connected["cpu"]) / (n * events) * 1e6,
    }


def _deflate_table(n: int, events: int, runs: int) -> str:
    table = Table(
        f"{n:,} connections from the websockets client, {events} events of ~200 bytes "
        f"(median of {runs} runs)",
        [
            "server",
            "setting",
            "deflate",
            "KiB/conn connected",
            "KiB/conn after events",
            "server CPU µs/frame",
        ],
        note=(
            "RSS growth of the server over the idle connections, per connection, and the "
            "server's CPU time (publish included) per delivered frame. The websockets client "
            "offers permessage-deflate unless told not to. uvicorn runs on uvloop, Hypercorn "
            "on asyncio's own loop: compare each server with itself."
        ),
    )
    for server_name, setting, options, offer in DEFLATE_SETTINGS:
        results = []
        for _ in range(runs):
            with Server("tbone", options=options) as server:
                results.append(
                    asyncio.run(_fan_out(server, n, events, "deflate" if offer else None))
                )
        table.add(
            server_name,
            setting,
            "yes" if results[0]["deflate"] else "no",
            median([r["kib_connected"] for r in results]),
            median([r["kib_after"] for r in results]),
            median([r["cpu_us"] for r in results]),
        )
    return table.render()


# -- pings ---------------------------------------------------------------------------------------


def _ping_table(n: int, interval: float, timeout: float, defaults: bool) -> str:
    rows: list[tuple[str, str, list[str]]] = []
    if defaults:
        rows.append(("uvicorn", "default (--ws-ping-interval 20 --ws-ping-timeout 20)", []))
    rows += [
        (
            "uvicorn",
            f"--ws-ping-interval {interval:g} --ws-ping-timeout {timeout:g}",
            ["--ws-ping-interval", str(interval), "--ws-ping-timeout", str(timeout)],
        ),
        (
            "Hypercorn",
            f"websocket_ping_interval={interval:g}",
            ["--server", "hypercorn", "--ws-ping-interval", str(interval)],
        ),
    ]
    give_up = max(4 * (interval + timeout), 60.0 if defaults else 0.0)
    table = Table(
        f"{n} connections that stop reading: when the server drops them",
        ["server", "setting", "dropped after s", "still subscribed"],
        note=(
            "The clients keep their TCP connection but never read again, so no pong comes "
            f"back (a vanished peer looks the same until TCP gives up). Given up after "
            f"{give_up:g} s; every server runs at once."
        ),
    )
    with contextlib.ExitStack() as stack:
        started = []
        for server_name, setting, options in rows:
            server = stack.enter_context(Server("tbone", options=options))
            stack.enter_context(Clients(server.ws_url, n, 1, stuck=True))
            server.wait_clients(n)
            started.append((server_name, setting, server, time.perf_counter()))
        dropped: dict[int, float] = {}
        deadline = time.perf_counter() + give_up
        while len(dropped) < len(started) and time.perf_counter() < deadline:
            for i, (_, _, server, start) in enumerate(started):
                if i not in dropped and server.stats()["clients"] == 0:
                    dropped[i] = time.perf_counter() - start
            time.sleep(0.05)  # polling counters of other processes; bounded by the deadline
        for i, (server_name, setting, server, _) in enumerate(started):
            table.add(
                server_name,
                setting,
                dropped.get(i, f"not within {give_up:g}"),
                server.stats()["clients"],
            )
    return table.render()


def run(
    *,
    n: int = 60,
    size: int = 16 * MIB,
    grace: float = 5.0,
    connections: int = 1000,
    events: int = 20,
    runs: int = 1,
    pingers: int = 10,
    ping_interval: float = 5.0,
    ping_timeout: float = 5.0,
    ping_defaults: bool = True,
) -> str:
    """Run the three measurements; return their tables (Markdown)."""
    raise_fd_limit()
    return "\n".join(
        [
            _oversized_table(n, size, grace),
            _deflate_table(connections, events, runs),
            _ping_table(pingers, ping_interval, ping_timeout, ping_defaults),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.server_settings", description=__doc__)
    parser.add_argument("--n", type=int, default=60, help="connections sending a big frame")
    parser.add_argument("--size", type=int, default=16 * MIB, help="bytes of that frame")
    parser.add_argument("--connections", type=int, default=1000, help="deflate: connections")
    parser.add_argument("--events", type=int, default=20, help="deflate: events published")
    parser.add_argument("--runs", type=int, default=1, help="deflate: runs per row")
    parser.add_argument("--ping-interval", type=float, default=5.0)
    parser.add_argument("--ping-timeout", type=float, default=5.0)
    parser.add_argument(
        "--no-ping-defaults", action="store_true", help="skip uvicorn's 20 s + 20 s row"
    )
    args = parser.parse_args(argv)
    from bench._report import machine

    command = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"# python -m bench.server_settings {command}".rstrip() + "\n\n" + machine() + "\n")
    print(
        run(
            n=args.n,
            size=args.size,
            connections=args.connections,
            events=args.events,
            runs=args.runs,
            ping_interval=args.ping_interval,
            ping_timeout=args.ping_timeout,
            ping_defaults=not args.no_ping_defaults,
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
