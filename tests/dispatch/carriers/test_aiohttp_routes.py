"""The subscribe protocol on a real aiohttp server (serve, add_route), with real clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

from tbone.dispatch import MemoryChannel
from tbone.dispatch.carriers.aiohttp_websocket import add_route, serve
from tests.support.protocol_cases import (
    ProtocolCases,
    assert_bad_route_options_raise,
    refused_with_403,
)
from tests.support.web_servers import aiohttp_server, assert_a_silent_peer_is_dropped, ws_connect


def ws_url(base: str, path: str = "/ws") -> str:
    return base.replace("http://", "ws://") + path


def app_with(handler: Any) -> web.Application:
    app = web.Application()
    app.router.add_get("/ws", handler)
    return app


async def test_serve_pings_and_drops_a_peer_that_stops_answering() -> None:
    channel = MemoryChannel(name="pubsub")

    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve(request, channel, heartbeat=0.2)

    async with aiohttp_server(app_with(handler)) as base:
        await assert_a_silent_peer_is_dropped(ws_url(base), channel)


async def test_add_route_registers_a_named_get_route_with_its_options() -> None:
    channel = MemoryChannel(name="pubsub")
    app = web.Application()
    add_route(app, "/feed/ws", channel, name="feed", heartbeat=0.2, events=["tick"])
    assert str(app.router["feed"].url_for()) == "/feed/ws"
    async with aiohttp_server(app) as base, aiohttp.ClientSession() as session:
        async with session.head(base + "/feed/ws") as head:
            assert head.status == 405  # no HEAD route: it cannot become a websocket
        async with ws_connect(ws_url(base, "/feed/ws")) as client:
            await client.send('{"type": "ping"}')
            assert json.loads(await asyncio.wait_for(client.recv(), 5)) == {"type": "pong"}
            await channel.publish("tick", 1)  # the route's fixed events, at connect
            assert json.loads(await asyncio.wait_for(client.recv(), 5))["payload"]["data"] == 1
        await assert_a_silent_peer_is_dropped(ws_url(base, "/feed/ws"), channel)


def test_add_route_rejects_bad_options_when_the_app_is_built() -> None:
    app = web.Application()
    assert_bad_route_options_raise(add_route, app)
    assert list(app.router.routes()) == []


def handled(channel: Any, **options: Any) -> web.Application:
    """An aiohttp app serving ``channel`` through serve() in a handler of its own."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve(request, channel, **options)

    return app_with(handler)


def routed(channel: Any, **options: Any) -> web.Application:
    """An aiohttp app serving ``channel`` through add_route."""
    app = web.Application()
    add_route(app, "/ws", channel, **options)
    return app


class TestProtocolOnAiohttp(ProtocolCases):
    """serve() in a handler: the checks run before the upgrade, so refusals are HTTP 403."""

    app = staticmethod(handled)
    run = staticmethod(aiohttp_server)
    refused = staticmethod(refused_with_403)


class TestProtocolOnAiohttpAddRoute(TestProtocolOnAiohttp):
    """add_route(): the same protocol, the route registered for you."""

    app = staticmethod(routed)
