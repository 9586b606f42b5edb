"""Sanic's private surface (tbone.dispatch._private.sanic) is where it was tested.

Fails when the installed Sanic moves what the prepared-frame path reads of its websocket
object: update the module (and its TESTED) first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sanic

from tbone.dispatch._private import sanic as private
from tbone.dispatch.events import Event
from tests.support.web_servers import new_sanic_app, sanic_server, ws_connect

EVENT = Event("e", {"n": 1}, "1-1", "c")


async def test_sanics_websocket_has_the_surface_and_takes_prepared_frames() -> None:
    found: dict[str, Any] = {}
    app = new_sanic_app("private")

    @app.websocket("/ws")
    async def handler(request: Any, ws: Any) -> None:
        found.update(
            problem=private.surface_problem(ws),
            transport=private.transport(ws),
            finished=private.handler_finished(ws),
            written=private.write_now(ws, EVENT.wire(None)),
        )
        await ws.recv()

    async with sanic_server(app) as url, ws_connect(url.replace("http", "ws") + "/ws") as client:
        text = await asyncio.wait_for(client.recv(), 5)
        await client.send("bye")
    assert found["problem"] is None, sanic.__version__
    assert found["transport"] is not None
    assert found["finished"] is False
    assert found["written"] is True
    assert text == EVENT.frame


def test_an_object_without_the_surface_is_named() -> None:
    assert private.surface_problem(object()) == (
        "its websocket has no ws_proto, io_proto, conn_mutex, data_finished_fut"
    )
