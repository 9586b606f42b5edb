"""AioHttpWebSocketCarrier on a real aiohttp server, with aiohttp's and ``websockets`` clients."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tbone.dispatch import MemoryChannel
from tbone.dispatch.carriers.aiohttp_websocket import AioHttpWebSocketCarrier
from tbone.dispatch.testing import RecordingCarrier
from tests.support.web_servers import (
    aiohttp_server,
    assert_no_tracebacks,
    one_client_stops_reading,
    small_buffer_socket,
    wait_until,
    ws_connect,
)

EVENT = "resource_create"


def ws_url(base: str, path: str = "/ws") -> str:
    return base.replace("http://", "ws://") + path


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    """The seed's aiohttp example, as written, with a MemoryChannel."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)

    # Create the channel - using the Memory implementation
    request.app.pubsub = MemoryChannel(name="pubsub")
    # Subscribe to the 'resource_create' event, passing the websocket instance, wrapped in a
    # Carrier subclass.
    request.app.pubsub.subscribe("resource_create", AioHttpWebSocketCarrier(ws))  # type: ignore[attr-defined]

    async for msg in ws:  # noqa: B007 - the seed's loop: it only keeps the connection open
        ...

    return ws


def seed_app(handler: Any = websocket_handler) -> web.Application:
    app = web.Application()
    app.router.add_get("/ws", handler)
    return app


async def recv_json(ws: Any, n: int) -> list[Any]:
    return [json.loads(await ws.receive_str(timeout=5)) for _ in range(n)]


def carrier_of(carriers: list[AioHttpWebSocketCarrier], client: Any) -> AioHttpWebSocketCarrier:
    """The server-side carrier of a ``websockets`` client (matched by the client's port)."""
    port = client.local_address[1]
    (found,) = [c for c in carriers if c.connection.get_extra_info("peername")[1] == port]
    return found


async def test_seed_example_delivers_events_in_order_to_every_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    channel = MemoryChannel(name="pubsub")
    async with (
        aiohttp_server(seed_app()) as base,
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(base)) as one,
        ws_connect(ws_url(base)) as two,
    ):
        await wait_until(lambda: len(channel.subscribers(EVENT)) == 2, what="2 subscribers")
        published = [await channel.publish(EVENT, {"pk": i}) for i in range(5)]
        await channel.publish("resource_delete", {"pk": 0})  # nobody subscribed to it
        assert await recv_json(one, 5) == [e.to_dict() for e in published]
        frames = [json.loads(await asyncio.wait_for(two.recv(), 5)) for _ in range(5)]
        assert frames == [e.to_dict() for e in published]
        assert frames[4]["payload"] == {
            "name": EVENT,
            "data": {"pk": 4},
            "id": published[4].id,
            "channel": "pubsub",
        }
    assert_no_tracebacks(caplog)


async def test_seed_example_drops_a_client_that_left_on_the_next_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    channel = MemoryChannel(name="pubsub")
    watcher = RecordingCarrier()
    channel.subscribe(EVENT, watcher)
    async with aiohttp_server(seed_app()) as base, aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url(base)):
            await wait_until(lambda: len(channel.subscribers(EVENT)) == 2)
        # The seed's handler has no unsubscribe: the closed response is found by the next send.
        gone = channel.subscribers(EVENT)[1]
        await wait_until(lambda: gone.connection.closed, what="aiohttp saw the close")
        await channel.publish(EVENT, {"pk": 1})
        await watcher.wait_for(1)
        await wait_until(lambda: gone.closed, what="the departed client is dropped")
        assert channel.subscribers(EVENT) == [watcher]
        assert channel.stats()["dropped"] == 1
    assert_no_tracebacks(caplog)


async def test_unsubscribe_with_a_new_carrier_object_takes_effect() -> None:
    channel = MemoryChannel(name="pubsub")
    unsubscribed = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        channel.subscribe("resource_create", AioHttpWebSocketCarrier(ws))
        async for msg in ws:
            if msg.data == "stop":
                # A new carrier object for the same ws finds the subscription made above.
                unsubscribed.append(
                    channel.unsubscribe("resource_create", AioHttpWebSocketCarrier(ws))
                )
                await ws.send_str("unsubscribed")
            elif msg.data == "done":
                await ws.send_str("bye")
        return ws

    watcher = RecordingCarrier()
    channel.subscribe(EVENT, watcher)
    async with (
        aiohttp_server(seed_app(handler)) as base,
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(base)) as client,
    ):
        await wait_until(lambda: len(channel.subscribers(EVENT)) == 2)
        await channel.publish(EVENT, 1)
        assert (await recv_json(client, 1))[0]["payload"]["data"] == 1
        await client.send_str("stop")
        assert await client.receive_str(timeout=5) == "unsubscribed"
        assert unsubscribed == [True]
        assert channel.subscribers(EVENT) == [watcher]
        await channel.publish(EVENT, 2)
        await watcher.wait_for(2)  # the event was fanned out: the client would have it queued
        await client.send_str("done")
        assert await client.receive_str(timeout=5) == "bye"  # and not event 2


