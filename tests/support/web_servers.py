"""Real Sanic and aiohttp servers on a free 127.0.0.1 port, in the test's own event loop.

Both servers run in-process (Sanic through its documented ``create_server`` API, aiohttp
through ``AppRunner``/``SockSite``), so a test publishes on the very channel the handlers
subscribe to, and server-side objects can be inspected. Each context manager yields the base
URL once the server answers an HTTP request, and on exit closes every connection it still has.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.asgi_server import wait_until

__all__ = [
    "aiohttp_server",
    "assert_a_silent_peer_is_dropped",
    "assert_no_tracebacks",
    "listening_socket",
    "new_sanic_app",
    "one_client_stops_reading",
    "read_until_closed",
    "sanic_server",
    "small_buffer_socket",
    "wait_until",
    "ws_connect",
]

_app_numbers = itertools.count(1)

try:
    from sanic import Sanic
except ImportError:  # pragma: no cover - the sanic extra is not installed
    pass
else:
    # Sanic's test mode (what sanic-testing sets): several apps may start in one process;
    # otherwise the second app's startup re-patches methods the first one already rewrote.
    # Set on import, before any test (or a docs example) makes its first app.
    Sanic.test_mode = True


def listening_socket() -> socket.socket:
    """A TCP socket bound to a free port on 127.0.0.1 and listening (no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _wait_serving(url: str, timeout: float = 10.0) -> None:
    # Any HTTP answer (404 included) shows the server parses requests on this port.
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + timeout
        while True:
            try:
                async with session.get(url + "/__ready__") as response:
                    await response.read()
                    return
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.01)


def ws_connect(url: str, **kwargs: Any) -> Any:
    """``websockets.connect`` for tests: never through a proxy from the environment."""
    import websockets

    kwargs.setdefault("proxy", None)
    return websockets.connect(url, **kwargs)


async def read_until_closed(client: Any, timeout: float = 5.0) -> tuple[list[Any], Any]:
    """Read a ``websockets`` client until it closes: (the texts read, the ConnectionClosed)."""
    from websockets.exceptions import ConnectionClosed

    texts: list[Any] = []
    while True:
        try:
            texts.append(await asyncio.wait_for(client.recv(), timeout))
        except ConnectionClosed as closed:
            return texts, closed


def small_buffer_socket(url: str, rcvbuf: int = 16 * 1024) -> socket.socket:
    """A socket connected to ``url``'s host and port with a small, fixed receive buffer.

    A client that stops reading then fills up after a few frames instead of after the
    megabytes Linux's receive-buffer autotuning would grant on loopback.
    """
    host, _, port = url.split("://", 1)[1].split("/", 1)[0].partition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets window
    sock.connect((host, int(port)))
    return sock


def new_sanic_app(prefix: str = "tbone_test") -> Any:
    """A Sanic app with a name no other test uses (Sanic keeps a process-wide app registry)."""
    from sanic import Sanic

    # configure_logging=False: Sanic would attach handlers to the sys.stdout of this moment
    # (pytest's capture), which later tests find closed.
    app = Sanic(f"{prefix}_{next(_app_numbers)}", configure_logging=False)
    # Keep test output to what matters: no access log, no banner.
    app.config.ACCESS_LOG = False
    app.config.MOTD = False
    return app


@asynccontextmanager
async def sanic_server(app: Any) -> AsyncIterator[str]:
    """Serve Sanic ``app`` on a free port of 127.0.0.1; yield ``http://127.0.0.1:<port>``."""
    from sanic import Sanic

    sock = listening_socket()
    port = sock.getsockname()[1]
    server = await app.create_server(sock=sock, access_log=False, return_asyncio_server=True)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    await server.start_serving()
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_serving(url)
        yield url
    finally:
        await server.before_stop()
        server.server.close()
        # What Sanic's own runner does at shutdown: websockets get a 1001 close, the rest go.
        for conn in list(server.connections):
            websocket = getattr(conn, "websocket", None)
            if websocket is not None:
                websocket.fail_connection(code=1001)
            else:
                conn.close_if_idle() or conn.abort()
        handlers = list(app.websocket_tasks)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=10)
        await asyncio.wait_for(server.wait_closed(), 10)
        await server.after_stop()
        Sanic._app_registry.pop(app.name, None)


