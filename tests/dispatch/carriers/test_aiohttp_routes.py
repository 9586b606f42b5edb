"""The subscribe protocol on a real aiohttp server (serve, add_route), with real clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
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


async def test_every_client_decodes_each_events_frame_built_once_per_variant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Clients of every kind on one channel: each event's frame is built once per variant
    # (plain, and deflated per window: aiohttp takes the window the client asks, 15 else),
    # never by aiohttp's per-connection compressor, and decodes exactly, among ordinary frames.
    from aiohttp._websocket.writer import WebSocketWriter

    from tbone.dispatch import wire
    from tests.support.prepared import KINDS, NAME, SHAPES, frames, negotiated, open_clients

    built: list[int] = []
    deflate = wire.deflate
    monkeypatch.setattr(
        wire, "deflate", lambda data, bits: built.append(bits) or deflate(data, bits)
    )
    compressed = 0  # messages aiohttp's own compressor sent (the server's writers only)
    own = WebSocketWriter._send_compressed_frame_sync

    def counting(self: Any, message: bytes, opcode: int, compress: int | None) -> None:
        nonlocal compressed
        compressed += 1
        own(self, message, opcode, compress)

    monkeypatch.setattr(WebSocketWriter, "_send_compressed_frame_sync", counting)
    # Not a client that asks server_max_window_bits=15: aiohttp leaves the parameter out of
    # its answer (15 is the default) and websockets refuses that, with or without this
    # package (stock aiohttp 3.14 and websockets 17 fail the same handshake).
    kinds = {k: v for k, v in KINDS.items() if k != "server-window-15"}
    channel = MemoryChannel(name="pubsub")
    app = web.Application()
    add_route(app, "/ws", channel)
    async with aiohttp_server(app) as base:
        clients = await open_clients(ws_url(base) + f"?events={NAME}", kinds)
        try:
            windows = {negotiated(c) for c in clients.values()}
            assert windows == {None, *range(9, 16)}
            for kind, client in clients.items():
                header = client.response.headers.get("Sec-WebSocket-Extensions")
                if kinds[kind] is not None:  # every deflate answer: no context takeover
                    assert "server_no_context_takeover" in header, kind
                await client.send('{"type": "ping"}')
                assert await frames(client, 1) == [{"type": "pong"}]
            sent = [await channel.publish(NAME, data) for data in SHAPES]
            for client in clients.values():
                await client.send("not json")  # an error frame among events
            sent += [await channel.publish(NAME, data) for data in SHAPES]
            for kind, client in clients.items():
                got = await frames(client, 2 * len(SHAPES) + 1)
                events = [f["payload"] for f in got if f["type"] == "event"]
                assert [e["id"] for e in events] == [e.id for e in sent], kind
                assert [e["data"] for e in events] == SHAPES * 2, kind
                assert [f["type"] for f in got if f["type"] != "event"] == ["error"], kind
        finally:
            for client in clients.values():
                await client.close()
    assert len(built) == len(sent) * 7  # once per event and per window, not per client
    assert compressed == 2 * (len(kinds) - 1)  # a pong and an error per compressing client
