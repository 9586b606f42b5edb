"""One client stops reading while many others read a steady stream: uvicorn, aiohttp, Sanic.

For each server, one stream to many readers (a separate process, ``flood_readers.py``) in six
phases: quiet, slow, quiet, slow, quiet, slow. At the start of each slow phase a new client
connects and stops reading. It must be closed with 1013 within its phase: here ``max_bytes``
(32 KiB) is below what the servers buffer themselves (64 KiB), so it is closed at once when the
server's buffer for it passes ``max_bytes``, before the slow_timeout rule comes into play
(tests/reliability/test_bursts.py covers that one). The readers' p99 latency in slow phases
must stay within 2x of the quiet phases (the median phase of each kind, so one scheduling
stall of a shared machine does not decide it, plus a small absolute allowance for timer
noise); and the server's memory must stay bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from starlette.applications import Starlette

from tbone.dispatch import MemoryChannel
from tbone_asgi import channel_route
from tbone_asgi.uvicorn import WebSocketProtocol
from tests.reliability.churn import _rss
from tests.reliability.test_redis_faults import _line
from tests.support import asgi_server, web_servers
from tests.support.asgi_server import run_uvicorn
from tests.support.web_servers import (
    aiohttp_server,
    new_sanic_app,
    sanic_server,
    small_buffer_socket,
    wait_until,
    ws_connect,
)

ROOT = Path(__file__).resolve().parents[2]
#: Readers of the stream at 100 events/s (10,000 frames/s; 200 before, at twice the CPU, for the
#: suite's time: docs/reliability.md), and at 1,000 events/s (20,000 frames/s).
READERS = {100: 100, 1000: 20}
PHASES = 6
LIMIT = 32 * 1024  # the carriers' max_bytes in these runs
OUTBOX = 1000  # and their max_messages (the default)
# The server sockets' send buffer (the kernel doubles it). Left to autotuning, Linux lets it
# grow to tcp_wmem's maximum (4 MiB): a slow client would then hold megabytes in the kernel
# before any reached the carrier's backlog, and the test would take minutes at these rates.
SERVER_SNDBUF = 16 * 1024
MEMORY_BOUND = 32 * 1024 * 1024  # RSS the server process may gain during a run
# events per second -> (frame padding, seconds per phase). Frames are ~100 bytes more than the
# padding: ~50 and ~110 KB/s per reader. A client that stops reading is closed once the
# server's buffer for it passes LIMIT, after the kernel's buffers (~64 KB here): about 1.8 and
# 0.6 seconds at these rates, which is also how long a reader may stall before it is closed.
RATES = {100: (400, 2.5), 1000: (0, 1.0)}

Serve = Callable[[MemoryChannel], AbstractAsyncContextManager[str]]
_runs = itertools.count()


@asynccontextmanager
async def _uvicorn(channel: MemoryChannel, ws: Any = "auto") -> AsyncIterator[str]:
    app = Starlette(routes=[channel_route("/ws", channel, max_messages=OUTBOX, max_bytes=LIMIT)])
    async with run_uvicorn(app, ws=ws) as server:
        yield server.ws_url("/ws?events=tick,end")


def _uvicorn_prepared(channel: MemoryChannel) -> AbstractAsyncContextManager[str]:
    return _uvicorn(channel, ws=WebSocketProtocol)  # events as prepared frames


@asynccontextmanager
async def _aiohttp(channel: MemoryChannel) -> AsyncIterator[str]:
    from tbone.dispatch.carriers.aiohttp_websocket import AioHttpWebSocketCarrier

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        carrier = AioHttpWebSocketCarrier(ws, max_messages=OUTBOX, max_bytes=LIMIT)
        channel.subscribe("tick", carrier)
        channel.subscribe("end", carrier)
        try:
            async for _ in ws:
                pass
        finally:
            channel.unsubscribe_all(carrier)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with aiohttp_server(app) as base:
        yield base.replace("http://", "ws://") + "/ws"


@asynccontextmanager
async def _sanic(channel: MemoryChannel) -> AsyncIterator[str]:
    from tbone.dispatch.carriers.sanic_websocket import SanicWebSocketCarrier

    app = new_sanic_app("flood")

    async def handler(request: Any, ws: Any) -> None:
        carrier = SanicWebSocketCarrier(ws, max_messages=OUTBOX, max_bytes=LIMIT)
        channel.subscribe("tick", carrier)
        channel.subscribe("end", carrier)
        try:
            while True:
                await ws.recv()
        finally:
            channel.unsubscribe_all(carrier)

    app.add_websocket_route(handler, "/ws")
    async with sanic_server(app) as base:
        yield base.replace("http://", "ws://") + "/ws"


@pytest.fixture
def small_server_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every server socket of the test gets a fixed SERVER_SNDBUF (accepted sockets inherit it)."""

    def small(sock: socket.socket) -> socket.socket:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SERVER_SNDBUF)
        return sock

    bind, listen = asgi_server.bind_free_socket, web_servers.listening_socket
    monkeypatch.setattr(asgi_server, "bind_free_socket", lambda *a, **k: small(bind(*a, **k)))
    monkeypatch.setattr(web_servers, "listening_socket", lambda: small(listen()))


