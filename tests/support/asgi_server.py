"""Run a real ASGI server on 127.0.0.1, on a free port, inside the test's event loop.

::

    from tests.support.asgi_server import run_uvicorn

    async with run_uvicorn(app) as server:          # any uvicorn.Config option as a keyword
        async with websockets.connect(server.ws_url("/ws?events=a")) as ws:
            ...
        server.connections()                        # the server's live protocol objects

``await wait_until(lambda: channel.stats()["subscribers"] == 0)`` waits for a condition that
nothing signals (server-side state), checking it every 10 ms, and fails after ``timeout``.

``run_hypercorn(app)`` does the same with Hypercorn. Both bind the listening socket before the
server starts (so the port is known and connections queue from the first moment), wait for
startup (lifespan included) and, on exit, shut the server down and await its task, bounded in
time: a server that does not stop within ``stop_timeout`` fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RunningServer",
    "bind_free_socket",
    "run_hypercorn",
    "run_uvicorn",
    "uvicorn_url",
    "wait_until",
]


@dataclass
class RunningServer:
    """A server started by :func:`run_uvicorn` or :func:`run_hypercorn`.

    ``url``: ``http://127.0.0.1:<port>``; ``server``: the uvicorn ``Server`` (None for
    Hypercorn).
    """

    host: str
    port: int
    server: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, path: str = "/") -> str:
        """``ws://127.0.0.1:<port><path>``."""
        return f"ws://{self.host}:{self.port}{path}"

    def write_buffer_sizes(self) -> list[int]:
        """Bytes waiting in each server-side transport of this server's open connections.

        Works for every server running in this loop: it reads the loop's table of transports
        (a private attribute of asyncio's selector loop, stable since Python 3.4) and keeps
        those whose local port is the server's. Test introspection only.
        """
        table = getattr(asyncio.get_running_loop(), "_transports", None) or {}
        sizes = []
        for transport in list(table.values()):
            if transport is None or transport.is_closing():
                continue
            local = transport.get_extra_info("sockname")
            if isinstance(local, tuple) and local[1] == self.port:
                sizes.append(transport.get_write_buffer_size())
        return sizes

    def connections(self) -> list[Any]:
        """uvicorn's live protocol objects (each has a ``transport``); [] for Hypercorn."""
        if self.server is None:
            return []
        return list(self.server.server_state.connections)


def bind_free_socket(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to a free port on ``host`` and listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def run_uvicorn(
    app: Any, *, start_timeout: float = 10.0, stop_timeout: float = 10.0, **config: Any
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` with uvicorn in a task of the running loop; yield a :class:`RunningServer`.

    ``config`` goes to ``uvicorn.Config`` (e.g. ``ws="wsproto"``, ``ws_ping_interval=0.5``).
    Defaults here: ``log_level="warning"``, ``lifespan="auto"``, ``timeout_graceful_shutdown=3``.
    """
    import uvicorn

    config.setdefault("log_level", "warning")
    config.setdefault("timeout_graceful_shutdown", 3)
    sock = bind_free_socket()
    port = sock.getsockname()[1]
    started = asyncio.Event()

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            started.set()

        def install_signal_handlers(self) -> None:
            # The test runner owns the signals (older uvicorn releases call this hook).
            pass

    server = _Server(uvicorn.Config(app, **config))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    waiter = asyncio.ensure_future(started.wait())
    try:
        await asyncio.wait(
            {task, waiter}, timeout=start_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not started.is_set():
            if task.done():
                task.result()  # raise what made startup fail
                raise RuntimeError("uvicorn exited during startup (see its log above)")
            raise TimeoutError(f"uvicorn did not start within {start_timeout}s")
        yield RunningServer("127.0.0.1", port, server)
    finally:
        waiter.cancel()
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), stop_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            server.force_exit = True
            task.cancel()
            await asyncio.wait([task])
            raise TimeoutError(f"uvicorn did not stop within {stop_timeout}s") from None
        finally:
            sock.close()


@contextlib.asynccontextmanager
async def uvicorn_url(app: Any, **config: Any) -> AsyncIterator[str]:
    """:func:`run_uvicorn` yielding only ``http://127.0.0.1:<port>``, as the Sanic and aiohttp
    helpers of ``web_servers.py`` do."""
    async with run_uvicorn(app, **config) as server:
        yield server.url


@contextlib.asynccontextmanager
async def run_hypercorn(
    app: Any, *, stop_timeout: float = 10.0, **config: Any
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` with Hypercorn (asyncio worker) in a task; yield a :class:`RunningServer`.

    ``config`` sets attributes of ``hypercorn.config.Config`` (e.g. ``websocket_ping_interval``).
    """
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = bind_free_socket()
    port = sock.getsockname()[1]
    hyper = Config()
    hyper.bind = [f"fd://{os.dup(sock.fileno())}"]  # Hypercorn owns (and closes) the dup
    hyper.loglevel = "WARNING"
    hyper.graceful_timeout = 3
    for key, value in config.items():
        setattr(hyper, key, value)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        serve(app, hyper, shutdown_trigger=stop.wait, mode="asgi")
    )
    try:
        # The socket listens already: connections queue until Hypercorn accepts them.
        yield RunningServer("127.0.0.1", port, None)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), stop_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            task.cancel()
            await asyncio.wait([task])
            raise TimeoutError(f"hypercorn did not stop within {stop_timeout}s") from None
        finally:
            sock.close()


async def wait_until(condition: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Return once ``condition()`` is true; raise ``TimeoutError`` after ``timeout`` seconds.

    For state that nothing signals (a server's connection count, channel stats). Checks every
    10 ms: it waits for the condition, not for a guessed duration.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError(f"not true within {timeout}s: {what or condition!r}")
        await asyncio.sleep(0.01)