@asynccontextmanager
async def aiohttp_server(app: web.Application) -> AsyncIterator[str]:
    """Serve aiohttp ``app`` on a free port of 127.0.0.1; yield ``http://127.0.0.1:<port>``."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    sock = listening_socket()
    port = sock.getsockname()[1]
    site = web.SockSite(runner, sock)
    await site.start()
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_serving(url)
        yield url
    finally:
        await runner.cleanup()


def assert_no_tracebacks(caplog: Any) -> None:
    """Nothing logged at ERROR and no traceback: an ordinary disconnect is not an error."""
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert noisy == [], [r.getMessage() for r in noisy]
    assert "Traceback" not in caplog.text


async def assert_a_silent_peer_is_dropped(url: str, channel: Any) -> None:
    """A client of ``url`` subscribed to ``tick`` stops answering: the server's pings drop it.

    The server must ping every fraction of a second (the test waits 3 s at most).
    """
    client = await ws_connect(url + "?events=tick")
    await client.send('{"type": "ping"}')
    assert json.loads(await asyncio.wait_for(client.recv(), 5)) == {"type": "pong"}
    assert channel.stats()["subscribers"] == 1
    # A peer that vanished without a FIN (cable pulled) reads and answers nothing.
    client.transport.pause_reading()
    await wait_until(lambda: channel.stats()["subscribers"] == 0, timeout=3, what="dropped")
    client.transport.abort()


async def one_client_stops_reading(
    url: str,
    channel: Any,
    carriers: list[Any],
    carrier_of: Callable[[list[Any], Any], Any],
    event: str,
) -> int:
    """A fast and a non-reading client on ``url``, whose server subscribes each to ``event``.

    Publishes 4 KB frames in batches the fast client keeps up with until the slow one's
    carrier is closed, then checks: it fell behind and was closed with 1013 within its
    ``slow_timeout`` (plus the watch's quarter and 1 s of slack) and counted; the fast client
    got every event in order and is still subscribed; the slow client, reading again, finds a
    gapless prefix and then the 1013 close. Returns the peak backlog() seen for the slow one.
    """
    blob = "x" * 4000
    # No compression: the bytes on the wire are the bytes we publish.
    async with (
        ws_connect(url, compression=None) as fast,
        ws_connect(url, compression=None, max_queue=4, sock=small_buffer_socket(url)) as slow,
    ):
        await wait_until(lambda: len(carriers) == 2)
        slow_carrier = carrier_of(carriers, slow)
        fast_carrier = carrier_of(carriers, fast)
        received: list[int] = []
        peak = sent = 0
        loop = asyncio.get_running_loop()
        behind_at: float | None = None

        async def publish(count: int, pad: str) -> None:
            nonlocal sent
            for _ in range(count):
                await channel.publish(event, {"n": sent, "blob": pad})
                sent += 1
            while len(received) < sent:
                frame = json.loads(await asyncio.wait_for(fast.recv(), 5))
                received.append(frame["payload"]["data"]["n"])

        # Bounded in time: the slow rule closes it within slow_timeout of falling behind.
        deadline = loop.time() + slow_carrier.slow_timeout * 1.25 + 10.0
        while not slow_carrier.closed and loop.time() < deadline:
            await publish(20, blob)
            peak = max(peak, slow_carrier.backlog())
            if behind_at is None and (slow_carrier.behind or slow_carrier.lagging):
                behind_at = loop.time()
        assert slow_carrier.closed, f"slow client still open after {sent} events"
        assert slow_carrier.close_code == 1013
        assert behind_at is not None
        assert loop.time() - behind_at <= slow_carrier.slow_timeout * 1.25 + 1.0
        assert channel.stats()["closed_slow"] == 1
        await publish(5, "")
        assert received == list(range(sent))
        assert channel.subscribers(event) == [fast_carrier]
        texts, closed = await read_until_closed(slow)
        got = [json.loads(t)["payload"]["data"]["n"] for t in texts]
        assert got == list(range(len(got)))
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1013
    return peak
