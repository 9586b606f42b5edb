"""Starlette's private surface (tbone.dispatch._private.starlette) is where it was tested.

Fails when the installed Starlette moves ``WebSocket._send`` or its exception-handling wrapper
of ``send``: update the module (and its TESTED) before releasing on that Starlette.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import starlette
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tbone.dispatch._private import starlette as private


def test_the_installed_starlette_has_the_surface() -> None:
    assert private.surface_problem() is None, starlette.__version__


async def test_a_websockets_send_unwraps_to_the_servers_own() -> None:
    seen: dict[str, Any] = {}

    async def endpoint(websocket: WebSocket) -> None:
        seen["wrapped"] = private.websocket_send(websocket)
        seen["unwrapped"] = private.unwrap_send(seen["wrapped"])
        await websocket.close()

    messages: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "websocket.connect"}

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    await app(scope, receive, send)
    assert seen["wrapped"] is not send  # Starlette really wraps it
    assert seen["unwrapped"] is send
    assert [m["type"] for m in messages] == ["websocket.close"]


def test_anything_but_a_starlette_websocket_has_no_send_to_take() -> None:
    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    assert private.websocket_send(send) is None
    assert private.unwrap_send(send) is send  # an application's own wrapper is kept
