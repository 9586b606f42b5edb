"""The server's own frame limit is what keeps a too-big client frame out of memory.

The endpoint closes with 1009 a frame over ``Limits.max_frame_bytes`` (64 KiB), but only once
the server has handed it over, that is once the server has read all of it. uvicorn reads up to
``ws_max_size`` (16 MiB by default) first; with ``ws_max_size=65536`` it refuses the frame at
its header, with 1009, and the endpoint never sees it. Hypercorn's ``websocket_max_message_size``
answers 1009 too, but goes on reading the message (``docs/asgi.md``, "Server settings").

The endpoint says so: at the first connection of the process, a uvicorn whose ``ws_max_size``
is above the endpoint's ``max_frame_bytes`` gets one warning naming the setting.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pytest
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed

from tbone.dispatch import MemoryChannel
from tbone.dispatch.protocol import Limits, ProtocolSession
from tbone_asgi import channel_route
from tbone_asgi import endpoint as endpoint_module
from tests.support.asgi_server import run_hypercorn, run_uvicorn, wait_until
from tests.support.web_servers import read_until_closed, ws_connect

FRAME = "x" * 1_000_000  # 1 MB: over the endpoint's 64 KiB, under the servers' 16 MiB default


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the client frames the endpoint's protocol sessions were handed, in order."""
    sizes: list[int] = []
    original = ProtocolSession.receive

    async def receive(self: ProtocolSession, data: Any) -> int | None:
        sizes.append(len(data))
        return await original(self, data)

    monkeypatch.setattr(ProtocolSession, "receive", receive)
    return sizes


@pytest.fixture
def first_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next connection is the process's first as far as the server check goes."""
    monkeypatch.setattr(endpoint_module, "_server_checked", False)


def _app(name: str, limits: Limits | None = None) -> tuple[Starlette, MemoryChannel]:
    channel = MemoryChannel(name=name)
    return Starlette(routes=[channel_route("/ws", channel, limits=limits)]), channel


def _subscribers(channel: MemoryChannel) -> int:
    return int(channel.stats()["subscribers"])


# -- uvicorn: ws_max_size ------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_uvicorn_ws_max_size_refuses_a_big_frame_before_the_endpoint(
    received: list[int], compression: str | None
) -> None:
    """Refused at the frame's header (uncompressed), or as soon as it inflates past the limit
    (per-message deflate: 1 MB of "x" is a 1 KB frame on the wire)."""
    app, channel = _app("settings-uvicorn-64k")
    async with run_uvicorn(app, ws_max_size=65536) as server:
        url = server.ws_url("/ws?events=a")
        async with ws_connect(url, max_size=None, compression=compression) as ws:
            await wait_until(lambda: _subscribers(channel) == 1, what="subscribed")
            with contextlib.suppress(ConnectionClosed):  # the close may come first
                await ws.send(FRAME)
            _, closed = await read_until_closed(ws)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1009
        # uvicorn's own reason (from websockets), not the endpoint's "frame too big".
        assert "exceeds limit of 65536 bytes" in closed.rcvd.reason
        await wait_until(lambda: not server.connections(), what="uvicorn dropped the connection")
        await wait_until(lambda: _subscribers(channel) == 0, what="the endpoint ended")
    assert received == []


async def test_uvicorn_default_reads_the_whole_frame_and_the_endpoint_refuses_it(
    received: list[int],
) -> None:
    app, channel = _app("settings-uvicorn-default")
    async with run_uvicorn(app) as server:
        await _the_endpoint_refuses_the_frame(server.ws_url("/ws?events=a"), channel)
        await wait_until(lambda: not server.connections(), what="uvicorn dropped the connection")
    assert received == [len(FRAME)]  # all of it was read, then handed over


# -- Hypercorn: websocket_max_message_size -------------------------------------------------------