async def _flood(serve: Serve, readers: int, rate: int) -> dict[str, Any]:
    """One stream of PHASES phases; a new slow client connects at the start of odd phases."""
    channel = MemoryChannel(name=f"flood-{next(_runs)}", history=10)
    loop = asyncio.get_running_loop()
    pad, phase_seconds = RATES[rate]
    per_phase = int(rate * phase_seconds)
    padding = "x" * pad
    slow_clients: list[Any] = []
    closes: list[float] = []
    async with serve(channel) as url:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.reliability.flood_readers",
            url,
            str(readers),
            str(per_phase),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

        async def stop_reading() -> None:
            # A small receive buffer and a 4-frame queue: it stops reading after a few KB.
            client = await ws_connect(
                url, compression=None, max_queue=4, sock=small_buffer_socket(url)
            )
            slow_clients.append(client)

        try:
            assert await _line(process, 60) == "connected"
            await wait_until(lambda: channel.stats()["subscribers"] == readers, 30, "readers")
            rss_before = peak = _rss()
            connecting: asyncio.Future[None] | None = None
            phase_start = start = loop.time()
            for seq in range(per_phase * PHASES):
                phase, offset = divmod(seq, per_phase)
                if offset == 0:
                    phase_start = loop.time()
                    if phase % 2:
                        # In a task: the stream goes on while it connects.
                        connecting = asyncio.ensure_future(stop_reading())
                    elif phase:
                        assert channel.stats()["closed_slow"] == phase // 2, (
                            f"the slow client of phase {phase - 1} was not closed within "
                            f"{phase_seconds}s: {channel.stats()}"
                        )
                delay = start + seq / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)  # the stream's pace (not synchronisation)
                await channel.publish("tick", {"seq": seq, "t": time.time(), "pad": padding})
                if seq % 50 == 0:
                    peak = max(peak, _rss())
                if len(closes) < channel.stats()["closed_slow"]:
                    closes.append(loop.time() - phase_start)
            published_in = loop.time() - start
            assert connecting is not None
            await connecting
            await channel.publish("end")
            summary: dict[str, Any] = json.loads(await _line(process, 90))
            assert await asyncio.wait_for(process.wait(), 30) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            for client in slow_clients:
                client.transport.abort()
        summary.update(
            closed_slow=channel.stats()["closed_slow"],
            closes=closes,
            published_in=published_in,
            rss_growth=peak - rss_before,
        )
    await channel.close(forget=True)
    return summary


def _problems(run: dict[str, Any], readers: int, events: int) -> list[str]:
    """What is wrong with one run (an empty list when it meets every rule)."""
    problems = []
    counts = [r["count"] for r in run["readers"]]
    # Every reader got every event, in order: nobody but the slow clients was closed.
    if counts != [events] * readers or not all(r["in_order"] for r in run["readers"]):
        problems.append(f"readers short or out of order: min {min(counts)} of {events}")
    if run["closed_slow"] != PHASES // 2 or len(run["closes"]) != PHASES // 2:
        problems.append(f"closed as slow: {run['closed_slow']}, expected {PHASES // 2}")
    if run["rss_growth"] >= MEMORY_BOUND:
        problems.append(f"server RSS grew by {run['rss_growth']} bytes")
    # Phases with a slow client against phases without, in the same stream: 2x, plus 20 ms
    # for timer and scheduling noise.
    quiet, slow = statistics.median(run["p99_ms"][0::2]), statistics.median(run["p99_ms"][1::2])
    if slow > 2 * quiet + 20:
        problems.append(f"p99 {slow:.1f} ms with a slow client, {quiet:.1f} ms without")
    return problems


@pytest.mark.slow
@pytest.mark.load
@pytest.mark.usefixtures("small_server_buffers")
@pytest.mark.parametrize("rate", sorted(RATES))
@pytest.mark.parametrize("server", ["uvicorn", "uvicorn-prepared", "aiohttp", "sanic"])
async def test_a_client_that_stops_reading(
    server: str, rate: int, figure: Callable[[str, Any], Any]
) -> None:
    serve: Serve = {
        "uvicorn": _uvicorn,
        "uvicorn-prepared": _uvicorn_prepared,
        "aiohttp": _aiohttp,
        "sanic": _sanic,
    }[server]
    readers = READERS[rate]
    phase_seconds = RATES[rate][1]
    events = int(rate * phase_seconds) * PHASES
    label = f"{server} {readers} readers x {rate} ev/s"
    # Two cores shared with other jobs: a stall of the machine longer than a reader's allowance
    # (see RATES) closes readers as slow, and one in a slow phase skews its latency. Such noise
    # does not repeat on demand, a real fault does: a failed run is tried once more.
    failures: list[str] = []
    for _attempt in range(2):
        try:
            run = await _flood(serve, readers, rate)
        except AssertionError as exc:
            failures.append(str(exc)[:500])
            continue
        problems = _problems(run, readers, events)
        if not problems:
            break
        failures.append("; ".join(problems))
    else:
        pytest.fail(f"{label}: both runs failed: {failures}")
    figure(f"{label}: runs needed", len(failures) + 1)
    figure(
        f"{label}: p50/p99 ms without a slow client",
        f"{statistics.median(run['p50_ms'][0::2]):.1f}/"
        f"{statistics.median(run['p99_ms'][0::2]):.1f}",
    )
    figure(
        f"{label}: p50/p99 ms with one",
        f"{statistics.median(run['p50_ms'][1::2]):.1f}/"
        f"{statistics.median(run['p99_ms'][1::2]):.1f}",
    )
    figure(
        f"{label}: slow clients closed with 1013 after s",
        "/".join(f"{c:.2f}" for c in run["closes"]),
    )
    figure(f"{label}: server RSS growth MiB", run["rss_growth"] / 2**20)
    figure(f"{label}: stream published in s (target {phase_seconds * PHASES})", run["published_in"])
