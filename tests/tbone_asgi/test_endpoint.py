"""The subscribe endpoint end to end: real uvicorn, the real ``websockets`` client.

Every test runs for a Starlette app, a FastAPI app, a bare ASGI app wrapped by
ChannelMiddleware, and that middleware inside a Starlette Mount (see ``apps.py``).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import websockets

from tbone.dispatch import MemoryChannel
from tbone.dispatch.protocol import Limits
from tests.support.asgi_server import run_uvicorn, wait_until
from tests.tbone_asgi.apps import KINDS, Client, build, connect

pytestmark = pytest.mark.parametrize("kind", KINDS)


async def test_subscribe_receive_in_order_unsubscribe(kind: str) -> None:
    channel = MemoryChannel(name="pubsub")
    app, path = build(kind)
    async with run_uvicorn(app) as server, connect(server.ws_url(path)) as ws:
        client = Client(ws)
        assert await client.subscribe("a", "b") == []
        for i in range(50):
            await channel.publish("a" if i % 3 else "b", {"i": i})
        frames = [await client.recv() for _ in range(50)]
        assert [f["payload"]["data"]["i"] for f in frames] == list(range(50))
        assert frames[0]["type"] == "event"
        assert set(frames[0]["payload"]) == {"name", "data", "id", "channel"}
        assert frames[0]["payload"]["channel"] == "pubsub"

        await client.send({"type": "unsubscribe", "payload": {"events": ["b"]}})
        await client.sync()
        await channel.publish("b", "not for us")
        await channel.publish("a", "for us")
        assert (await client.recv())["payload"]["data"] == "for us"
        assert channel.stats()["subscriptions"] == 1
    await wait_until(lambda: channel.stats()["subscribers"] == 0)


async def test_connect_time_events_and_resume(kind: str) -> None:
    channel = MemoryChannel(name="pubsub", history=5)
    app, path = build(kind)
    first = await channel.publish("a", 0)
    for i in range(1, 4):
        await channel.publish("a", i)
    async with run_uvicorn(app) as server:
        # Complete: everything after `first` is still held.
        async with connect(server.ws_url(f"{path}?events=a,b&since={first.id}")) as ws:
            client = Client(ws)
            frames = [await client.recv() for _ in range(4)]
            assert [f["payload"]["data"] for f in frames[:3]] == [1, 2, 3]
            assert frames[3] == {
                "type": "recovered",
                "payload": {"channel": "pubsub", "complete": True},
            }
            await channel.publish("b", "live")
            assert (await client.recv())["payload"]["data"] == "live"
        for i in range(5, 12):
            await channel.publish("a", i)
        # Incomplete: history (5 events) no longer reaches back to `first`.
        async with connect(server.ws_url(path)) as ws:
            client = Client(ws)
            frames = await client.subscribe("a", since=first.id)
            assert [f["payload"]["data"] for f in frames[:5]] == [7, 8, 9, 10, 11]
            assert frames[5]["payload"]["complete"] is False
            # A bad id is an error frame; the connection goes on.
            frames = await client.subscribe("a", since="no-such-id")
            assert frames[0]["payload"]["code"] == "bad_since"


async def test_bad_input_gets_error_frames(kind: str) -> None:
    channel = MemoryChannel(name="pubsub")
    app, path = build(kind)
    bad = [
        ("{not json", "bad_json"),
        (b"\xff\xfe binary garbage", "bad_json"),
        ('["subscribe"]', "bad_frame"),
        ('{"type": "publish", "payload": {"name": "a", "data": 1}}', "unknown_type"),
        ('{"type": "subscribe", "payload": "a"}', "bad_payload"),
        ('{"type": "subscribe", "payload": {"events": "a"}}', "bad_payload"),
        ('{"type": "subscribe", "payload": {"events": [1, 2]}}', "bad_event"),
        ('{"type": "subscribe", "payload": {"events": ["a"], "since": []}}', "bad_since"),
        ('{"type": "unsubscribe", "payload": {"events": {}}}', "bad_payload"),
    ]
    async with run_uvicorn(app) as server, connect(server.ws_url(path)) as ws:
        client = Client(ws)
        for frame, code in bad:
            await client.send(frame)
            answer = await client.recv()
            assert answer["type"] == "error", frame
            assert answer["payload"]["code"] == code, frame
            assert answer["payload"]["message"]
        assert await client.subscribe("a") == []  # still open, still working
        await channel.publish("a", 1)
        assert (await client.recv())["payload"]["data"] == 1
        assert channel.stats()["published"] == 1  # nothing the client sent was published


async def test_too_large_frame_closes_1009(kind: str) -> None:
    MemoryChannel(name="pubsub")
    app, path = build(kind, limits=Limits(max_frame_bytes=1024))
    async with run_uvicorn(app) as server, connect(server.ws_url(path)) as ws:
        client = Client(ws)
        await client.send(json.dumps({"type": "ping", "pad": "x" * 1024}))
        assert await client.closed_with() == 1009


async def test_garbage_flood_closes_1008(kind: str) -> None:
    MemoryChannel(name="pubsub")
    app, path = build(kind, limits=Limits(max_errors=5))
    async with run_uvicorn(app) as server, connect(server.ws_url(path)) as ws:
        client = Client(ws)
        for _ in range(5):
            await client.send("garbage")
        errors = [await client.recv() for _ in range(5)]
        assert {e["payload"]["code"] for e in errors} == {"bad_json"}
        assert await client.closed_with() == 1008


async def test_message_rate_flood_closes_1008(kind: str) -> None:
    MemoryChannel(name="pubsub")
    app, path = build(kind, limits=Limits(max_messages_per_second=5, burst=5))
    async with run_uvicorn(app) as server, connect(server.ws_url(path)) as ws:
        client = Client(ws)
        for _ in range(20):
            try:
                await client.send({"type": "ping"})
            except websockets.ConnectionClosed:
                break
        assert await client.closed_with() == 1008


async def test_origin_is_checked(kind: str) -> None:
    MemoryChannel(name="pubsub")
    app, path = build(kind)
    async with run_uvicorn(app) as server:
        with pytest.raises(websockets.InvalidStatus) as info:
            async with connect(server.ws_url(path), origin="http://evil.example"):
                pass
        assert info.value.response.status_code == 403
        same = f"http://127.0.0.1:{server.port}"
        async with connect(server.ws_url(path), origin=same) as ws:
            assert await Client(ws).sync() == []
        async with connect(server.ws_url(path)) as ws:  # no Origin: not a browser
            assert await Client(ws).sync() == []


async def test_allowed_origins(kind: str) -> None:
    MemoryChannel(name="pubsub")
    app, path = build(kind, allowed_origins=["https://app.example"])
    async with run_uvicorn(app) as server:
        async with connect(server.ws_url(path), origin="https://app.example") as ws:
            assert await Client(ws).sync() == []
        for origin in (f"http://127.0.0.1:{server.port}", "https://app.example.evil", "null"):
            with pytest.raises(websockets.InvalidStatus) as info:
                async with connect(server.ws_url(path), origin=origin):
                    pass
            assert info.value.response.status_code == 403, origin


async def test_refused_subscription(kind: str) -> None:
    channel = MemoryChannel(name="pubsub")
    seen: list[Any] = []

    async def authorize(connection: Any, event: str) -> bool:
        seen.append(connection.query_params.get("token"))
        return connection.query_params.get("token") == "ok" or not event.startswith("private.")

    app, path = build(kind, authorize=authorize)
    async with run_uvicorn(app) as server:
        with pytest.raises(websockets.InvalidStatus) as info:
            async with connect(server.ws_url(f"{path}?events=public.a,private.b")):
                pass
        assert info.value.response.status_code == 403
        assert channel.stats()["subscriptions"] == 0

        async with connect(server.ws_url(f"{path}?events=public.a")) as ws:
            client = Client(ws)
            frames = await client.subscribe("private.b")
            assert frames[0]["payload"]["code"] == "forbidden"
            assert channel.stats()["subscriptions"] == 1
        async with connect(server.ws_url(f"{path}?events=private.b&token=ok")) as ws:
            assert await Client(ws).sync() == []
            assert "ok" in seen


async def test_fixed_events_route(kind: str) -> None:
    """The seed's example: every client gets 'resource_create', and nothing else."""
    channel = MemoryChannel(name="pubsub")
    app, path = build(kind, events=["resource_create"])
    async with run_uvicorn(app) as server:
        async with connect(server.ws_url(path)) as ws:
            client = Client(ws)
            assert await client.sync() == []
            await channel.publish("resource_create", {"pk": 1})
            assert (await client.recv())["payload"]["data"] == {"pk": 1}
            frames = await client.subscribe("resource_delete")
            assert frames[0]["payload"]["code"] == "not_offered"
        with pytest.raises(websockets.InvalidStatus):
            async with connect(server.ws_url(f"{path}?events=resource_delete")):
                pass


