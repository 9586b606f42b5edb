"""The subscribe protocol on a real Sanic server (add_route, serve), with real clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tbone.dispatch import MemoryChannel
from tbone.dispatch.carriers.sanic_websocket import add_route, serve
from tests.support.protocol_cases import (
    ProtocolCases,
    assert_bad_route_options_raise,
    refused_with_403,
    refused_with_1008,
)
from tests.support.web_servers import (
    assert_a_silent_peer_is_dropped,
    new_sanic_app,
    sanic_server,
    wait_until,
    ws_connect,
)


def ws_url(base: str, path: str = "/ws") -> str:
    return base.replace("http://", "ws://") + path


async def test_sanic_pings_and_drops_a_peer_that_stops_answering() -> None:
    channel = MemoryChannel(name="pubsub")
    app = new_sanic_app()
    # Sanic's own websocket keepalive; the defaults are 20 s each.
    app.config.WEBSOCKET_PING_INTERVAL = 0.2
    app.config.WEBSOCKET_PING_TIMEOUT = 0.2
    add_route(app, "/ws", channel)
    async with sanic_server(app) as base:
        await assert_a_silent_peer_is_dropped(ws_url(base), channel)


async def test_add_route_checks_connect_time_events_once_before_the_upgrade() -> None:
    channel = MemoryChannel(name="pubsub")
    asked: list[tuple[str, str]] = []

    async def authorize(request: Any, event: str) -> bool:
        asked.append((request.path, event))
        return event != "secret"

    app = new_sanic_app()
    add_route(app, "/ws", channel, authorize=authorize)
    async with sanic_server(app) as base:
        await refused_with_403(ws_url(base) + "?events=tick,secret")
        assert asked == [("/ws", "tick"), ("/ws", "secret")]
        assert channel.stats()["subscriptions"] == 0
        asked.clear()
        async with ws_connect(ws_url(base) + "?events=tick,tock") as client:
            await client.send('{"type": "ping"}')
            assert json.loads(await asyncio.wait_for(client.recv(), 5)) == {"type": "pong"}
            assert asked == [("/ws", "tick"), ("/ws", "tock")]  # once each, not again inside
            await channel.publish("tock", 1)
            assert json.loads(await asyncio.wait_for(client.recv(), 5))["payload"]["data"] == 1


class GatedChannel(MemoryChannel):
    """A MemoryChannel whose history read waits for the test (a slow backend)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reading = asyncio.Event()
        self.gate = asyncio.Event()

    async def history_page(self, since: str | None, *, limit: int, max_bytes: int) -> Any:
        self.reading.set()
        await self.gate.wait()
        return await super().history_page(since, limit=limit, max_bytes=max_bytes)


async def test_a_client_that_leaves_during_its_resume_leaves_no_subscription() -> None:
    channel = GatedChannel(name="gated")
    first = await channel.publish("tick", 0)
    app = new_sanic_app()
    add_route(app, "/ws", channel)
    async with sanic_server(app) as base:
        connecting = asyncio.ensure_future(
            ws_connect(ws_url(base) + f"?events=tick&since={first.id}")
        )
        await asyncio.wait_for(channel.reading.wait(), 5)
        # resume() subscribes before it reads history: the connection is on the channel now.
        assert channel.stats()["subscribers"] == 1
        client = await connecting
        client.transport.abort()
        # Sanic cancels the handler; the half-made subscription goes with it, history unread.
        await wait_until(lambda: channel.stats()["subscribers"] == 0, what="subscription cleared")
        channel.gate.set()


def test_add_route_rejects_bad_options_when_the_app_is_built() -> None:
    app = new_sanic_app()
    assert_bad_route_options_raise(add_route, app)
    assert list(app.router.routes) == []


async def test_serve_checks_its_options_before_it_reads_the_connection() -> None:
    with pytest.raises(ValueError, match="slow_timeout must be more than 0"):
        await serve(None, None, "pubsub", slow_timeout=0)


def routed(channel: Any, **options: Any) -> Any:
    """A Sanic app serving ``channel`` through add_route."""
    app = new_sanic_app()
    add_route(app, "/ws", channel, **options)
    return app


def handled(channel: Any, **options: Any) -> Any:
    """A Sanic app serving ``channel`` through serve() in a websocket handler of its own."""
    app = new_sanic_app()

    async def handler(request: Any, ws: Any) -> None:
        await serve(request, ws, channel, **options)

    app.add_websocket_route(handler, "/ws")
    return app


class TestProtocolOnSanic(ProtocolCases):
    """Through add_route: a bad Origin or a refused connect-time subscription gets HTTP 403
    before the upgrade, as on ASGI servers."""

    app = staticmethod(routed)
    run = staticmethod(sanic_server)
    refused = staticmethod(refused_with_403)


class TestProtocolOnSanicThroughServe(ProtocolCases):
    """serve() called from the user's own handler, which Sanic calls after the upgrade: a
    refusal is an error frame and close code 1008."""

    app = staticmethod(handled)
    run = staticmethod(sanic_server)
    refused = staticmethod(refused_with_1008)


async def test_every_client_gets_each_events_plain_frame_built_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Sanic negotiates no compression: every connection takes the same plain frame, built
    # once per event (tbone.dispatch.wire) and written as it is, among ordinary frames.
    from tbone.dispatch import wire
    from tbone.dispatch.channels import MAX_MESSAGE_BYTES

    built: list[int] = []
    text_frame = wire.text_frame
    monkeypatch.setattr(
        wire, "text_frame", lambda data, **kw: built.append(len(data)) or text_frame(data, **kw)
    )
    shapes: list[Any] = ["", "ASCII", "é ß 漢字 🙂", "y" * 65536, "x" * (MAX_MESSAGE_BYTES - 3)]
    channel = MemoryChannel(name="pubsub")
    app = new_sanic_app()
    app.config.WEBSOCKET_MAX_SIZE = 2 * MAX_MESSAGE_BYTES
    add_route(app, "/ws", channel)
    async with sanic_server(app) as base:
        clients = [
            await ws_connect(ws_url(base) + "?events=e", max_size=2 * MAX_MESSAGE_BYTES)
            for _ in range(5)
        ]
        try:
            for client in clients:
                await client.send('{"type": "ping"}')
                assert json.loads(await asyncio.wait_for(client.recv(), 5)) == {"type": "pong"}
            assert all(c._prepared is not None for c in channel.subscribers("e"))
            sent = [await channel.publish("e", data) for data in shapes]
            for client in clients:
                await client.send("not json")
            sent += [await channel.publish("e", data) for data in shapes]
            for client in clients:
                got = [json.loads(await asyncio.wait_for(client.recv(), 5)) for _ in range(11)]
                events = [f["payload"] for f in got if f["type"] == "event"]
                assert [e["id"] for e in events] == [e.id for e in sent]
                assert [e["data"] for e in events] == shapes * 2
                assert [f["type"] for f in got if f["type"] != "event"] == ["error"]
        finally:
            for client in clients:
                await client.close()
    assert len(built) == len(sent)  # once per event, not once per client
