"""A test subscriber over a real ``websockets`` connection: what it read, and how it closed."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.exceptions import ConnectionClosed

from tbone.dispatch import jsonenc
from tests.support.web_servers import ws_connect

__all__ = ["Subscriber"]


class Subscriber:
    """One websocket client: ``frames`` (decoded, in order), ``ids`` of its events, ``close_code``.

    ``await Subscriber.connect(url)`` opens it (no compression, no keepalive pings: the tests
    measure the protocol, not zlib) and :meth:`read_until` reads it.
    """

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[Any] = []
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, url: str, timeout: float = 20.0) -> Subscriber:
        ws = await asyncio.wait_for(
            ws_connect(url, compression=None, ping_interval=None, open_timeout=timeout), timeout
        )
        return cls(ws)

    @property
    def ids(self) -> list[str]:
        return [f["payload"]["id"] for f in self.frames if f["type"] == "event"]

    @property
    def recovered(self) -> list[Any]:
        return [f["payload"] for f in self.frames if f["type"] == "recovered"]

    async def read_until(self, done: Any, timeout: float = 20.0) -> None:
        """Read frames until ``done(self)`` is true or the connection closes; bounded in time."""

        async def loop() -> None:
            while not done(self):
                try:
                    text = await self.ws.recv()
                except ConnectionClosed as closed:
                    self.close_code = closed.rcvd.code if closed.rcvd is not None else None
                    return
                self.frames.append(jsonenc.loads(text))

        await asyncio.wait_for(loop(), timeout)

    async def read_events(self, count: int, timeout: float = 20.0) -> None:
        await self.read_until(lambda s: len(s.ids) >= count, timeout)

    async def read_until_closed(self, timeout: float = 20.0) -> None:
        await self.read_until(lambda s: False, timeout)

    def cut(self) -> None:
        """Drop the TCP connection without a close handshake (a network failure)."""
        self.ws.transport.abort()

    async def close(self) -> None:
        await self.ws.close()
