"""The apps the ASGI tests serve, and a small websocket client for them.

``build(kind, **options)`` gives ``(app, ws_path)`` for each way of mounting the endpoint:

* ``starlette``: ``Starlette(routes=[channel_route("/ws", ...)], lifespan=channels_lifespan())``
* ``fastapi``: ``FastAPI(lifespan=...)`` with ``app.router.routes.append(channel_route(...))``
* ``middleware``: a bare ASGI app wrapped by ``ChannelMiddleware(path="/ws")``
* ``mount``: the middleware-wrapped bare app inside a Starlette ``Mount("/sub")`` (root_path)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from tbone_asgi import ChannelMiddleware, channel_route, channels_lifespan

__all__ = ["KINDS", "Client", "bare_app", "build", "connect"]

KINDS = ["starlette", "fastapi", "middleware", "mount"]


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI app: lifespan, 'bare app' over http, and it refuses websockets."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        body = f"bare app {scope['path']}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": body})
    else:
        await receive()
        await send({"type": "websocket.close", "code": 1000})


def build(kind: str, channel: Any = "pubsub", **options: Any) -> tuple[Any, str]:
    """The app of ``kind`` serving ``channel`` with endpoint ``options``; and the ws path."""
    if kind == "starlette":
        app = Starlette(
            routes=[channel_route("/ws", channel, **options)], lifespan=channels_lifespan()
        )
        return app, "/ws"
    if kind == "fastapi":
        from fastapi import FastAPI

        fast = FastAPI(lifespan=channels_lifespan())
        fast.router.routes.append(channel_route("/ws", channel, **options))
        return fast, "/ws"
    if kind == "middleware":
        return ChannelMiddleware(bare_app, path="/ws", channel=channel, **options), "/ws"
    if kind == "mount":
        inner = ChannelMiddleware(bare_app, path="/ws", channel=channel, **options)
        return Starlette(routes=[Mount("/sub", app=inner)], lifespan=channels_lifespan()), "/sub/ws"
    raise ValueError(kind)


class Client:
    """A ``websockets`` client speaking the subscribe protocol, every wait bounded."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, frame: Any) -> None:
        await self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> Any:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def subscribe(self, *events: str, since: str | None = None) -> list[Any]:
        payload: dict[str, Any] = {"events": list(events)}
        if since is not None:
            payload["since"] = since
        await self.send({"type": "subscribe", "payload": payload})
        return await self.sync()

    async def sync(self) -> list[Any]:
        """Ping and return the frames received before the pong (the protocol keeps order)."""
        await self.send({"type": "ping"})
        frames = []
        for _ in range(10_000):
            frame = await self.recv()
            if frame == {"type": "pong"}:
                return frames
            frames.append(frame)
        raise AssertionError("no pong after 10,000 frames")

    async def closed_with(self, timeout: float = 5.0, limit: int = 100_000) -> int | None:
        """Read (at most ``limit`` frames) until the server closes; return its close code."""
        try:
            for _ in range(limit):
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
        raise AssertionError(f"still open after {limit} frames")


def connect(url: str, **options: Any) -> Any:
    """``websockets.connect`` with bounded handshake and close."""
    options.setdefault("open_timeout", 5)
    options.setdefault("close_timeout", 2)
    return websockets.connect(url, **options)
