"""docs/carriers.md's Python examples run as written, on real servers with real clients."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tbone.dispatch import MemoryChannel
from tests.support.web_servers import (
    aiohttp_server,
    new_sanic_app,
    sanic_server,
    wait_until,
    ws_connect,
)

DOC = Path(__file__).parents[3] / "docs" / "carriers.md"
EVENT = "resource_create"


def run_block(marker: str) -> dict[str, Any]:
    """Execute the one Python block of the doc that contains ``marker``; return its names."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if marker in b]
    assert len(blocks) == 1, f"{len(blocks)} blocks of docs/carriers.md contain {marker!r}"
    namespace: dict[str, Any] = {"__name__": "carriers_doc"}
    exec(compile(blocks[0], f"{DOC}:{marker}", "exec"), namespace)
    return namespace


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


async def recv_data(client: Any) -> Any:
    frame = json.loads(await asyncio.wait_for(client.recv(), 5))
    assert frame["type"] == "event", frame
    return frame["payload"]["data"]


async def test_the_sanic_example_delivers_and_unsubscribes_when_the_client_leaves() -> None:
    handler = run_block("async def resource_event_websocket(request, ws)")[
        "resource_event_websocket"
    ]
    channel = MemoryChannel(name="pubsub")
    app = new_sanic_app()
    app.add_websocket_route(handler, "/ws")
    async with sanic_server(app) as base:
        async with ws_connect(ws_url(base, "/ws")) as client:
            await wait_until(lambda: len(channel.subscribers(EVENT)) == 1)
            await channel.publish(EVENT, {"pk": 1})
            assert await recv_data(client) == {"pk": 1}
        # The finally's unsubscribe, with a new carrier object, ran when the client left.
        await wait_until(lambda: channel.subscribers(EVENT) == [], what="unsubscribed")
        assert channel.stats()["dropped"] == 0
        assert app.ctx.pubsub is channel


async def test_the_sanic_protocol_example_serves_both_routes() -> None:
    names = run_block("from sanic import Sanic")
    app = names["app"]
    channel = MemoryChannel(name="pubsub")
    async with sanic_server(app) as base:
        async with ws_connect(ws_url(base, "/ws")) as fixed:  # resource_create at connect
            await fixed.send('{"type": "ping"}')
            assert json.loads(await asyncio.wait_for(fixed.recv(), 5)) == {"type": "pong"}
            await channel.publish(EVENT, 1)
            assert await recv_data(fixed) == 1
        async with ws_connect(ws_url(base, "/ws/all") + "?events=anything") as everything:
            await everything.send('{"type": "ping"}')
            assert json.loads(await asyncio.wait_for(everything.recv(), 5)) == {"type": "pong"}
            await channel.publish("anything", 2)
            assert await recv_data(everything) == 2
    from sanic import Sanic

    Sanic._app_registry.pop(app.name, None)


async def test_the_aiohttp_example_runs_as_written() -> None:
    handler = run_block("async def websocket_handler(request)")["websocket_handler"]
    channel = MemoryChannel(name="pubsub")
    app = web.Application()
    app.router.add_get("/ws", handler)
    async with (
        aiohttp_server(app) as base,
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(base, "/ws")) as client,
    ):
        await wait_until(lambda: len(channel.subscribers(EVENT)) == 1)
        await channel.publish(EVENT, {"pk": 1})
        frame = json.loads(await client.receive_str(timeout=5))
        assert frame["payload"]["data"] == {"pk": 1}


async def test_the_aiohttp_protocol_example_checks_the_origin_and_serves_both_routes() -> None:
    app = run_block("app.router.add_get")["app"]
    channel = MemoryChannel(name="pubsub")
    async with aiohttp_server(app) as base, aiohttp.ClientSession() as session:
        url = ws_url(base, "/ws") + "?events=tick"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url, origin="https://evil.example")
        assert refused.value.status == 403
        async with session.ws_connect(url, origin="https://shop.example") as client:
            await client.send_str('{"type": "ping"}')
            assert json.loads(await client.receive_str(timeout=5)) == {"type": "pong"}
            await channel.publish("tick", 3)
            assert json.loads(await client.receive_str(timeout=5))["payload"]["data"] == 3
        async with session.ws_connect(ws_url(base, "/ws/all") + "?events=anything") as client:
            await client.send_str('{"type": "ping"}')
            assert json.loads(await client.receive_str(timeout=5)) == {"type": "pong"}
            await channel.publish("anything", 4)
            assert json.loads(await client.receive_str(timeout=5))["payload"]["data"] == 4


async def test_the_custom_carrier_example_on_a_websockets_server() -> None:
    from websockets.asyncio.server import serve

    carrier_class = run_block("class WebsocketsCarrier(Carrier)")["WebsocketsCarrier"]
    channel = MemoryChannel(name="pubsub")
    carriers: list[Any] = []

    async def handler(ws: Any) -> None:
        carrier = carrier_class(ws)
        carriers.append(carrier)
        channel.subscribe(EVENT, carrier)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with ws_connect(f"ws://127.0.0.1:{port}") as client:
            await wait_until(lambda: len(carriers) == 1)
            assert carriers[0].backlog() == 0
            for i in range(3):
                await channel.publish(EVENT, i)
            assert [await recv_data(client) for _ in range(3)] == [0, 1, 2]
        # The peer is gone: the library's ConnectionClosed becomes False, and no exception.
        await wait_until(lambda: carriers[0].connection.state.name == "CLOSED")
        assert await carrier_class(carriers[0].connection).deliver({"pk": 0}) is False


async def test_the_carrier_with_no_connection_gets_events(
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = run_block("class Collect(Carrier)")
    pubsub = names["pubsub"]
    await pubsub.ready()
    await pubsub.publish(EVENT, {"pk": 7})
    printed: list[str] = []

    def shown() -> bool:
        printed.append(capsys.readouterr().out)
        return "{'pk': 7}" in "".join(printed)

    await wait_until(shown, what="the printed data")