async def test_client_that_vanishes_without_a_close_frame_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    channel = MemoryChannel(name="pubsub")
    async with aiohttp_server(seed_app()) as base:
        client = await ws_connect(ws_url(base))
        await wait_until(lambda: len(channel.subscribers(EVENT)) == 1)
        carrier = channel.subscribers(EVENT)[0]
        client.transport.abort()  # TCP reset: no close frame
        await wait_until(lambda: carrier.connection.closed, what="aiohttp saw the reset")
        # A carrier sending to it now gets False from aiohttp's closed flag, not an exception.
        assert await AioHttpWebSocketCarrier(carrier.connection).deliver({"pk": 0}) is False
        await channel.publish(EVENT, 1)
        await wait_until(lambda: carrier.closed, what="the vanished client is dropped")
        assert channel.subscribers(EVENT) == []
        assert channel.stats()["dropped"] == 1
    assert_no_tracebacks(caplog)


async def test_a_reset_seen_only_by_the_transport_is_a_clean_drop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    channel = MemoryChannel(name="pubsub")
    transports: list[Any] = []
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        # Never reads the socket, so aiohttp never sets the response's closed flag: the send
        # itself meets the closing transport (ClientConnectionResetError).
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        transports.append(request.transport)
        channel.subscribe(EVENT, AioHttpWebSocketCarrier(ws))
        await release.wait()
        return ws

    async with aiohttp_server(seed_app(handler)) as base:
        client = await ws_connect(ws_url(base))
        await wait_until(lambda: len(channel.subscribers(EVENT)) == 1)
        carrier = channel.subscribers(EVENT)[0]
        client.transport.abort()
        await wait_until(lambda: transports[0].is_closing(), what="the server saw the reset")
        assert not carrier.connection.closed
        await channel.publish(EVENT, 1)
        await wait_until(lambda: carrier.closed, what="dropped on the failed send")
        assert channel.stats()["dropped"] == 1
        release.set()
    assert_no_tracebacks(caplog)


async def test_carrier_refuses_what_is_not_a_websocket_response() -> None:
    with pytest.raises(TypeError, match=r"await ws\.prepare\(request\)"):
        AioHttpWebSocketCarrier(web.Response())  # type: ignore[arg-type]


async def test_an_unprepared_response_is_refused_with_a_hint() -> None:
    carrier = AioHttpWebSocketCarrier(web.WebSocketResponse())
    with pytest.raises(RuntimeError, match=r"await ws\.prepare\(request\)"):
        await carrier.send_text("{}")


async def test_a_client_that_stops_reading_is_closed_with_1013_and_others_get_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # Above what aiohttp buffers itself (about 270 KiB): the slow rule closes the client, not
    # the server-buffer rule (which a smaller max_bytes would make a hard limit).
    limit = 512 * 1024
    channel = MemoryChannel(name="pubsub")
    carriers: list[AioHttpWebSocketCarrier] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        carrier = AioHttpWebSocketCarrier(ws, max_bytes=limit, slow_timeout=0.5)
        carriers.append(carrier)
        channel.subscribe(EVENT, carrier)
        async for _ in ws:
            pass
        return ws

    async with aiohttp_server(seed_app(handler)) as base:
        peak = await one_client_stops_reading(ws_url(base), channel, carriers, carrier_of, EVENT)
    # aiohttp's send returns before the bytes leave: backlog() found them in its transport,
    # and they never passed the limit (server memory stays bounded).
    assert 0 < peak <= limit + 8 * 1024
    assert_no_tracebacks(caplog)


async def test_a_client_that_never_reads_again_is_aborted_after_close_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    channel = MemoryChannel(name="pubsub")
    carriers: list[Any] = []
    transports: list[Any] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        carrier = AioHttpWebSocketCarrier(
            ws, max_bytes=128 * 1024, slow_timeout=0.3, close_timeout=0.3
        )
        carriers.append(carrier)
        transports.append(request.transport)
        channel.subscribe(EVENT, carrier)
        async for _ in ws:
            pass
        return ws

    blob = "x" * 4000
    async with (
        aiohttp_server(seed_app(handler)) as base,
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
