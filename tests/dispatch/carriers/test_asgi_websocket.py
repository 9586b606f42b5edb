"""ASGIWebSocketCarrier on real servers: the seed's usage, gone peers, and backpressure.

Backpressure is shown per server (uvicorn with each websocket implementation, Hypercorn): a
client that reads nothing is closed with 1013 while another keeps receiving, and what the
server buffers for it stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tbone.dispatch import MemoryChannel
from tbone.dispatch.carriers.asgi_websocket import ASGIWebSocketCarrier, find_transport
from tbone_asgi import channel_route
from tbone_asgi.uvicorn import WebSocketProtocol
from tests.support.asgi_server import RunningServer, run_hypercorn, run_uvicorn, wait_until
from tests.tbone_asgi.apps import Client, connect

# -- identity and setup --------------------------------------------------------------------------


async def test_carriers_of_one_connection_are_equal() -> None:
    async def send(message: Any) -> None:
        pass

    async def other(message: Any) -> None:
        pass

    assert ASGIWebSocketCarrier(send) == ASGIWebSocketCarrier(send)
    assert hash(ASGIWebSocketCarrier(send)) == hash(ASGIWebSocketCarrier(send))
    assert ASGIWebSocketCarrier(send) != ASGIWebSocketCarrier(other)
    with pytest.raises(TypeError, match="ASGI send callable"):
        ASGIWebSocketCarrier(42)


def test_disconnect_errors_cover_each_server() -> None:
    errors = ASGIWebSocketCarrier.disconnect_errors
    assert issubclass(WebSocketDisconnect, errors)
    from uvicorn.protocols.utils import ClientDisconnected

    assert issubclass(ClientDisconnected, errors)


def test_find_transport_follows_wrappers() -> None:
    class Transport:
        def get_write_buffer_size(self) -> int:
            return 7

    class Protocol:
        transport = Transport()

        async def send(self, message: Any) -> None:
            pass

    proto = Protocol()
    raw = proto.send

    def wrap(inner: Any) -> Any:
        async def sender(message: Any) -> None:
            await inner(message)

        return sender

    assert find_transport(raw) is proto.transport
    assert find_transport(wrap(wrap(raw))) is proto.transport
    assert find_transport(wrap(wrap(raw)), depth=1) is None
    assert ASGIWebSocketCarrier(wrap(raw)).backlog() == 7

    async def plain(message: Any) -> None:
        pass

    assert find_transport(plain) is None
    assert ASGIWebSocketCarrier(plain).backlog() == 0


# -- the seed's way, with a Starlette WebSocket --------------------------------------------------


async def test_seed_style_endpoint_with_a_starlette_websocket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pubsub = MemoryChannel(name="pubsub")
    unsubscribed: list[bool] = []

    async def resource_event_websocket(websocket: WebSocket) -> None:
        await websocket.accept()
        pubsub.subscribe("resource_create", ASGIWebSocketCarrier(websocket))
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        # A new carrier for the same websocket finds the first one.
        unsubscribed.append(pubsub.unsubscribe("resource_create", ASGIWebSocketCarrier(websocket)))

    app = Starlette(routes=[WebSocketRoute("/ws", resource_event_websocket)])
    async with run_uvicorn(app) as server:
        async with connect(server.ws_url("/ws")) as ws:
            await wait_until(lambda: pubsub.stats()["subscribers"] == 1)
            for pk in range(3):
                await pubsub.publish("resource_create", {"pk": pk})
            frames = [await Client(ws).recv() for _ in range(3)]
            assert [f["payload"]["data"]["pk"] for f in frames] == [0, 1, 2]
        await wait_until(lambda: unsubscribed == [True])
    assert pubsub.stats()["subscribers"] == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_gone_peer_is_dropped_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pubsub = MemoryChannel(name="pubsub")
    release = asyncio.Event()

    async def endpoint(websocket: WebSocket) -> None:
        # Never reads: only a failing send can tell this endpoint that the peer left.
        await websocket.accept()
        pubsub.subscribe("a", ASGIWebSocketCarrier(websocket))
        await release.wait()

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    async with run_uvicorn(app) as server:
        async with connect(server.ws_url("/ws")) as ws:
            await wait_until(lambda: pubsub.stats()["subscribers"] == 1)
            ws.transport.abort()
        await wait_until(lambda: not server.connections())  # uvicorn saw the connection go
        await pubsub.publish("a", "to nobody")
        await wait_until(lambda: pubsub.stats()["subscribers"] == 0)
        assert pubsub.stats()["dropped"] == 1
        release.set()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_starlette_websocket_must_be_accepted_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pubsub = MemoryChannel(name="pubsub")
    done = asyncio.Event()

    async def endpoint(websocket: WebSocket) -> None:
        pubsub.subscribe("a", ASGIWebSocketCarrier(websocket))  # too early
        await pubsub.publish("a", 1)
        await wait_until(lambda: pubsub.stats()["subscribers"] == 0)
        await websocket.close()
        done.set()

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    async with run_uvicorn(app) as server:
        with pytest.raises(websockets.InvalidStatus):
            async with connect(server.ws_url("/ws")):
                pass
        await asyncio.wait_for(done.wait(), 5)
    assert "await websocket.accept() before subscribing" in caplog.text
    assert pubsub.stats()["dropped"] == 1


@pytest.mark.parametrize(
    ("server_name", "sent"),
    [("uvicorn-default", False), ("uvicorn-wsproto", False), ("hypercorn", True)],
)
async def test_sending_after_the_client_closed_is_quiet(
    server_name: str, sent: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn answers a send after the close with an OSError or a RuntimeError (both mean
    gone: False); Hypercorn drops it silently (True), so only reading tells the app there."""
    results: list[bool] = []
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        assert (await receive())["type"] == "websocket.disconnect"
        carrier = ASGIWebSocketCarrier(send)
        results.append(await carrier.deliver_text('{"type":"pong"}'))
        await carrier.close(1000)  # closing again is quiet too
        done.set()

    async with SERVERS[server_name](app) as server:
        async with connect(server.ws_url("/ws")):
            pass  # a clean close from the client
        await asyncio.wait_for(done.wait(), 5)
    assert results == [sent]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


