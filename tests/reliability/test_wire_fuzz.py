"""Hostile frames over a real websocket: never a dropped connection for the good frame after.

``tests/dispatch/test_protocol.py`` fuzzes ``ProtocolSession.receive`` directly; this runs
random bad frames through uvicorn, the ASGI endpoint and the carrier, then checks that the
same connection still subscribes, answers a ping and receives a published event. The server
runs in a thread of its own (its own event loop) so that hypothesis can drive a plain
synchronous ``websockets`` client.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from websockets.sync.client import connect

from tbone.dispatch import MemoryChannel
from tbone_asgi import channel_route
from tests.support.asgi_server import run_uvicorn

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
_bad_frames = st.one_of(
    st.builds(
        lambda kind, payload: json.dumps({"type": kind, "payload": payload}),
        st.one_of(st.sampled_from(["subscribe", "unsubscribe", "pong", "publish"]), _json),
        _json,
    ),
    _json.map(json.dumps),
    st.text(max_size=300),
    st.binary(max_size=300),  # sent as binary frames: not UTF-8, not JSON
    st.integers(1, 30_000).map(lambda n: "[" * n + "]" * n),  # deep nesting, under 64 KiB
    st.integers(1, 8_000).map(lambda n: '{"type":' * n),  # deep, unterminated, < 64 KiB
    st.integers(1_000, 60_000).map(lambda n: json.dumps({"type": "x" * n})),  # huge string
    st.sampled_from(['{"type":"subscribe","payload":{"events":[1e999]}}', b"\xed\xa0\x80"]),
).filter(lambda frame: not _is_ping(frame))


def _is_ping(frame: str | bytes) -> bool:
    # A ping among the bad frames would answer with the pong the test waits for, too early.
    try:
        decoded = json.loads(frame)
    except (ValueError, RecursionError):
        return False
    return isinstance(decoded, dict) and decoded.get("type") == "ping"


class _Server:
    def __init__(self) -> None:
        self.url = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.channel: MemoryChannel | None = None
        self.stop: asyncio.Event | None = None

    def publish(self, name: str, data: Any) -> None:
        assert self.loop is not None
        assert self.channel is not None
        asyncio.run_coroutine_threadsafe(self.channel.publish(name, data), self.loop).result(5)


@pytest.fixture
def server() -> Iterator[_Server]:
    state = _Server()
    ready = threading.Event()

    async def main() -> None:
        state.stop = asyncio.Event()
        state.channel = MemoryChannel(name="wire-fuzz")
        app = Starlette(routes=[channel_route("/ws", state.channel)])
        async with run_uvicorn(app) as running:
            state.url = running.ws_url("/ws")
            state.loop = asyncio.get_running_loop()
            ready.set()
            await state.stop.wait()
        await state.channel.close(forget=True)

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="fuzz server")
    thread.start()
    assert ready.wait(20), "the server thread did not start"
    yield state
    assert state.loop is not None
    assert state.stop is not None
    state.loop.call_soon_threadsafe(state.stop.set)
    thread.join(30)
    assert not thread.is_alive(), "the server thread did not stop"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(frames=st.lists(_bad_frames, min_size=1, max_size=8))
def test_bad_frames_then_a_good_one_over_the_wire(
    server: _Server, frames: list[str | bytes]
) -> None:
    # At most 8 bad frames: under Limits.max_errors (10) and the burst of 50 frames/s.
    with connect(server.url, compression=None, max_size=None, proxy=None, open_timeout=10) as ws:
        for frame in frames:
            ws.send(frame)
        ws.send('{"type":"subscribe","payload":{"events":["wire.ok"]}}')
        ws.send('{"type":"ping"}')
        while (answer := json.loads(ws.recv(timeout=10))) != {"type": "pong"}:
            assert answer["type"] in ("error", "recovered"), answer
        server.publish("wire.ok", {"n": 1})
        while (event := json.loads(ws.recv(timeout=10)))["type"] != "event":
            pass
        assert event["payload"]["name"] == "wire.ok"
        assert event["payload"]["data"] == {"n": 1}
