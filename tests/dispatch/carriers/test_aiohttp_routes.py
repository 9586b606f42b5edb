"""The subscribe protocol on a real aiohttp server (serve, add_route), with real clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tbone.dispatch import MemoryChannel
from tbone.dispatch.carriers import aiohttp_routes, aiohttp_websocket
from tbone.dispatch.carriers.aiohttp_websocket import add_route, serve
from tests.support.protocol_cases import ProtocolCases, Start, refused_with_403
from tests.support.web_servers import aiohttp_server, wait_until, ws_connect


def ws_url(base: str, path: str = "/ws") -> str:
    return base.replace("http://", "ws://") + path


def app_with(handler: Any) -> web.Application:
    app = web.Application()
    app.router.add_get("/ws", handler)
    return app


def test_the_glue_is_importable_from_the_carrier_module() -> None:
    assert aiohttp_websocket.serve is aiohttp_routes.serve
    assert aiohttp_websocket.add_route is aiohttp_routes.add_route
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        aiohttp_websocket.nothing  # noqa: B018 - the attribute access is the test


async def test_serve_pings_and_drops_a_peer_that_stops_answering() -> None:
    channel = MemoryChannel(name="pubsub")

    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve(request, channel, heartbeat=0.2)

    async with aiohttp_server(app_with(handler)) as base:
        client = await ws_connect(ws_url(base) + "?events=tick")
        await client.send('{"type": "ping"}')
        assert json.loads(await asyncio.wait_for(client.recv(), 5)) == {"type": "pong"}
        assert channel.stats()["subscribers"] == 1
        # A peer that vanished without a FIN (cable pulled) reads and answers nothing.
        client.transport.pause_reading()
        await wait_until(
            lambda: channel.stats()["subscribers"] == 0, timeout=3, what="dropped by heartbeat"
        )
        client.transport.abort()


async def test_add_route_registers_a_named_get_route_with_its_heartbeat() -> None:
    channel = MemoryChannel(name="pubsub")
    app = web.Application()
    add_route(app, "/feed/ws", channel, name="feed", heartbeat=0.2, events=["tick"])
    assert str(app.router["feed"].url_for()) == "/feed/ws"
    async with aiohttp_server(app) as base, aiohttp.ClientSession() as session:
        async with session.head(base + "/feed/ws") as head:
            assert head.status == 405  # no HEAD route: it cannot become a websocket
        client = await ws_connect(ws_url(base, "/feed/ws"))
        await client.send('{"type": "ping"}')
        assert json.loads(await asyncio.wait_for(client.recv(), 5)) == {"type": "pong"}
        await channel.publish("tick", 1)  # the route's fixed events, at connect
        assert json.loads(await asyncio.wait_for(client.recv(), 5))["payload"]["data"] == 1
        client.transport.pause_reading()
        await wait_until(
            lambda: channel.stats()["subscribers"] == 0, timeout=3, what="dropped by heartbeat"
        )
        client.transport.abort()


def test_add_route_rejects_bad_options_when_the_app_is_built() -> None:
    app = web.Application()
    with pytest.raises(ValueError, match="scheme://host"):
        add_route(app, "/ws", "pubsub", allowed_origins=["not an origin"])
    with pytest.raises(ValueError, match="invalid event names"):
        add_route(app, "/ws", "pubsub", events=["bad name!"])
    with pytest.raises(TypeError, match="Channel or a channel name"):
        add_route(app, "/ws", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_mesages'"):
        add_route(app, "/ws", "pubsub", max_mesages=10)  # type: ignore[call-arg]
    assert list(app.router.routes()) == []


class TestProtocolOnAiohttp(ProtocolCases):
    """serve() in a handler: the checks run before the upgrade, so refusals are HTTP 403."""

    origin_refused = staticmethod(refused_with_403)
    subscription_refused = staticmethod(refused_with_403)

    @pytest.fixture
    def start(self) -> Start:
        @asynccontextmanager
        async def run(channel: Any, **options: Any) -> AsyncIterator[str]:
            async def handler(request: web.Request) -> web.StreamResponse:
                return await serve(request, channel, **options)

            async with aiohttp_server(app_with(handler)) as base:
                yield ws_url(base)

        return run


class TestProtocolOnAiohttpAddRoute(TestProtocolOnAiohttp):
    """add_route(): the same protocol, the route registered for you."""

    @pytest.fixture
    def start(self) -> Start:
        @asynccontextmanager
        async def run(channel: Any, **options: Any) -> AsyncIterator[str]:
            app = web.Application()
            add_route(app, "/ws", channel, **options)
            async with aiohttp_server(app) as base:
                yield ws_url(base)

        return run
