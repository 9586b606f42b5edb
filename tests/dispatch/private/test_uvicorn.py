"""uvicorn's private surface (tbone.dispatch._private.uvicorn) is where it was tested.

Fails when the installed uvicorn no longer hands the app a bound method of a protocol that
holds ``transport`` and ``config``, or when its websockets-sansio protocol loses what
``tbone_asgi.uvicorn.WebSocketProtocol`` uses: update the module (and its TESTED) first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

from tbone.dispatch._private import uvicorn as private
from tests.support.asgi_server import run_uvicorn
from tests.support.web_servers import ws_connect


async def test_the_protocol_behind_send_holds_the_transport_and_the_config() -> None:
    found: dict[str, Any] = {}
    served = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        protocol = private.server_protocol(send)
        found.update(
            protocol=protocol,
            uvicorn=private.is_uvicorn(protocol),
            max_size=private.ws_max_size(protocol),
            transport=private.transport_of(send),
            problem=private.protocol_problem(protocol),
        )
        served.set()
        await send({"type": "websocket.close", "code": 1000})

    async with (
        run_uvicorn(app, ws="websockets-sansio", ws_max_size=12345) as server,
        ws_connect(server.url.replace("http", "ws") + "/ws") as client,
    ):
        await asyncio.wait_for(served.wait(), 5)
        await client.wait_closed()
    assert found["uvicorn"], uvicorn.__version__
    assert found["max_size"] == 12345
    assert found["transport"] is found["protocol"].transport
    assert found["transport"].get_write_buffer_size() == 0
    assert found["problem"] is None


def test_a_protocol_without_the_surface_is_named() -> None:
    class Elsewhere:
        conn = transport = close_sent = handshake_complete = initial_response = config = None
        queue = loop = close_timer = close_timeout = None

    assert private.protocol_problem(Elsewhere()) == "its protocol has no writable"
    assert private.server_protocol(print) is None
    assert not private.is_uvicorn(None)
