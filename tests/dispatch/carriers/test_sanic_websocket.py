"""SanicWebSocketCarrier on a real Sanic server, with real ``websockets`` clients."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

# Sanic is a test dependency (the "all" extra): a missing one fails the run, never skips it.
from tbone.dispatch import MemoryChannel
from tbone.dispatch.carriers.sanic_websocket import SanicWebSocketCarrier
from tbone.dispatch.testing import RecordingCarrier
from tests.support.web_servers import (
    assert_no_tracebacks,
    new_sanic_app,
    one_client_stops_reading,
    sanic_server,
    small_buffer_socket,
    wait_until,
    ws_connect,
)

EVENT = "resource_create"


def ws_url(base: str, path: str = "/ws") -> str:
    return base.replace("http://", "ws://") + path


def seed_app() -> Any:
    """The seed's Sanic example, as written, with a MemoryChannel and ``app.ctx``."""
    app = new_sanic_app()

    async def resource_event_websocket(request: Any, ws: Any) -> None:
        # Create the channel - using the Memory implementation
        request.app.ctx.pubsub = MemoryChannel(name="pubsub")
        # Subscribe to the 'resource_create' event, passing the websocket instance, wrapped in
        # a Carrier subclass.
        request.app.ctx.pubsub.subscribe("resource_create", SanicWebSocketCarrier(ws))
        while True:
            await ws.recv()
        request.app.ctx.pubsub.unsubscribe("resource_create", SanicWebSocketCarrier(ws))

    app.add_websocket_route(resource_event_websocket, "/ws")
    return app


def test_the_seeds_app_attribute_is_refused_by_sanic_hence_ctx() -> None:
    app = new_sanic_app()
    with pytest.raises(AttributeError, match=r"ctx\.pubsub"):
        app.pubsub = MemoryChannel(name="pubsub")


def docs_app() -> Any:
    """The working form in docs/carriers.md: the unsubscribe runs when the client leaves."""
    app = new_sanic_app()

    async def resource_event_websocket(request: Any, ws: Any) -> None:
        request.app.ctx.pubsub = MemoryChannel(name="pubsub")
        request.app.ctx.pubsub.subscribe("resource_create", SanicWebSocketCarrier(ws))
        try:
            while True:
                await ws.recv()
        finally:
            request.app.ctx.pubsub.unsubscribe("resource_create", SanicWebSocketCarrier(ws))

    app.add_websocket_route(resource_event_websocket, "/ws")
    return app


def event_payloads(texts: list[Any]) -> list[Any]:
    frames = [json.loads(t) for t in texts]
    assert all(f["type"] == "event" for f in frames), frames
    return [f["payload"] for f in frames]


async def recv_json(client: Any, n: int) -> list[Any]:
    return [json.loads(await asyncio.wait_for(client.recv(), 5)) for _ in range(n)]


def carrier_of(carriers: list[SanicWebSocketCarrier], client: Any) -> SanicWebSocketCarrier:
    """The server-side carrier of ``client`` (matched by the client's port)."""
    port = client.local_address[1]
    (found,) = [
        c for c in carriers if c.connection.io_proto.transport.get_extra_info("peername")[1] == port
    ]
    return found


async def test_seed_example_delivers_events_in_order_to_every_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    channel = MemoryChannel(name="pubsub")
    async with (
        sanic_server(seed_app()) as base,
        ws_connect(ws_url(base)) as one,
        ws_connect(ws_url(base)) as two,
    ):
        await wait_until(lambda: len(channel.subscribers(EVENT)) == 2, what="2 subscribers")
        published = [await channel.publish(EVENT, {"pk": i}) for i in range(5)]
        await channel.publish("resource_delete", {"pk": 0})  # nobody subscribed to it
        for client in (one, two):
            frames = await recv_json(client, 5)
            assert frames == [e.to_dict() for e in published]
            assert [f["payload"]["data"] for f in frames] == [{"pk": i} for i in range(5)]
            assert frames[0]["payload"]["channel"] == "pubsub"
    assert_no_tracebacks(caplog)


async def test_seed_example_drops_a_client_that_left_on_the_next_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    channel = MemoryChannel(name="pubsub")
    watcher = RecordingCarrier()
    channel.subscribe(EVENT, watcher)
    async with sanic_server(seed_app()) as base, ws_connect(ws_url(base)) as staying:
        async with ws_connect(ws_url(base)):
            await wait_until(lambda: len(channel.subscribers(EVENT)) == 3)
        # The seed's handler never reaches its unsubscribe: the closed websocket is found
        # by the next send, which Sanic refuses with WebsocketClosed.
        gone = channel.subscribers(EVENT)[2]
        await wait_until(lambda: gone.connection.ws_proto.state.name == "CLOSED")
        await channel.publish(EVENT, {"pk": 1})
        assert (await recv_json(staying, 1))[0]["payload"]["data"] == {"pk": 1}
        await wait_until(lambda: gone.closed, what="the departed client is dropped")
        assert channel.subscribers(EVENT) == [watcher, channel.subscribers(EVENT)[1]]
        assert channel.stats()["dropped"] == 1
    assert_no_tracebacks(caplog)


