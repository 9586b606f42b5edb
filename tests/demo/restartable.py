"""A uvicorn server that a test can stop and start again on the same port.

::

    server = RestartableServer(app)
    await server.start()            # a free port the first time
    ...
    await server.stop()             # websockets are closed (1012), the lifespan ends
    await server.start()            # the same port: clients reconnect to the same URL
    await server.stop()

``async with RestartableServer(app) as server:`` starts it and stops it at the end. Start and
stop are bounded in time (``timeout``) and fail loudly rather than hang.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn

from tests.support.ports import free_port

__all__ = ["RestartableServer"]


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, started: asyncio.Event) -> None:
        super().__init__(config)
        self._started = started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._started.set()


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR: connections of the previous run may sit in TIME_WAIT on this port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class RestartableServer:
    """Serves ``app`` with uvicorn in a task of the running loop; ``config`` goes to uvicorn."""

    def __init__(self, app: Any, *, timeout: float = 10.0, **config: Any) -> None:
        self.app = app
        self.timeout = timeout
        self.config = {"log_level": "warning", "timeout_graceful_shutdown": 2, **config}
        self.port = 0
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the server is running; stop() it first")
        # The first start takes a port outside the ephemeral range, so that no client's
        # outgoing connection can hold it while the server is stopped (tests/support/ports.py).
        self._sock = _bind(self.port or free_port())
        self.port = self._sock.getsockname()[1]
        started = asyncio.Event()
        self._server = _Server(uvicorn.Config(self.app, **self.config), started)
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[self._sock])
        )
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait(
                {self._task, waiter}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if not started.is_set():
            task = self._task
            await self.stop()
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError("uvicorn failed to start") from task.exception()
            raise TimeoutError(f"uvicorn did not start within {self.timeout}s")

    async def stop(self) -> None:
        server, task, sock = self._server, self._task, self._sock
        self._server = self._task = self._sock = None
        try:
            if server is not None and task is not None:
                server.should_exit = True
                try:
                    await asyncio.wait_for(asyncio.shield(task), self.timeout)
                except (asyncio.TimeoutError, TimeoutError):
                    server.force_exit = True
                    task.cancel()
                    await asyncio.wait([task])
                    raise TimeoutError(f"uvicorn did not stop within {self.timeout}s") from None
        finally:
            if sock is not None:
                sock.close()

    async def __aenter__(self) -> RestartableServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