async def test_hypercorn_websocket_max_message_size_refuses_a_big_frame_before_the_endpoint(
    received: list[int],
) -> None:
    app, channel = _app("settings-hypercorn-64k")
    async with run_hypercorn(app, websocket_max_message_size=65536) as server:
        url = server.ws_url("/ws?events=a")
        ws = await ws_connect(url, max_size=None, compression=None, close_timeout=1)
        try:
            await wait_until(lambda: _subscribers(channel) == 1, what="subscribed")
            await ws.send(FRAME)
            await wait_until(lambda: ws.protocol.close_rcvd is not None, what="a close frame")
            assert ws.protocol.close_rcvd.code == 1009
        finally:
            # Hypercorn 0.18 reads on after its 1009 and may miss the client's closing answer,
            # leaving both sides waiting: the client ends the connection (close_timeout).
            await ws.close()
        await wait_until(lambda: _subscribers(channel) == 0, what="the endpoint ended")
    assert received == []


async def test_hypercorn_default_hands_the_frame_over_and_the_endpoint_refuses_it(
    received: list[int],
) -> None:
    app, channel = _app("settings-hypercorn-default")
    async with run_hypercorn(app) as server:
        await _the_endpoint_refuses_the_frame(server.ws_url("/ws?events=a"), channel)
    assert received == [len(FRAME)]


async def _the_endpoint_refuses_the_frame(url: str, channel: MemoryChannel) -> None:
    """The server hands FRAME over whole; the endpoint closes with its own 1009 and ends."""
    async with ws_connect(url, max_size=None, compression=None) as ws:
        await wait_until(lambda: _subscribers(channel) == 1, what="subscribed")
        await ws.send(FRAME)
        _, closed = await read_until_closed(ws)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1009, "frame too big")
    await wait_until(lambda: _subscribers(channel) == 0, what="the endpoint ended")


# -- the endpoint's warning ----------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tbone_asgi" and r.levelno == logging.WARNING
    ]


async def _connect_times(url: str, channel: MemoryChannel, times: int) -> None:
    for _ in range(times):
        async with ws_connect(url, compression=None):
            await wait_until(lambda: _subscribers(channel) == 1, what="subscribed")
        await wait_until(lambda: _subscribers(channel) == 0, what="unsubscribed")


@pytest.mark.usefixtures("first_connection")
@pytest.mark.parametrize("ws", ["auto", "wsproto"])
async def test_uvicorn_default_ws_max_size_is_warned_about_once(
    caplog: pytest.LogCaptureFixture, ws: str
) -> None:
    caplog.set_level(logging.WARNING, logger="tbone_asgi")
    app, channel = _app(f"settings-warn-{ws}")
    async with run_uvicorn(app, ws=ws) as server:
        await _connect_times(server.ws_url("/ws?events=a"), channel, 3)
    [message] = _warnings(caplog)  # once for three connections
    assert "ws_max_size=16777216" in message
    assert "--ws-max-size 65536" in message
    assert "ws_max_size=65536 in uvicorn.run/Config" in message
    # By section name: a user who installed a wheel has no docs/ folder.
    assert 'tbone-asgi docs: ASGI, "Server settings"' in message


@pytest.mark.usefixtures("first_connection")
@pytest.mark.parametrize(
    ("ws_max_size", "max_frame_bytes"),
    [(65536, 65536), (16 * 1024, 65536), (1 << 20, 1 << 20)],
)
async def test_ws_max_size_within_the_limit_is_not_warned_about(
    caplog: pytest.LogCaptureFixture, ws_max_size: int, max_frame_bytes: int
) -> None:
    caplog.set_level(logging.WARNING, logger="tbone_asgi")
    app, channel = _app(f"settings-quiet-{ws_max_size}", Limits(max_frame_bytes=max_frame_bytes))
    async with run_uvicorn(app, ws_max_size=ws_max_size) as server:
        await _connect_times(server.ws_url("/ws?events=a"), channel, 2)
    assert endpoint_module._server_checked  # the check ran, and found nothing to say
    assert _warnings(caplog) == []


@pytest.mark.usefixtures("first_connection")
async def test_a_server_it_cannot_inspect_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tbone_asgi")
    app, channel = _app("settings-hypercorn-quiet")
    async with run_hypercorn(app) as server:
        await _connect_times(server.ws_url("/ws?events=a"), channel, 2)
    assert endpoint_module._server_checked
    assert _warnings(caplog) == []
