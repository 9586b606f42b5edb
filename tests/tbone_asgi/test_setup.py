"""Building apps with tbone_asgi: origins, lifespan, root_path, channel names, bad options."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
import websockets
from starlette.applications import Starlette

from tbone.dispatch import MemoryChannel, get_channel
from tbone.dispatch.channels.mem import MemoryChannel as _Mem
from tbone_asgi import ChannelMiddleware, OriginPolicy, channel_route, channels_lifespan
from tests.support.asgi_server import run_hypercorn, run_uvicorn, wait_until
from tests.tbone_asgi.apps import Client, bare_app, connect


def scope(origin: str | None, host: str = "example.com") -> dict[str, Any]:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "websocket", "headers": headers}


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "example.com", True),
        ("https://example.com", "example.com", True),
        ("http://example.com:80", "example.com", True),
        ("https://EXAMPLE.com:443", "example.com:443", True),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", False),
        ("https://evil.com", "example.com", False),
        ("https://example.com.evil.com", "example.com", False),
        ("null", "example.com", False),
        ("not a url", "example.com", False),
        ("http://[::1]:8000", "[::1]:8000", True),
    ],
)
def test_same_origin_by_default(origin: str | None, host: str, allowed: bool) -> None:
    assert OriginPolicy().allows(scope(origin, host)) is allowed


def test_allow_list_and_star() -> None:
    policy = OriginPolicy(["https://app.example", "http://localhost:3000"])
    assert policy.allows(scope("https://app.example:443"))
    assert policy.allows(scope("http://localhost:3000"))
    assert not policy.allows(scope("http://localhost:3001"))
    assert not policy.allows(scope("https://example.com", host="example.com"))  # list replaces
    assert OriginPolicy(["*"]).allows(scope("https://anything.example"))
    with pytest.raises(TypeError, match=r"allowed_origins=\['https://a.example'\]"):
        OriginPolicy("https://a.example")
    with pytest.raises(ValueError, match="scheme://host"):
        OriginPolicy(["app.example"])
    assert not OriginPolicy().allows({"headers": [(b"origin", b"https://a.example")]})  # no Host


def test_bad_options_fail_when_the_app_is_built() -> None:
    with pytest.raises(ValueError, match="invalid event names"):
        channel_route("/ws", "pubsub", events=["no spaces"])
    with pytest.raises(TypeError, match="not the str"):
        channel_route("/ws", "pubsub", events="resource_create")
    with pytest.raises(TypeError, match="Channel or a channel name"):
        channel_route("/ws", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must start with '/'"):
        ChannelMiddleware(bare_app, path="ws", channel="pubsub")
    with pytest.raises(TypeError, match="unexpected keyword"):
        channel_route("/ws", "pubsub", max_byte=10)


async def test_a_channel_name_means_the_registered_channel_or_a_memory_one() -> None:
    class Custom(_Mem):
        pass

    registered = Custom(name="custom")
    app = Starlette(
        routes=[channel_route("/custom", "custom"), channel_route("/fresh", "fresh")],
        lifespan=channels_lifespan(),
    )
    async with run_uvicorn(app) as server:
        async with connect(server.ws_url("/custom?events=a")) as ws:
            await Client(ws).sync()
            assert registered.stats()["subscribers"] == 1
            await registered.publish("a", "custom")
            assert (await Client(ws).recv())["payload"]["channel"] == "custom"
        async with connect(server.ws_url("/fresh?events=a")) as ws:
            await Client(ws).sync()
            fresh = get_channel("fresh")
            assert type(fresh) is MemoryChannel
            assert fresh.stats()["subscribers"] == 1


async def test_lifespan_starts_and_closes_channels_and_keeps_the_apps_own() -> None:
    calls: list[str] = []

    @contextlib.asynccontextmanager
    async def own(app: Any) -> AsyncIterator[dict[str, Any]]:
        calls.append(f"own start, consumer {get_channel('pubsub').stats()['consumer']}")  # type: ignore[union-attr]
        yield {"answer": 42}
        calls.append("own end")

    channel = MemoryChannel(name="pubsub")
    # The app's lifespan state reaches authorize() through the connection.
    route = channel_route("/ws", "pubsub", authorize=lambda conn, event: conn.state.answer == 42)
    app = Starlette(routes=[route], lifespan=channels_lifespan("pubsub", lifespan=own))
    async with run_uvicorn(app) as server:
        assert channel.stats()["consumer"] in ("starting", "running")
        async with connect(server.ws_url("/ws?events=a")) as ws:
            assert await Client(ws).sync() == []
    # The channel was started before the app's own lifespan ran (a MemoryChannel reads from a
    # fixed position as soon as it starts), and closed after it ended.
    assert calls == ["own start, consumer running", "own end"]
    assert channel.stats()["consumer"] == "closed"


async def test_lifespan_without_names_closes_every_channel() -> None:
    a, b = MemoryChannel(name="a"), MemoryChannel(name="b")
    app = Starlette(routes=[channel_route("/ws", "a")], lifespan=channels_lifespan())
    async with run_uvicorn(app) as server, connect(server.ws_url("/ws?events=x")) as ws:
        await Client(ws).sync()
        b.kickoff()
    assert a.stats()["consumer"] == "closed"
    assert b.stats()["consumer"] == "closed"
    assert get_channel("a") is None


async def test_middleware_under_uvicorn_root_path() -> None:
    channel = MemoryChannel(name="pubsub")
    app = ChannelMiddleware(bare_app, path="/ws", channel="pubsub")
    # uvicorn --root-path /prefix: a proxy strips /prefix, ASGI's path still includes it.
    async with run_uvicorn(app, root_path="/prefix") as server:
        async with connect(server.ws_url("/ws?events=a")) as ws:
            await Client(ws).sync()
            await channel.publish("a", 1)
            assert (await Client(ws).recv())["payload"]["data"] == 1
        with pytest.raises((websockets.InvalidStatus, websockets.ConnectionClosed)):
            async with connect(server.ws_url("/prefix/other")) as ws:
                await Client(ws).sync()


async def test_hypercorn_serves_the_route_and_drops_a_reset_client() -> None:
    channel = MemoryChannel(name="pubsub")
    app = Starlette(routes=[channel_route("/ws", "pubsub")])
    async with (
        run_hypercorn(app, websocket_ping_interval=0.2) as server,
        connect(server.ws_url("/ws?events=a")) as ws,
    ):
        client = Client(ws)
        await client.sync()
        await channel.publish("a", {"n": 1})
        assert (await client.recv())["payload"]["data"] == {"n": 1}
        with pytest.raises(websockets.InvalidStatus):
            async with connect(server.ws_url("/ws"), origin="https://evil.example"):
                pass
        ws.transport.abort()
        await wait_until(lambda: channel.stats()["subscribers"] == 0)


async def test_a_bad_query_string_is_refused_before_accept() -> None:
    MemoryChannel(name="pubsub")
    app = Starlette(routes=[channel_route("/ws", "pubsub")])
    async with run_uvicorn(app) as server:
        for query in ("events=a&since=1-1&since=1-2", "events=" + "a," * 201 + "&" * 201):
            with pytest.raises(websockets.InvalidStatus) as info:
                async with connect(server.ws_url(f"/ws?{query}")):
                    pass
            assert info.value.response.status_code == 403


async def test_the_endpoint_serves_websockets_only() -> None:
    from tbone_asgi import ChannelEndpoint

    async def receive() -> Any:
        raise AssertionError("not called")

    async def send(message: Any) -> None:
        raise AssertionError("not called")

    with pytest.raises(RuntimeError, match="websocket connections only"):
        await ChannelEndpoint("pubsub")({"type": "http"}, receive, send)


async def test_channel_route_inside_a_mount() -> None:
    from starlette.routing import Mount

    channel = MemoryChannel(name="pubsub")
    app = Starlette(routes=[Mount("/api", routes=[channel_route("/ws", "pubsub", name="ws")])])
    assert app.url_path_for("ws") == "/api/ws"
    async with run_uvicorn(app) as server, connect(server.ws_url("/api/ws?events=a")) as ws:
        client = Client(ws)
        assert await client.sync() == []
        await channel.publish("a", "mounted")
        assert (await client.recv())["payload"]["data"] == "mounted"


@pytest.mark.parametrize("since", ["abc", quote("é" * 150)])
async def test_a_since_the_channel_cannot_read_closes_1008_after_accept(since: str) -> None:
    channel = MemoryChannel(name="pubsub")
    app = Starlette(routes=[channel_route("/ws", "pubsub")])
    async with (
        run_uvicorn(app) as server,
        connect(server.ws_url(f"/ws?events=a&since={since}")) as ws,
    ):
        error = await Client(ws).recv()
        assert error["payload"]["code"] == "bad_since"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await Client(ws).recv()
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1008
        assert info.value.rcvd.reason.startswith("bad_since")
        assert channel.stats()["subscriptions"] == 0


def test_close_reasons_fit_a_close_frame() -> None:
    from tbone.dispatch.protocol import close_reason

    assert close_reason("short") == "short"
    long = close_reason("bad_since: " + "é" * 200)
    assert len(long.encode()) <= 123
    assert long.startswith("bad_since: é")
    assert long.endswith("...")
