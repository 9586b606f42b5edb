"""A websocket client process for the fan-out benchmarks: ``python -m bench._client URL N``.

It opens N connections and follows line commands on stdin, answering each with one JSON line
on stdout:

* at start: ``{"connected": N, "seconds": ..., "deflate": D}`` once every connection is open
  (D of them negotiated permessage-deflate);
* ``{"expect": K}`` -> ``{"armed": true}`` at once, then, when every connection has received
  K event frames (or ``timeout`` passed), ``{"received": ..., "latency_us": [...], "last":
  ..., "cpu": ..., "out_of_order": ...}``: the publish-to-receive latency of each frame (from
  the ``t`` the server stamped at publish, ``time.time()``), the time the last frame arrived,
  the CPU seconds this client process used in the round, and how many frames did not carry
  the ``n`` that follows the connection's previous one (when the data has an ``n``: a gap, a
  repeat or a reordering). ``{"expect": K, "latency": false}`` leaves the latencies out;
* ``{"quit": true}`` (or end of input) -> close every connection and exit.

Each connection is the ``websockets`` library's sans-I/O ``ClientProtocol`` (it does the
handshake, framing, masking, pings and the close handshake) driven by a plain asyncio
protocol, with compression off unless ``--deflate`` is given. That costs the client a third
of what the library's asyncio client does per frame, which matters: clients share the
machine's cores with the server, and the less they take, the more the latency measures the
server. With ``--deflate`` each connection offers permessage-deflate as browsers do
(``permessage-deflate; client_max_window_bits``, the library's own default offer); frames
the server compressed are decompressed by the protocol before they are parsed and counted,
so a round measures the same thing either way. With ``--stuck`` the connections stop reading
once open, as a client that hung would: the server's writes then pile up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bench._server import raise_fd_limit

__all__: list[str] = []


class _Round:
    def __init__(self, sockets: int, expect: int, latency: bool = True) -> None:
        self.expect = expect
        self.pending = sockets
        self.latency: list[float] | None = [] if latency else None
        self.received = 0
        self.out_of_order = 0
        self.last = 0.0
        self.done = asyncio.Event()
        if sockets == 0 or expect == 0:
            self.done.set()


class _Connection(asyncio.Protocol):
    """One websocket: the websockets library's ClientProtocol over an asyncio transport."""

    def __init__(
        self, url: str, on_text: Callable[[_Connection, Any], None], deflate: bool = False
    ) -> None:
        from websockets.client import ClientProtocol
        from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
        from websockets.uri import parse_uri

        extensions = enable_client_permessage_deflate(None) if deflate else None
        self.protocol = ClientProtocol(parse_uri(url), extensions=extensions, max_size=None)
        self.on_text = on_text
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.count = 0  # event frames of the current round
        self.next_n: int | None = None  # the "n" the next frame should carry, once known
        self.round: _Round | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Frame, Opcode
        from websockets.http11 import Response

        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self.on_text(self, event.data)
            elif isinstance(event, Response) and not self.opened.done():
                if self.protocol.handshake_exc is not None:
                    self.opened.set_exception(self.protocol.handshake_exc)
                else:
                    self.opened.set_result(None)
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            else:  # the protocol asks to half-close after the close handshake
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    async def close(self, timeout: float) -> None:
        """Close with 1000 and wait (at most ``timeout``) for the server's answer."""
        if self.transport is None or self.transport.is_closing():
            return
        self.protocol.send_close(1000)
        self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except asyncio.TimeoutError:
            self.transport.abort()


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _main(
    url: str, n: int, concurrency: int, timeout: float, stuck: bool, deflate: bool
) -> None:
    try:
        import orjson

        loads: Any = orjson.loads
    except ImportError:  # pragma: no cover
        loads = json.loads
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    state: dict[str, _Round | None] = {"round": None}

    def on_text(conn: _Connection, data: Any) -> None:
        now = time.time()
        r = state["round"]
        if r is None:
            return
        frame = loads(data)
        if frame.get("type") != "event":
            return
        if conn.round is not r:  # a new round began: count from zero
            conn.round, conn.count, conn.next_n = r, 0, None
        conn.count += 1
        r.received += 1
        data = frame["payload"]["data"]
        if r.latency is not None:
            r.latency.append(now - data["t"])
        n = data.get("n")
        if n is not None:
            if conn.next_n is not None and n != conn.next_n:
                r.out_of_order += 1
            conn.next_n = n + 1
        r.last = now
        if conn.count == r.expect:
            r.pending -= 1
            if r.pending == 0:
                r.done.set()

    from websockets.uri import parse_uri

    uri = parse_uri(url)
    gate = asyncio.Semaphore(concurrency)
    connections: list[_Connection] = []

    async def open_one() -> None:
        async with gate:
            _, conn = await loop.create_connection(
                lambda: _Connection(url, on_text, deflate), uri.host, uri.port
            )
            await asyncio.wait_for(conn.opened, 60)
        connections.append(conn)
        if stuck and conn.transport is not None:
            conn.transport.pause_reading()

    start = time.perf_counter()
    await asyncio.gather(*(open_one() for _ in range(n)))
    seconds = time.perf_counter() - start
    deflated = sum(1 for conn in connections if conn.protocol.extensions)  # the only one offered
    _emit({"connected": len(connections), "seconds": seconds, "deflate": deflated})
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        if "expect" not in command:
            break
        r = state["round"] = _Round(
            len(connections), int(command["expect"]), bool(command.get("latency", True))
        )
        cpu = time.process_time()
        _emit({"armed": True})
        with contextlib.suppress(asyncio.TimeoutError):  # reported as fewer frames received
            await asyncio.wait_for(r.done.wait(), timeout)
        _emit(
            {
                "received": r.received,
                "latency_us": [round(x * 1e6) for x in r.latency or ()],
                "last": r.last,
                "cpu": time.process_time() - cpu,
                "out_of_order": r.out_of_order,
            }
        )
        state["round"] = None
    if stuck:  # a hung client never completes a close handshake: drop the connections
        for conn in connections:
            if conn.transport is not None:
                conn.transport.abort()
    else:
        await asyncio.gather(*(conn.close(10) for conn in connections))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("n", type=int)
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes at a time")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per round")
    parser.add_argument("--stuck", action="store_true", help="connect, then never read")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    args = parser.parse_args()
    asyncio.run(_main(args.url, args.n, args.concurrency, args.timeout, args.stuck, args.deflate))


if __name__ == "__main__":
    main()
