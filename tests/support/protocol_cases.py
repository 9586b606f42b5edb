"""The subscribe protocol as every server must serve it, written once.

A test module subclasses :class:`ProtocolCases` (the name does not start with ``Test``, so it
is collected only through subclasses) and says how its server serves the protocol: ``app``
(``app(channel, **options)``: an app serving ``channel``, a Channel or a name, at ``/ws`` with
those options, any of :class:`~tbone.dispatch.serving.ServeOptions`), ``run`` (``run(app)``:
serves it on 127.0.0.1 and yields its ``http://`` URL) and ``refused`` (how it refuses a
handshake). Clients are the ``websockets`` library and aiohttp's client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import aiohttp
import pytest
from websockets.exceptions import InvalidStatus

from tbone.dispatch import MemoryChannel, get_channel, serving
from tbone.dispatch.protocol import Limits
from tests.support.web_servers import (
    read_until_closed,
    small_buffer_socket,
    wait_until,
    ws_connect,
)

__all__ = [
    "ProtocolCases",
    "Start",
    "assert_bad_route_options_raise",
    "refused_with_403",
    "refused_with_1008",
]

Start = Callable[..., AbstractAsyncContextManager[str]]


async def recv(client: Any) -> Any:
    """The next frame of a ``websockets`` client, decoded (5 s at most)."""
    return json.loads(await asyncio.wait_for(client.recv(), 5))


async def recv_events(client: Any, n: int) -> list[Any]:
    frames = [await recv(client) for _ in range(n)]
    assert all(f["type"] == "event" for f in frames), frames
    return [f["payload"] for f in frames]


async def ping(client: Any) -> None:
    """Send a ping and wait for the pong: every earlier answer and event has arrived."""
    await client.send('{"type": "ping"}')
    assert await recv(client) == {"type": "pong"}


async def subscribe(client: Any, *events: str, since: str | None = None) -> None:
    payload: dict[str, Any] = {"events": list(events)}
    if since is not None:
        payload["since"] = since
    await client.send(json.dumps({"type": "subscribe", "payload": payload}))


class DownChannel(MemoryChannel):
    """A channel whose backend cannot read history now (it is down)."""

    async def history_page(self, since: str | None, *, limit: int, max_bytes: int) -> Any:
        raise ConnectionError("the backend is down")


def _handed_over(channel: MemoryChannel, last: str) -> bool:
    """The channel handed ``last`` to its subscribers, or closed one as too slow."""
    stats = channel.stats()
    return bool(stats["last_id"] == last or stats["closed_slow"])


def deny_secret(connection: Any, event: str) -> bool:
    return not event.startswith("secret")


class ProtocolCases:
    """The cases; a subclass sets ``app``, ``run`` and ``refused`` (see the module docstring)."""

    app: Callable[..., Any]
    run: Callable[[Any], AbstractAsyncContextManager[str]]
    refused: Callable[..., Awaitable[None]]

    @pytest.fixture
    def start(self) -> Start:
        """``start(channel, **options)``: serve them; yield the websocket URL of ``/ws``."""

        @asynccontextmanager
        async def serve(channel: Any, **options: Any) -> AsyncIterator[str]:
            async with self.run(self.app(channel, **options)) as base:
                yield base.replace("http://", "ws://") + "/ws"

        return serve

    @pytest.fixture
    def channel(self) -> MemoryChannel:
        return MemoryChannel(name="pubsub", history=5)

    async def test_subscribe_receive_in_order_then_unsubscribe(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        async with start(channel) as url, ws_connect(url) as client:
            await subscribe(client, "tick", "tock")
            await ping(client)  # answers keep their place: the subscription is on
            published = [await channel.publish("tick" if i % 2 else "tock", i) for i in range(4)]
            await channel.publish("other", "not subscribed")
            assert await recv_events(client, 4) == [e.to_dict()["payload"] for e in published]
            await client.send('{"type": "unsubscribe", "payload": {"events": ["tick"]}}')
            await ping(client)
            await channel.publish("tick", "after unsubscribe")
            await channel.publish("tock", "still on")
            assert [p["data"] for p in await recv_events(client, 1)] == ["still on"]

    async def test_connect_time_events_with_aiohttp_client(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        async with (
            start(channel) as url,
            aiohttp.ClientSession() as session,
            session.ws_connect(url + "?events=tick,tock") as client,
        ):
            await client.send_str('{"type": "ping"}')
            assert json.loads(await client.receive_str(timeout=5)) == {"type": "pong"}
            for i in range(3):
                await channel.publish("tick", i)
            got = [json.loads(await client.receive_str(timeout=5)) for _ in range(3)]
            assert [f["payload"]["data"] for f in got] == [0, 1, 2]

    async def test_resume_with_since_sends_the_missed_events_then_recovered(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        events = [await channel.publish("tick", i) for i in range(4)]
        async with (
            start(channel) as url,
            ws_connect(f"{url}?events=tick&since={events[0].id}") as client,
        ):
            assert [p["data"] for p in await recv_events(client, 3)] == [1, 2, 3]
            assert await recv(client) == {
                "type": "recovered",
                "payload": {"channel": "pubsub", "complete": True},
            }
            await channel.publish("tick", 4)
            assert [p["data"] for p in await recv_events(client, 1)] == [4]

    async def test_resume_past_history_says_incomplete(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        events = [await channel.publish("tick", i) for i in range(10)]  # history keeps 5
        async with start(channel) as url, ws_connect(url) as client:
            await subscribe(client, "tick", since=events[1].id)
            assert [p["data"] for p in await recv_events(client, 5)] == [5, 6, 7, 8, 9]
            assert await recv(client) == {
                "type": "recovered",
                "payload": {"channel": "pubsub", "complete": False},
            }

    async def test_bad_json_gets_an_error_frame_and_the_connection_stays_open(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        async with start(channel) as url, ws_connect(url) as client:
            for bad, code in [
                ("{not json", "bad_json"),
                ('["a list"]', "bad_frame"),
                ('{"type": "dance"}', "unknown_type"),
                ('{"type": "subscribe", "payload": {"events": ["bad name!"]}}', "bad_event"),
            ]:
                await client.send(bad)
                frame = await recv(client)
                assert frame["type"] == "error"
                assert frame["payload"]["code"] == code
                assert frame["payload"]["message"]
            await ping(client)

    async def test_a_frame_over_the_limit_closes_with_1009(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        limits = Limits(max_frame_bytes=1024)
        async with start(channel, limits=limits) as url, ws_connect(url) as client:
            await ping(client)
            await client.send('{"type": "ping", "pad": "' + "x" * 2000 + '"}')
            _, closed = await read_until_closed(client)
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1009

    async def test_a_client_that_keeps_sending_garbage_is_closed_with_1008(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        limits = Limits(max_errors=3)
        async with start(channel, limits=limits) as url, ws_connect(url) as client:
            for _ in range(3):
                await client.send("garbage")
            texts, closed = await read_until_closed(client)
            # Error frames still queued when the connection closes may be dropped with it.
            assert {json.loads(t)["payload"]["code"] for t in texts} <= {"bad_json"}
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1008

    async def test_a_cross_site_origin_is_refused(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        async with start(channel) as url:
            await self.refused(url, origin="http://evil.example")
            # The same site is allowed by default, as are listed origins.
            host = url.split("/")[2]
            async with ws_connect(url, origin=f"http://{host}") as client:
                await ping(client)
        async with start(channel, allowed_origins=["https://app.example"]) as url:
            await self.refused(url, origin="http://evil.example")
            async with ws_connect(url, origin="https://app.example") as client:
                await ping(client)
        assert channel.stats()["subscribers"] == 0

    async def test_a_refused_subscription(self, start: Start, channel: MemoryChannel) -> None:
        async with start(channel, authorize=deny_secret) as url:
            await self.refused(url + "?events=secret")
            async with ws_connect(url) as client:
                await subscribe(client, "tick", "secret.plans")
                frame = await recv(client)
                assert frame["type"] == "error"
                assert frame["payload"]["code"] == "forbidden"
                await ping(client)  # still open, and all or nothing: "tick" is not on either
                assert channel.subscribers("tick") == []
                await subscribe(client, "tick")
                await ping(client)
                await channel.publish("tick", 1)
                assert [p["data"] for p in await recv_events(client, 1)] == [1]

    async def test_a_since_the_channel_cannot_read_gets_an_error_and_1008(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        async with start(channel) as url:
            async with ws_connect(url + "?events=tick&since=not-an-id") as client:
                texts, closed = await read_until_closed(client)
            assert [json.loads(t)["payload"]["code"] for t in texts] == ["bad_since"]
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1008
            async with ws_connect(url) as client:  # the same, as a frame: the socket stays open
                await subscribe(client, "tick", since="not-an-id")
                assert (await recv(client))["payload"]["code"] == "bad_since"
                await ping(client)
        assert channel.stats()["subscriptions"] == 0

    async def test_a_history_the_backend_cannot_read_is_unavailable(self, start: Start) -> None:
        channel = DownChannel(name="down")
        async with start(channel) as url:
            async with ws_connect(url + "?events=tick&since=1-1") as client:
                texts, closed = await read_until_closed(client)
            assert [json.loads(t)["payload"]["code"] for t in texts] == ["unavailable"]
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1013  # try again later: the client backs off and retries
            async with ws_connect(url) as client:  # as a frame: the socket stays open
                await subscribe(client, "tock")
                await subscribe(client, "tick", "tock", since="1-1")
                assert (await recv(client))["payload"]["code"] == "unavailable"
                await ping(client)
                # Nothing of the refused frame was subscribed; what was on before stays on.
                assert channel.subscribers("tick") == []
                await channel.publish("tick", 0)
                await channel.publish("tock", 1)
                assert [p["data"] for p in await recv_events(client, 1)] == [1]

    async def test_fixed_events_subscribe_at_connect_and_refuse_others(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        async with start(channel, events=["resource_create"]) as url, ws_connect(url) as client:
            await ping(client)
            await subscribe(client, "resource_delete")
            assert (await recv(client))["payload"]["code"] == "not_offered"
            await channel.publish("resource_create", {"pk": 1})
            assert [p["data"] for p in await recv_events(client, 1)] == [{"pk": 1}]

    async def test_closing_the_channel_closes_every_client_with_1001(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        async with start(channel) as url, ws_connect(url) as one, ws_connect(url) as two:
            for client in (one, two):
                await subscribe(client, "tick")
                await ping(client)
            await asyncio.wait_for(channel.close(), 10)  # app shutdown
            for client in (one, two):
                _, closed = await read_until_closed(client)
                assert closed.rcvd is not None
                assert closed.rcvd.code == 1001
            assert channel.stats()["subscribers"] == 0

    async def test_a_client_that_vanishes_is_dropped(
        self, start: Start, channel: MemoryChannel, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO)
        async with start(channel) as url:
            client = await ws_connect(url)
            await subscribe(client, "tick")
            await ping(client)
            assert channel.stats()["subscribers"] == 1
            client.transport.abort()  # TCP reset, no close frame
            await wait_until(lambda: channel.stats()["subscribers"] == 0, what="dropped")
            await channel.publish("tick", 1)  # nobody left to fail on it
        noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        assert noisy == [], [r.getMessage() for r in noisy]

    # -- limits and options, the same on every server (they live in the serving loop) -------

    async def test_one_connection_over_max_connections_is_closed_with_1013(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        async with start(channel, max_connections=2) as url:
            async with ws_connect(url) as one, ws_connect(url) as two:
                for client in (one, two):
                    await subscribe(client, "tick")
                    await ping(client)
                async with ws_connect(url) as third:
                    texts, closed = await read_until_closed(third)
                assert texts == []
                assert closed.rcvd is not None
                assert (closed.rcvd.code, closed.rcvd.reason) == (1013, "too many connections")
                assert channel.stats()["subscribers"] == 2
            # Once they left there is room again.
            await wait_until(lambda: channel not in serving._open, what="connections released")
            async with ws_connect(url) as again:
                await ping(again)

    async def test_a_client_over_the_frame_rate_is_closed_with_1008(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        limits = Limits(max_messages_per_second=5, burst=5)
        # close_timeout: Sanic reads no frame past the one that broke the rule, so the client's
        # answer to our close waits behind its unread pings until the connection is aborted.
        async with (
            start(channel, limits=limits, close_timeout=1.0) as url,
            ws_connect(url) as client,
        ):
            for _ in range(20):
                await client.send('{"type": "ping"}')
            texts, closed = await read_until_closed(client)
            assert 5 <= len(texts) < 20  # the burst, and what the bucket refilled meanwhile
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1008

    async def test_events_per_frame_and_subscriptions_per_connection(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        limits = Limits(max_events_per_subscribe=2, max_subscriptions=3)
        async with start(channel, limits=limits) as url:
            await self.refused(url + "?events=a,b,c,d")
            async with ws_connect(url) as client:
                await subscribe(client, "a", "b", "c")
                assert (await recv(client))["payload"]["code"] == "too_many_events"
                await subscribe(client, "a", "b")
                await subscribe(client, "c", "d")
                assert (await recv(client))["payload"]["code"] == "too_many_subscriptions"
                await ping(client)
                assert channel.stats()["subscriptions"] == 2

    async def test_resumes_per_minute_and_no_replay_cap(
        self, start: Start, channel: MemoryChannel
    ) -> None:
        first = await channel.publish("tick", 0)
        for i in range(1, 4):
            await channel.publish("tick", i)
        with pytest.warns(DeprecationWarning, match="max_replay_events"):
            limits = Limits(max_resumes_per_minute=2, max_replay_events=2)
        async with start(channel, limits=limits) as url, ws_connect(url) as client:
            for _ in range(2):  # each resume replays everything, past the old cap
                await subscribe(client, "tick", since=first.id)
                assert [p["data"] for p in await recv_events(client, 3)] == [1, 2, 3]
                assert (await recv(client))["payload"]["complete"] is True
            await subscribe(client, "tick", since=first.id)
            assert (await recv(client))["payload"]["code"] == "too_many_resumes"
            await ping(client)

    async def test_a_replay_past_the_old_cap_in_many_pages_is_one_resume(
        self, start: Start
    ) -> None:
        # More events than a replay was once capped at (10,000), through an outbox of 16
        # frames and 8 KiB: pages of 4 KiB, several hundred of them. One resume brings them
        # all, complete, on a connection that may resume once a minute.
        channel = MemoryChannel(name="pages", history=10_100)
        first = await channel.publish("tick", 0)
        published = [await channel.publish("tick", n) for n in range(1, 10_051)]
        pages = 0
        read = channel.history_page

        async def counted(since: str | None, *, limit: int, max_bytes: int) -> Any:
            nonlocal pages
            pages += 1
            return await read(since, limit=limit, max_bytes=max_bytes)

        channel.history_page = counted  # type: ignore[method-assign]
        limits = Limits(max_resumes_per_minute=1)
        options = {"limits": limits, "max_messages": 16, "max_bytes": 8192}
        async with (
            start(channel, **options) as url,
            ws_connect(f"{url}?events=tick&since={first.id}") as client,
        ):
            got = await recv_events(client, len(published))
            assert [p["id"] for p in got] == [e.id for e in published]
            assert await recv(client) == {
                "type": "recovered",
                "payload": {"channel": "pages", "complete": True},
            }
            live = await channel.publish("tick", "live")
            assert (await recv(client))["payload"]["id"] == live.id
            # That was one resume: the limit is in force, and the next one is refused.
            await subscribe(client, "tick", since=first.id)
            assert (await recv(client))["payload"]["code"] == "too_many_resumes"
            await ping(client)
        assert pages > 100
        assert channel.stats()["closed_slow"] == 0

    @pytest.mark.parametrize(
        "outbox", [{"max_messages": 4}, {"max_bytes": 64 * 1024}], ids=["messages", "bytes"]
    )
    async def test_a_client_that_stops_reading_is_closed_with_1013(
        self, start: Start, outbox: dict[str, int]
    ) -> None:
        channel = MemoryChannel(name="outbox")  # the default window: the outbox decides
        pad = "x" * 16_000
        async with start(channel, slow_timeout=0.5, **outbox) as url:
            url += "?events=tick"
            # No compression: the bytes on the wire are the bytes published.
            async with ws_connect(
                url, compression=None, max_queue=4, sock=small_buffer_socket(url)
            ) as client:
                await ping(client)
                # It reads nothing from now on: once the kernel's and the server's buffers are
                # full its outbox fills, and 0.5 s behind closes it (bounded: 20 s).
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20.0
                published = 0
                while not channel.stats()["closed_slow"] and loop.time() < deadline:
                    last = await channel.publish("tick", pad)
                    published += 1
                    if published % 10 == 0:
                        await wait_until(partial(_handed_over, channel, last.id))
                assert channel.stats()["closed_slow"] == 1
                _, closed = await read_until_closed(client)
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1013
            assert channel.stats()["subscribers"] == 0

    async def test_a_channel_name_nothing_created_is_served_with_a_warning_once(
        self, start: Start, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="tbone.dispatch.serving")
        name = f"nobody-made-{uuid.uuid4().hex[:8]}"
        async with start(name) as url:
            async with ws_connect(url + "?events=tick") as client:
                await ping(client)
                made = get_channel(name)
                assert type(made) is MemoryChannel  # served all the same
                await made.publish("tick", 1)
                assert [p["data"] for p in await recv_events(client, 1)] == [1]
            await made.close(forget=True)
            async with ws_connect(url) as client:  # made anew, but said once is enough
                await ping(client)
        warnings = [r for r in caplog.records if r.name == "tbone.dispatch.serving"]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert warnings[0].levelno == logging.WARNING
        message = warnings[0].getMessage()
        assert f"no channel named {name!r} was created in this process" in message
        assert f"serving a new MemoryChannel({name!r})" in message
        assert "at startup" in message


def assert_bad_route_options_raise(add_route: Callable[..., None], app: Any) -> None:
    """``add_route(app, path, channel, **options)`` refuses bad options and adds no route."""
    with pytest.raises(ValueError, match="scheme://host"):
        add_route(app, "/ws", "pubsub", allowed_origins=["not an origin"])
    with pytest.raises(ValueError, match="invalid event names"):
        add_route(app, "/ws", "pubsub", events=["bad name!"])
    with pytest.raises(TypeError, match="Channel or a channel name"):
        add_route(app, "/ws", 42)
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_mesages'"):
        add_route(app, "/ws", "pubsub", max_mesages=10)


async def refused_with_403(url: str, origin: str | None = None) -> None:
    """Assert that the handshake is answered with HTTP 403 (before any upgrade)."""
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(url, origin=origin):
            pass
    assert refused.value.response.status_code == 403


async def refused_with_1008(url: str, origin: str | None = None) -> None:
    """Assert an error frame then a 1008 close (servers that upgrade before the handler)."""
    async with ws_connect(url, origin=origin) as client:
        texts, closed = await read_until_closed(client)
    assert [json.loads(t)["type"] for t in texts] == ["error"]
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1008
