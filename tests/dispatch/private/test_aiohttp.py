"""aiohttp's private surface (tbone.dispatch._private.aiohttp) is where it was tested.

Fails when the installed aiohttp moves its websocket writer (``_writer``) or what the
prepared-frame path reads of it: update the module (and its TESTED) first.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from tbone.dispatch._private import aiohttp as private
from tbone.dispatch.events import Event
from tests.support.web_servers import aiohttp_server

EVENT = Event("e", {"n": 1}, "1-1", "c")


async def test_a_prepared_response_has_the_writer_and_takes_prepared_frames() -> None:
    found: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        found.update(
            problem=private.surface_problem(ws),
            variant=private.frame_variant(ws),
            transport=private.transport(ws),
            written=private.write_now(ws, EVENT.wire(None)),
        )
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with (
        aiohttp_server(app) as url,
        aiohttp.ClientSession() as session,
        session.ws_connect(url + "/ws", compress=0) as client,
    ):
        message = await client.receive(timeout=5)
    assert found["problem"] is None, aiohttp.__version__
    assert found["variant"] is None  # no deflate asked: plain frames
    assert found["transport"] is not None
    assert found["written"] is True
    assert message.data == EVENT.frame


def test_a_response_without_the_writer_is_named() -> None:
    assert private.surface_problem(object()) == "its WebSocketResponse has no _writer"
    assert private.transport(object()) is None