# -- backpressure --------------------------------------------------------------------------------

FRAME = "x" * 4000  # clients turn compression off, so these are 4 KB on the wire
MAX_BYTES = 128 * 1024  # holds a burst of BATCH frames: the consumer offers them at once
BATCH = 10
SLOW_TIMEOUT = 0.5  # a client behind that sends nothing this long is closed with 1013

Serve = Callable[[Any], AbstractAsyncContextManager[RunningServer]]
SERVERS: dict[str, Serve] = {
    "uvicorn-default": lambda app: run_uvicorn(app),
    "uvicorn-prepared": lambda app: run_uvicorn(app, ws=WebSocketProtocol),
    "uvicorn-websockets": lambda app: run_uvicorn(app, ws="websockets"),
    "uvicorn-wsproto": lambda app: run_uvicorn(app, ws="wsproto"),
    "hypercorn": lambda app: run_hypercorn(app),
}


async def _stalled_client(server: RunningServer, path: str) -> Any:
    """A websocket client that will stop reading: tiny receive buffer, one-frame queue."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.wait_for(
        asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port)), 5
    )
    return await connect(
        server.ws_url(path), sock=sock, max_queue=1, ping_interval=None, compression=None
    )


@pytest.mark.parametrize("server_name", list(SERVERS))
async def test_a_client_that_reads_nothing_is_closed_1013(server_name: str) -> None:
    channel = MemoryChannel(name="pubsub")
    app = Starlette(
        routes=[
            channel_route(
                "/ws", "pubsub", max_bytes=MAX_BYTES, slow_timeout=SLOW_TIMEOUT, close_timeout=10
            )
        ]
    )
    async with (
        SERVERS[server_name](app) as server,
        connect(server.ws_url("/ws?events=big"), compression=None) as good,
    ):
        slow = await _stalled_client(server, "/ws?events=big")
        try:
            assert await Client(slow).sync() == []
            assert await Client(good).sync() == []
            # On tbone_asgi.uvicorn's protocol, events go out as prepared frames.
            prepared = [c.prepared for c in channel.subscribers("big")]
            assert prepared == [server_name == "uvicorn-prepared"] * 2
            received = 0
            wanted = asyncio.Event()
            target = 0

            async def read_good() -> None:
                nonlocal received
                async for _ in good:
                    received += 1
                    if received >= target:
                        wanted.set()

            reader = asyncio.ensure_future(read_good())
            peak = seen_backlog = 0
            published = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SLOW_TIMEOUT * 1.25 + 10.0  # the slow rule closes it first
            try:
                while loop.time() < deadline:
                    for _ in range(BATCH):
                        await channel.publish("big", FRAME)
                    published += BATCH
                    target = published
                    wanted.clear()
                    if received < target:
                        await asyncio.wait_for(wanted.wait(), 10)
                    peak = max([peak, *server.write_buffer_sizes()])
                    seen_backlog = max(
                        [seen_backlog] + [c.backlog() for c in channel.subscribers("big")]
                    )
                    if channel.stats()["closed_slow"]:
                        break
                assert channel.stats()["closed_slow"] == 1, f"not closed after {published} frames"
                # The good client kept up all along and still receives.
                for _ in range(20):
                    await channel.publish("big", FRAME)
                target = published + 20
                wanted.clear()
                if received < target:
                    await asyncio.wait_for(wanted.wait(), 10)
                assert received == published + 20
                assert channel.stats()["subscribers"] == 1
            finally:
                reader.cancel()
                await asyncio.wait([reader])
            # What the server held for the stalled client stayed bounded: our outbox's limit
            # plus the transport's high-water mark (64 KiB) and one frame.
            assert 0 < peak <= MAX_BYTES + 64 * 1024 + len(FRAME) + 1024, peak
            # uvicorn lets the carrier read the transport's buffer (counted against max_bytes);
            # Hypercorn does not expose it, but its send waits for the buffer to drain.
            if server_name.startswith("uvicorn"):
                assert seen_backlog > 0
            else:
                assert seen_backlog == 0
            # Once it reads again, the stalled client finds the 1013 after what was buffered.
            code = await Client(slow).closed_with(timeout=15)
            assert code == 1013
        finally:
            slow.transport.abort()


@pytest.mark.parametrize("ws", ["auto", "prepared"])
async def test_a_stuck_client_is_aborted_after_close_timeout(ws: str) -> None:
    """The 1013 close frame cannot pass a full buffer: after close_timeout the TCP goes."""
    channel = MemoryChannel(name="pubsub")
    app = Starlette(
        routes=[
            channel_route(
                "/ws", "pubsub", max_bytes=MAX_BYTES, slow_timeout=SLOW_TIMEOUT, close_timeout=0.3
            )
        ]
    )
    async with run_uvicorn(app, ws=WebSocketProtocol if ws == "prepared" else ws) as server:
        stuck = await _stalled_client(server, "/ws?events=big")
        try:
            assert await Client(stuck).sync() == []
            assert [c.prepared for c in channel.subscribers("big")] == [ws == "prepared"]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SLOW_TIMEOUT * 1.25 + 10.0  # the slow rule closes it first
            while loop.time() < deadline:
                for _ in range(BATCH):
                    last = await channel.publish("big", FRAME)
                delivered = last.id
                # The condition is awaited within this iteration: the late binding is harmless.
                await wait_until(lambda: channel.stats()["last_id"] == delivered)  # noqa: B023
                if channel.stats()["closed_slow"]:
                    break
            assert channel.stats()["closed_slow"] == 1
            assert channel.stats()["subscribers"] == 0
            # uvicorn forgets a connection once its transport is gone: the abort freed it.
            await wait_until(lambda: not server.connections(), timeout=5)
            assert await Client(stuck).closed_with(timeout=15) in (None, 1006)
        finally:
            stuck.transport.abort()


# -- the send frames go through ------------------------------------------------------------------


def test_server_send_skips_only_starlettes_exception_wrapper() -> None:
    from starlette._exception_handler import wrap_app_handling_exceptions
    from starlette.requests import HTTPConnection

    from tbone.dispatch.carriers.asgi_websocket import server_send

    async def raw(message: Any) -> None:
        pass

    def middleware(inner: Any) -> Any:  # an application's own wrapper: it must stay
        async def counting(message: Any) -> None:
            await inner(message)

        return counting

    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(send)

    scope = {"type": "websocket", "path": "/", "headers": []}
    for send in (raw, middleware(raw)):
        wrapped = wrap_app_handling_exceptions(app, HTTPConnection(scope))
        asyncio.run(wrap_app_handling_exceptions(wrapped, HTTPConnection(scope))(scope, None, send))
        assert seen[-1] is not send  # Starlette's two wrappers...
        assert server_send(seen[-1]) is send  # ...are skipped, down to what it was given
    assert server_send(raw) is raw


async def test_a_middleware_wrapping_send_sees_every_frame() -> None:
    """Frames skip Starlette's own wrapper, not an application's: it still sees each frame."""
    pubsub = MemoryChannel(name="pubsub")
    frames: list[str] = []

    def counting(app: Any) -> Any:
        async def middleware(scope: Any, receive: Any, send: Any) -> None:
            async def sending(message: Any) -> None:
                if message["type"] == "websocket.send":
                    frames.append(message["text"])
                await send(message)

            await app(scope, receive, sending)

        return middleware

    from starlette.middleware import Middleware

    app = Starlette(
        routes=[channel_route("/ws", pubsub, events=["e"])], middleware=[Middleware(counting)]
    )
    async with run_uvicorn(app) as server, connect(server.ws_url("/ws")) as ws:
        await wait_until(lambda: pubsub.stats()["subscribers"] == 1)
        for n in range(50):  # a burst: the writer task sends most of them
            await pubsub.publish("e", {"n": n})
        got = [await Client(ws).recv() for _ in range(50)]
    assert [f["payload"]["data"]["n"] for f in got] == list(range(50))
    assert len([f for f in frames if '"event"' in f]) == 50


# -- the endpoint's wait for client frames ---------------------------------------------------------


async def test_the_endpoint_stops_waiting_when_its_carrier_closes_not_otherwise() -> None:
    """The endpoint waits for client frames without a task of its own; its carrier ending
    interrupts that wait (the connection ends), a cancellation from outside goes through."""
    from tbone_asgi import ChannelEndpoint

    pubsub = MemoryChannel(name="interrupt")
    endpoint = ChannelEndpoint(pubsub, events=["e"])
    sent: list[dict[str, Any]] = []

    def connection() -> tuple[Any, Any, asyncio.Queue[dict[str, Any]]]:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "websocket", "path": "/ws", "query_string": b"", "headers": []}
        return endpoint(scope, inbox.get, send), send, inbox

    # A carrier that closes (a channel asks its clients to resume) ends the connection.
    app, send, _ = connection()
    task = asyncio.create_task(app)
    await wait_until(lambda: pubsub.stats()["subscribers"] == 1)
    carrier = ASGIWebSocketCarrier(send).live()
    assert carrier is not None
    carrier.close_soon("resume", slow=False)
    await asyncio.wait_for(task, 5)  # returned: not cancelled, no error
    assert {"type": "websocket.close", "code": 1013, "reason": "resume"} in sent

    # The server cancelling the app (shutdown) is not taken for the carrier's doing.
    app, _, _ = connection()
    task = asyncio.create_task(app)
    await wait_until(lambda: pubsub.stats()["subscribers"] == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    await wait_until(lambda: pubsub.stats()["subscribers"] == 0)
    await pubsub.close()