async def test_unsubscribe_with_a_new_carrier_object_takes_effect() -> None:
    channel = MemoryChannel(name="pubsub")
    app = new_sanic_app()
    unsubscribed = []

    async def handler(request: Any, ws: Any) -> None:
        request.app.ctx.pubsub = MemoryChannel(name="pubsub")
        request.app.ctx.pubsub.subscribe("resource_create", SanicWebSocketCarrier(ws))
        while await ws.recv() != "stop":
            pass
        # A new carrier object for the same ws finds the subscription made above.
        unsubscribed.append(
            request.app.ctx.pubsub.unsubscribe("resource_create", SanicWebSocketCarrier(ws))
        )
        await ws.send("unsubscribed")
        await ws.recv()
        await ws.send("bye")

    app.add_websocket_route(handler, "/ws")
    watcher = RecordingCarrier()
    channel.subscribe(EVENT, watcher)
    async with sanic_server(app) as base, ws_connect(ws_url(base)) as client:
        await wait_until(lambda: len(channel.subscribers(EVENT)) == 2)
        await channel.publish(EVENT, 1)
        assert (await recv_json(client, 1))[0]["payload"]["data"] == 1
        await client.send("stop")
        assert await asyncio.wait_for(client.recv(), 5) == "unsubscribed"
        assert unsubscribed == [True]
        assert channel.subscribers(EVENT) == [watcher]
        await channel.publish(EVENT, 2)
        await watcher.wait_for(2)  # the event was fanned out: the client would have it queued
        await client.send("done")
        assert await asyncio.wait_for(client.recv(), 5) == "bye"  # and not event 2


async def test_docs_form_unsubscribes_when_the_client_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    channel = MemoryChannel(name="pubsub")
    async with sanic_server(docs_app()) as base:
        async with ws_connect(ws_url(base)) as client:
            await wait_until(lambda: len(channel.subscribers(EVENT)) == 1)
            await channel.publish(EVENT, {"pk": 7})
            assert (await recv_json(client, 1))[0]["payload"]["data"] == {"pk": 7}
        await wait_until(lambda: channel.subscribers(EVENT) == [], what="unsubscribed on close")
        assert channel.stats()["dropped"] == 0  # it left through unsubscribe, not a failed send
    assert_no_tracebacks(caplog)


async def test_client_that_vanishes_without_a_close_frame_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    channel = MemoryChannel(name="pubsub")
    async with sanic_server(seed_app()) as base:
        client = await ws_connect(ws_url(base))
        await wait_until(lambda: len(channel.subscribers(EVENT)) == 1)
        carrier = channel.subscribers(EVENT)[0]
        client.transport.abort()  # TCP reset: no close frame
        await wait_until(lambda: carrier.connection.ws_proto.state.name == "CLOSED")
        # A carrier sending to it now gets False from Sanic's WebsocketClosed, not an exception.
        assert await SanicWebSocketCarrier(carrier.connection).deliver({"pk": 0}) is False
        await channel.publish(EVENT, 1)
        await wait_until(lambda: carrier.closed, what="the vanished client is dropped")
        assert channel.subscribers(EVENT) == []
        assert channel.stats()["dropped"] == 1
    assert_no_tracebacks(caplog)


def test_carrier_refuses_what_is_not_a_sanic_websocket() -> None:
    with pytest.raises(TypeError, match="async def handler\\(request, ws\\)"):
        SanicWebSocketCarrier(object())


async def test_carrier_points_sanic_on_asgi_to_the_middleware() -> None:
    from sanic.server.websockets.connection import WebSocketConnection

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent")

    async def receive() -> Any:
        raise AssertionError("nothing is read")

    with pytest.raises(TypeError, match="ChannelMiddleware"):
        SanicWebSocketCarrier(WebSocketConnection(send, receive))


async def test_a_client_that_stops_reading_is_closed_with_1013_and_others_get_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    limit = 256 * 1024
    channel = MemoryChannel(name="pubsub")
    carriers: list[SanicWebSocketCarrier] = []
    app = new_sanic_app()

    async def handler(request: Any, ws: Any) -> None:
        carrier = SanicWebSocketCarrier(ws, max_bytes=limit, slow_timeout=0.5)
        carriers.append(carrier)
        channel.subscribe(EVENT, carrier)
        while True:
            await ws.recv()

    app.add_websocket_route(handler, "/ws")
    async with sanic_server(app) as base:
        peak = await one_client_stops_reading(ws_url(base), channel, carriers, carrier_of, EVENT)
    # Server memory stays bounded: the transport never held more than the limit.
    assert peak <= limit + 8 * 1024
    assert_no_tracebacks(caplog)


async def test_a_client_that_never_reads_again_is_aborted_after_close_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    channel = MemoryChannel(name="pubsub")
    carriers: list[Any] = []
    transports: list[Any] = []
    app = new_sanic_app()

    async def handler(request: Any, ws: Any) -> None:
        carrier = SanicWebSocketCarrier(
            ws, max_bytes=128 * 1024, slow_timeout=0.3, close_timeout=0.3
        )
        carriers.append(carrier)
        transports.append(ws.io_proto.transport)
        channel.subscribe(EVENT, carrier)
        while True:
            await ws.recv()

    app.add_websocket_route(handler, "/ws")
    blob = "x" * 4000
    async with (
        sanic_server(app) as base,
        ws_connect(
            ws_url(base), compression=None, max_queue=4, sock=small_buffer_socket(base)
        ) as stuck,
    ):
        await wait_until(lambda: len(carriers) == 1)
        carrier = carriers[0]
        transport = transports[0]
        watcher = RecordingCarrier()  # fan-out reached it: the stuck carrier was offered it too
        channel.subscribe(EVENT, watcher)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0  # bounded: the slow rule closes it within 0.3 s behind
        n = 0
        while not carrier.closed and loop.time() < deadline:
            await channel.publish(EVENT, {"n": n, "blob": blob})
            n += 1
            if n % 20 == 0:
                await watcher.wait_for(n)
        assert carrier.close_code == 1013
        # The close frame waits behind unread bytes; after close_timeout the TCP connection
        # is aborted and what the server buffered for this client is freed.
        await wait_until(transport.is_closing, timeout=5, what="transport aborted")
        assert transport.get_write_buffer_size() == 0
        stuck.transport.abort()
    assert_no_tracebacks(caplog)
