"""Prepared frames on uvicorn (tbone_asgi.uvicorn): every client decodes every event exactly.

One channel, one server, clients of every kind at once: no compression, permessage-deflate
as websockets (and browsers) offer it, ``server_max_window_bits`` 9 to 15, and
``client_no_context_takeover``. Events of every shape (empty, ASCII, non-ASCII, 64 KiB, at
the channel's size limit) arrive in order, exactly, with the connection's ordinary frames
(pongs, error frames, ``recovered``) in between; each event's frame is built once per
variant, whatever the number of clients; the close handshake still ends with the right code.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Opcode

from tbone.dispatch import MemoryChannel, wire
from tbone_asgi import channel_route
from tbone_asgi.uvicorn import EXTENSION, WebSocketProtocol, surface_problem
from tests.support.asgi_server import RunningServer, run_uvicorn, wait_until
from tests.support.prepared import KINDS, NAME, SHAPES, frames, negotiated, open_clients

# What each kind negotiates with the server's 12-bit window: the frame variant it is written.
VARIANTS = {None, 9, 10, 11, 12}


@pytest.fixture
async def served() -> AsyncIterator[tuple[MemoryChannel, RunningServer]]:
    channel = MemoryChannel(name="prepared")
    app = Starlette(routes=[channel_route("/ws", channel)])
    async with run_uvicorn(app, ws=WebSocketProtocol, ws_per_message_deflate=True) as server:
        yield channel, server


async def test_every_client_decodes_every_event_with_ordinary_frames_in_between(
    served: tuple[MemoryChannel, RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    channel, server = served
    built: list[int] = []
    deflate = wire.deflate
    monkeypatch.setattr(
        wire, "deflate", lambda data, bits: built.append(bits) or deflate(data, bits)
    )
    # Text frames websockets' own deflate encoder compressed, per extension object (the
    # clients run in this process too: only the server's objects are counted, below).
    encoded: dict[int, int] = {}
    encode = PerMessageDeflate.encode

    def counting_encode(self: PerMessageDeflate, frame: Any) -> Any:
        if frame.opcode is Opcode.TEXT:
            encoded[id(self)] = encoded.get(id(self), 0) + 1
        return encode(self, frame)

    monkeypatch.setattr(PerMessageDeflate, "encode", counting_encode)
    clients = await open_clients(server.ws_url(f"/ws?events={NAME}"))
    server_side = [
        id(extension) for protocol in server.connections() for extension in protocol.conn.extensions
    ]
    try:
        assert {negotiated(c) for c in clients.values()} == VARIANTS
        for client in clients.values():  # subscribed: its pong comes after the subscription
            await client.send('{"type": "ping"}')
            assert await frames(client, 1) == [{"type": "pong"}]
        first = [await channel.publish(NAME, data) for data in SHAPES]
        for client in clients.values():
            await client.send('{"type": "ping"}')  # answered among events
        second = [await channel.publish(NAME, data) for data in SHAPES]
        for client in clients.values():
            await client.send("not json")  # an error frame among events
        third = [await channel.publish(NAME, data) for data in SHAPES]
        for kind, client in clients.items():
            got = await frames(client, 3 * len(SHAPES) + 2)
            events = [f["payload"] for f in got if f["type"] == "event"]
            assert [e["data"] for e in events] == SHAPES * 3, kind
            assert [e["id"] for e in events] == [e.id for e in first + second + third], kind
            others = [f["type"] for f in got if f["type"] != "event"]
            assert others == ["pong", "error"], kind
            # Each answer comes after the events published before its request was read.
            assert got.index({"type": "pong"}) >= len(SHAPES), kind
        # A resume among live events: the replay, "recovered", then live, on every client.
        for client in clients.values():
            await client.send(
                json.dumps(
                    {"type": "subscribe", "payload": {"events": [NAME], "since": first[-1].id}}
                )
            )
        for kind, client in clients.items():
            got = await frames(client, 2 * len(SHAPES) + 1)
            assert [f["payload"]["id"] for f in got[:-1]] == [e.id for e in second + third], kind
            assert got[-1] == {
                "type": "recovered",
                "payload": {"channel": channel.name, "complete": True},
            }
        last = await channel.publish(NAME, "live again")
        for client in clients.values():
            assert (await frames(client, 1))[0]["payload"]["id"] == last.id
    finally:
        for client in clients.values():
            await client.close()
    events = 3 * len(SHAPES) + 1
    # Built once per event and per deflated variant (4 window sizes), not once per client.
    assert len(built) == events * len(VARIANTS - {None})
    # No event went through uvicorn's per-connection compressor: only the ordinary frames
    # (2 pongs, an error, a "recovered") of the 9 compressing clients did.
    assert len(server_side) == len(KINDS) - 1
    assert sum(encoded.get(key, 0) for key in server_side) == 4 * (len(KINDS) - 1)


async def test_the_extension_says_what_each_connection_negotiated(
    served: tuple[MemoryChannel, RunningServer],
) -> None:
    channel, server = served
    clients = await open_clients(server.ws_url(f"/ws?events={NAME}"))
    try:
        await wait_until(lambda: channel.stats()["subscribers"] == len(KINDS))
        carriers = channel.subscribers(NAME)
        assert all(c.prepared for c in carriers)
        protocols = server.connections()
        assert len(protocols) == len(KINDS)
        windows = sorted((p.scope["extensions"][EXTENSION]["window_bits"] or 0) for p in protocols)
        assert windows == sorted(negotiated(c) or 0 for c in clients.values())
        # Every deflate answer says server_no_context_takeover, asked for or not.
        for kind, client in clients.items():
            header = client.response.headers.get("Sec-WebSocket-Extensions")
            assert (header is None) == (KINDS[kind] is None), kind
            if header is not None:
                assert "server_no_context_takeover" in header, kind
    finally:
        for client in clients.values():
            await client.close()


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_close_codes_after_prepared_frames(compression: str | None) -> None:
    channel = MemoryChannel(name="closing")
    app = Starlette(routes=[channel_route("/ws", channel)])
    async with run_uvicorn(app, ws=WebSocketProtocol, ws_per_message_deflate=True) as server:
        url = server.ws_url(f"/ws?events={NAME}")

        async def connected() -> ClientConnection:
            client = await connect(url, compression=compression, proxy=None)
            await client.send('{"type": "ping"}')
            assert await frames(client, 1) == [{"type": "pong"}]
            await channel.publish(NAME, "prepared")
            assert (await frames(client, 1))[0]["payload"]["data"] == "prepared"
            return client

        async def close_code(client: ClientConnection) -> int | None:
            while True:
                try:
                    await asyncio.wait_for(client.recv(), 10)
                except ConnectionClosed as closed:
                    return None if closed.rcvd is None else closed.rcvd.code

        # 1000: the client closes; the server answers, and the handshake completes.
        client = await connected()
        await asyncio.wait_for(client.close(), 10)
        assert client.close_code == 1000
        # 1008: a client that keeps sending bad frames.
        client = await connected()
        for _ in range(10):
            await client.send("{")
        assert await close_code(client) == 1008
        # 1001: the channel closes (the app shuts down).
        client = await connected()
        await channel.close()
        assert await close_code(client) == 1001


async def test_an_app_that_does_not_ask_for_it_runs_as_on_stock_uvicorn() -> None:
    # An echo websocket of another app on the same server: uvicorn's own frames, deflated.
    async def echo(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert EXTENSION in scope["extensions"]  # offered; this app simply does not use it
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message["text"] * 2})

    async with (
        run_uvicorn(echo, ws=WebSocketProtocol, ws_per_message_deflate=True) as server,
        connect(server.ws_url("/"), proxy=None) as client,
    ):
        for text in ("a", "é" * 3000, ""):
            await client.send(text)
            assert await asyncio.wait_for(client.recv(), 5) == text * 2


def test_a_uvicorn_without_the_surface_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    # A uvicorn whose protocol lacks what the module reaches into: named, and never used.
    class Elsewhere:
        conn = None
        transport = None
        close_sent = False
        handshake_complete = False
        initial_response = None
        config = None
        queue = loop = close_timer = close_timeout = None

    assert surface_problem(Elsewhere()) == "its protocol has no writable"


async def test_a_protocol_without_the_surface_serves_as_stock(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tbone_asgi import uvicorn as module

    monkeypatch.setattr(module, "_SURFACE", (*module._SURFACE, "a_newer_attribute"))
    monkeypatch.setattr(module, "_warned", False)
    channel = MemoryChannel(name="fallback")
    app = Starlette(routes=[channel_route("/ws", channel)])
    with caplog.at_level(logging.WARNING, "tbone_asgi"):
        async with run_uvicorn(app, ws=WebSocketProtocol, ws_per_message_deflate=True) as server:
            clients = [
                await connect(server.ws_url(f"/ws?events={NAME}"), proxy=None) for _ in range(2)
            ]
            try:
                await wait_until(lambda: channel.stats()["subscribers"] == 2)
                assert not any(c.prepared for c in channel.subscribers(NAME))
                sent = await channel.publish(NAME, "stock")
                for client in clients:
                    assert (await frames(client, 1))[0]["payload"]["id"] == sent.id
            finally:
                for client in clients:
                    await client.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "tbone_asgi"]
    assert len(warnings) == 1
    assert "a_newer_attribute" in warnings[0]
    assert "serving as uvicorn's own websockets-sansio protocol" in warnings[0]


async def test_a_peer_that_vanishes_mid_burst_costs_nothing_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One of three deflate clients drops its TCP connection (RST) while a burst is written
    # to it as prepared frames: it leaves every channel without a traceback, nothing is kept
    # for it, and the other two get every event in order.
    from tbone.dispatch import carriers

    channel = MemoryChannel(name="vanishing")
    app = Starlette(routes=[channel_route("/ws", channel)])
    url_path = f"/ws?events={NAME}"
    async with run_uvicorn(app, ws=WebSocketProtocol, ws_per_message_deflate=True) as server:
        clients = [
            await connect(server.ws_url(url_path), proxy=None, max_queue=None) for _ in range(3)
        ]
        try:
            await wait_until(lambda: channel.stats()["subscribers"] == 3)
            before = carriers.live_connections()
            blob = "z" * 2000
            sent = []
            for i in range(2000):
                sent.append(await channel.publish(NAME, {"i": i, "blob": blob}))
                if i == 500:
                    clients[0].transport.abort()  # gone, mid-write
            for client in clients[1:]:
                got = await frames(client, len(sent))
                assert [f["payload"]["id"] for f in got] == [e.id for e in sent]
            await wait_until(lambda: channel.stats()["subscribers"] == 2)
            await wait_until(lambda: len(server.connections()) == 2)
            assert carriers.live_connections() == before - 1
        finally:
            for client in clients[1:]:
                await client.close()
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert noisy == [], [r.getMessage() for r in noisy]


async def test_stock_uvicorn_says_once_how_to_turn_prepared_frames_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tbone_asgi import endpoint

    monkeypatch.setattr(endpoint, "_prepared_advised", False)
    channel = MemoryChannel(name="stock")
    app = Starlette(routes=[channel_route("/ws", channel)])
    with caplog.at_level(logging.INFO, "tbone_asgi"):
        async with run_uvicorn(app) as server:
            clients = [
                await connect(server.ws_url(f"/ws?events={NAME}"), proxy=None) for _ in range(2)
            ]
            try:
                await wait_until(lambda: channel.stats()["subscribers"] == 2)
                assert not any(c.prepared for c in channel.subscribers(NAME))
            finally:
                for client in clients:
                    await client.close()
    advice = [r.getMessage() for r in caplog.records if "tbone_asgi.uvicorn" in r.getMessage()]
    assert len(advice) == 1, advice
    assert "--ws tbone_asgi.uvicorn:WebSocketProtocol" in advice[0]