@pytest.mark.parametrize("how", ["stops-answering", "reset"])
async def test_a_vanished_client_is_dropped(kind: str, how: str) -> None:
    channel = MemoryChannel(name="pubsub")
    app, path = build(kind)
    # uvicorn pings every 0.2 s and drops a peer silent for 0.3 s more.
    async with (
        run_uvicorn(app, ws_ping_interval=0.2, ws_ping_timeout=0.3) as server,
        connect(server.ws_url(f"{path}?events=a"), ping_interval=None) as ws,
    ):
        await Client(ws).sync()
        assert channel.stats()["subscribers"] == 1
        if how == "reset":
            ws.transport.abort()  # gone without a close frame (a killed process)
        else:
            ws.transport.pause_reading()  # alive but silent (a lost network)
        await wait_until(lambda: channel.stats()["subscribers"] == 0, timeout=5)
        await channel.publish("a", "after")  # nothing to deliver to, nothing breaks
        assert channel.stats()["subscriptions"] == 0
        ws.transport.abort()  # no close handshake with a server that already left


async def test_http_and_other_scopes_pass_through(kind: str) -> None:
    MemoryChannel(name="pubsub")
    app, path = build(kind)
    async with run_uvicorn(app) as server:
        if kind in ("middleware", "mount"):
            async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
                reply = await http.get(path.replace("/ws", "/page"))
            assert reply.status_code == 200
            assert reply.text == f"bare app {path.replace('/ws', '/page')}"
        # A websocket on another path is the app's own business, not ours.
        with pytest.raises((websockets.InvalidStatus, websockets.ConnectionClosed)):
            async with connect(server.ws_url(path + "/other")) as ws:
                await Client(ws).sync()
