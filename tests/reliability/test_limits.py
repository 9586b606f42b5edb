"""Per-connection and per-channel limits: each has a default, and each is enforced over uvicorn.

Defaults (``docs/security.md``): client frames up to 64 KiB (else 1009), 100 events per
subscribe frame, 100 subscriptions per connection, 50 frames/s sustained with a burst of 50
(else 1008), 10 bad frames in a row (else 1008), 10,000 connections per channel and process
(else 1013), an outbox of 1,000 messages / 1 MiB per connection (else 1013), and 10
resumes a minute per connection (else ``too_many_resumes``). A resume's replay has no cap of
its own: the channel's history bounds it (the old caps only warn).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
from starlette.applications import Starlette

from tbone.dispatch import MemoryChannel, jsonenc, serving
from tbone.dispatch.carriers import Carrier
from tbone.dispatch.protocol import Limits
from tbone_asgi import ChannelEndpoint, channel_route
from tests.support import asgi_server
from tests.support.asgi_server import RunningServer, run_uvicorn
from tests.support.web_servers import (
    read_until_closed,
    small_buffer_socket,
    wait_until,
    ws_connect,
)


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with run_uvicorn(Starlette(routes=[channel_route("/ws", "limits")])) as running:
        yield running


async def _answer(ws: Any, frame: Any) -> Any:
    await ws.send(frame if isinstance(frame, str) else jsonenc.dumps(frame))
    return jsonenc.loads(await asyncio.wait_for(ws.recv(), 5))


def test_defaults_exist() -> None:
    limits = Limits()
    assert limits.max_frame_bytes == 64 * 1024
    assert limits.max_events_per_subscribe == 100
    assert limits.max_subscriptions == 100
    assert limits.max_errors == 10
    assert limits.max_messages_per_second == 50
    assert ChannelEndpoint("limits").options.max_connections == 10_000
    assert (Carrier.default_max_messages, Carrier.default_max_bytes) == (1000, 1 << 20)
    assert Carrier.default_slow_timeout == 5.0
    # Deprecated, without effect: kept (with their old defaults) for code that reads them.
    assert (limits.max_replay_events, limits.max_replay_bytes) == (10_000, 16 << 20)
    assert limits.max_resumes_per_minute == 10
    channel = MemoryChannel(name="defaults")
    assert (channel.history_size, channel.max_message_bytes) == (10_000, 512 * 1024)
    # History is deeper than what one connection may hold back: window plus outbox.
    assert channel.window_size + Carrier.default_max_messages < channel.history_size
    assert channel.publish_timeout == 5.0
    with pytest.raises(ValueError, match="max_connections must be at least 1"):
        ChannelEndpoint("limits", max_connections=0)


async def test_resumes_per_minute() -> None:
    app = Starlette(
        routes=[channel_route("/ws", "resumes", limits=Limits(max_resumes_per_minute=3))]
    )
    channel = MemoryChannel(name="resumes")
    first = await channel.publish("a", 0)
    async with run_uvicorn(app) as running, ws_connect(running.ws_url("/ws")) as ws:
        resume = {"type": "subscribe", "payload": {"events": ["a"], "since": first.id}}
        for _ in range(3):
            assert (await _answer(ws, resume))["type"] == "recovered"
        refused = await _answer(ws, resume)
        assert refused["payload"]["code"] == "too_many_resumes"
        assert "max_resumes_per_minute" in refused["payload"]["message"]
        # The connection stays, and a plain subscribe is not a resume.
        assert await _answer(ws, {"type": "ping"}) == {"type": "pong"}
        plain = {"type": "subscribe", "payload": {"events": ["b"]}}
        await ws.send(jsonenc.dumps(plain))
        assert await _answer(ws, {"type": "ping"}) == {"type": "pong"}


async def test_a_replay_cap_is_deprecated_and_a_resume_replays_everything() -> None:
    # Limits.max_replay_events once stopped a replay there, with complete false; it warns
    # now and has no effect: the client gets every event history holds, then live ones.
    with pytest.warns(DeprecationWarning, match="max_replay_events"):
        limits = Limits(max_replay_events=5)
    app = Starlette(routes=[channel_route("/ws", "uncapped", limits=limits)])
    channel = MemoryChannel(name="uncapped")
    first = await channel.publish("a", 0)
    for n in range(1, 21):
        await channel.publish("a", n)
    async with (
        run_uvicorn(app) as running,
        ws_connect(running.ws_url(f"/ws?events=a&since={first.id}")) as ws,
    ):
        frames = [jsonenc.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(21)]
        assert [f["payload"]["data"] for f in frames[:20]] == list(range(1, 21))
        assert frames[20] == {
            "type": "recovered",
            "payload": {"channel": "uncapped", "complete": True},
        }
        live = await channel.publish("a", 21)
        assert jsonenc.loads(await asyncio.wait_for(ws.recv(), 5))["payload"]["id"] == live.id


async def test_frame_size(server: RunningServer) -> None:
    async with ws_connect(server.ws_url("/ws"), max_size=None) as ws:
        # Exactly at the limit: answered (it is not JSON), the connection stays.
        answer = await _answer(ws, "x" * (64 * 1024))
        assert answer["payload"]["code"] == "bad_json"
        await ws.send("x" * (64 * 1024 + 1))
        _, closed = await read_until_closed(ws)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1009


async def test_events_per_subscribe(server: RunningServer) -> None:
    async with ws_connect(server.ws_url("/ws")) as ws:
        names = [f"e{n}" for n in range(101)]
        answer = await _answer(ws, {"type": "subscribe", "payload": {"events": names}})
        assert answer["payload"]["code"] == "too_many_events"
        # All or nothing: none of the 101 was subscribed, so 100 still fit.
        await ws.send(jsonenc.dumps({"type": "subscribe", "payload": {"events": names[:100]}}))
        assert await _answer(ws, {"type": "ping"}) == {"type": "pong"}
        assert MemoryChannel(name="limits").stats()["subscriptions"] == 100


async def test_subscriptions_per_connection(server: RunningServer) -> None:
    async with ws_connect(server.ws_url("/ws")) as ws:
        for start in (0, 50):
            names = [f"e{n}" for n in range(start, start + 50)]
            await ws.send(jsonenc.dumps({"type": "subscribe", "payload": {"events": names}}))
        assert await _answer(ws, {"type": "ping"}) == {"type": "pong"}
        answer = await _answer(ws, {"type": "subscribe", "payload": {"events": ["one-more"]}})
        assert answer["payload"]["code"] == "too_many_subscriptions"
        # Re-subscribing to held events is not a new subscription.
        await ws.send(jsonenc.dumps({"type": "subscribe", "payload": {"events": ["e1", "e2"]}}))
        assert await _answer(ws, {"type": "ping"}) == {"type": "pong"}
        assert MemoryChannel(name="limits").stats()["subscriptions"] == 100


async def test_messages_per_second(server: RunningServer) -> None:
    async with ws_connect(server.ws_url("/ws")) as ws:
        for _ in range(60):  # faster than 50/s: the burst of 50 runs out
            await ws.send('{"type":"ping"}')
        texts, closed = await read_until_closed(ws)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1008
    pongs = sum(1 for t in texts if jsonenc.loads(t) == {"type": "pong"})
    # The bucket holds 50 and refills at 50/s while the frames arrive: a handful more pass.
    assert 50 <= pongs < 60


async def test_bad_frames_in_a_row(server: RunningServer) -> None:
    async with ws_connect(server.ws_url("/ws")) as ws:
        for _ in range(9):
            await ws.send("not json")
        assert await _answer(ws, {"type": "ping"}) != {"type": "pong"}  # 9 errors come first
        for _ in range(10):
            await ws.send("not json")
        texts, closed = await read_until_closed(ws)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1008
    # 8 more error frames, then the pong (which reset the count), then 10 errors and the close.
    assert sum(1 for t in texts if jsonenc.loads(t).get("type") == "pong") == 1


async def test_connections_per_channel() -> None:
    channel = MemoryChannel(name="capped")
    app = Starlette(routes=[channel_route("/ws", channel, max_connections=3)])
    async with run_uvicorn(app) as running:
        url = running.ws_url("/ws?events=a")
        async with ws_connect(url) as first, ws_connect(url), ws_connect(url):
            assert await _answer(first, {"type": "ping"}) == {"type": "pong"}
            async with ws_connect(url) as fourth:
                _, closed = await read_until_closed(fourth)
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1013
            assert channel.stats()["subscribers"] == 3
        # Once they left, there is room again.
        await wait_until(lambda: channel not in serving._open, what="connections released")
        async with ws_connect(url) as again:
            assert await _answer(again, {"type": "ping"}) == {"type": "pong"}


def _handed_over(channel: MemoryChannel, last: str) -> bool:
    stats = channel.stats()
    return bool(stats["last_id"] == last or stats["closed_slow"])


async def test_a_client_behind_without_sending_for_slow_timeout_is_closed_1013(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A small kernel send buffer on the server's sockets (accepted sockets inherit it): with
    # Linux's autotuning the kernel alone would absorb megabytes before any send waits.
    bind = asgi_server.bind_free_socket

    def small_buffers(*args: Any, **kwargs: Any) -> socket.socket:
        sock = bind(*args, **kwargs)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        return sock

    monkeypatch.setattr(asgi_server, "bind_free_socket", small_buffers)
    channel = MemoryChannel(name="limits")
    app = Starlette(routes=[channel_route("/ws", channel, max_messages=5, slow_timeout=0.5)])
    async with run_uvicorn(app) as running:
        url = running.ws_url("/ws?events=a")
        async with ws_connect(url, max_queue=4, sock=small_buffer_socket(url)) as ws:
            assert await _answer(ws, {"type": "ping"}) == {"type": "pong"}
            # A client that stops reading: once the server's buffers are full its sends wait,
            # its outbox fills to half (3 frames) and it falls behind; 0.5 s without a send
            # closes it (bounded in time: 10 s).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10.0
            n = 0
            while not channel.stats()["closed_slow"] and loop.time() < deadline:
                n += 1
                last = await channel.publish("a", {"n": n, "pad": "x" * 4000})
                if n % 10 == 0:
                    await wait_until(partial(_handed_over, channel, last.id))
            _, closed = await read_until_closed(ws)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1013
        assert channel.stats()["closed_slow"] == 1
