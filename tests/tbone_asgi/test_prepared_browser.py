"""Prepared frames in real Chromium: compressed as negotiated, decoded exactly, closed cleanly.

(A reader that stops reading, closed with 1013, cannot be made of a browser page: the
websockets-client and raw-socket tests cover it on the same path, in
tests/dispatch/carriers/test_asgi_websocket.py, "uvicorn-prepared".)

Chromium offers permessage-deflate (with ``client_max_window_bits``) on every websocket; on
tbone_asgi.uvicorn's protocol it is answered with ``server_no_context_takeover`` and every
event arrives as the frame deflated once for all subscribers. The page opens plain
``WebSocket`` objects, so nothing between the wire and the test but the browser.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tbone.dispatch import MemoryChannel, wire
from tbone_asgi import channel_route
from tbone_asgi.uvicorn import WebSocketProtocol
from tests.demo.browser import launch_chromium
from tests.demo.restartable import RestartableServer
from tests.support.asgi_server import wait_until
from tests.support.prepared import SHAPES

pytestmark = pytest.mark.timeout(60)

WAIT = 10_000  # ms

PAGE = """<!doctype html><meta charset="utf-8"><title>prepared</title>
<script>
window.sockets = {};
window.connect = (name) => new Promise((resolve, reject) => {
  const ws = new WebSocket(`ws://${location.host}/ws?events=e`);
  const entry = {ws, frames: [], closed: null};
  ws.onmessage = (m) => entry.frames.push(JSON.parse(m.data));
  ws.onclose = (c) => { entry.closed = {code: c.code, clean: c.wasClean}; };
  ws.onopen = () => resolve(ws.extensions);
  ws.onerror = () => reject(new Error("websocket error"));
  window.sockets[name] = entry;
});
window.loaded = true;
</script>"""


@pytest.fixture
async def served() -> AsyncIterator[tuple[Any, MemoryChannel]]:
    channel = MemoryChannel(name="browser-prepared")

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    app = Starlette(routes=[Route("/", index), channel_route("/ws", channel)])
    async with (
        RestartableServer(app, ws=WebSocketProtocol, ws_per_message_deflate=True) as server,
        launch_chromium() as browser,
    ):
        page = await browser.new_page()
        await page.goto(server.url)
        await page.wait_for_function("window.loaded === true", timeout=WAIT)
        yield page, channel
        await page.close()


async def frames_of(page: Any, name: str, count: int) -> list[Any]:
    await page.wait_for_function(f"window.sockets.{name}.frames.length >= {count}", timeout=WAIT)
    frames: list[Any] = await page.evaluate(f"window.sockets.{name}.frames")
    return frames


async def closed_of(page: Any, name: str) -> dict[str, Any]:
    await page.wait_for_function(f"window.sockets.{name}.closed !== null", timeout=WAIT)
    closed: dict[str, Any] = await page.evaluate(f"window.sockets.{name}.closed")
    return closed


async def test_chromium_decodes_deflated_prepared_frames(
    served: tuple[Any, MemoryChannel], monkeypatch: pytest.MonkeyPatch
) -> None:
    page, channel = served
    built: list[int] = []
    deflate = wire.deflate
    monkeypatch.setattr(
        wire, "deflate", lambda data, bits: built.append(bits) or deflate(data, bits)
    )
    names = ["one", "two", "three"]
    for name in names:
        extensions = await page.evaluate(f"window.connect('{name}')")
        assert "permessage-deflate" in extensions
        assert "server_no_context_takeover" in extensions
    await wait_until(lambda: channel.stats()["subscribers"] == len(names))
    assert all(c.prepared for c in channel.subscribers("e"))
    sent = [await channel.publish("e", data) for data in SHAPES]
    await page.evaluate('window.sockets.one.ws.send(\'{"type": "ping"}\')')
    sent += [await channel.publish("e", data) for data in SHAPES]
    for name in names:
        got = await frames_of(page, name, len(sent) + (name == "one"))
        events = [f["payload"] for f in got if f["type"] == "event"]
        assert [e["id"] for e in events] == [e.id for e in sent], name
        # Compared in Python: the 512 KiB strings arrived whole and exact.
        assert [e["data"] for e in events] == SHAPES * 2, name
    assert [f for f in await frames_of(page, "one", 1) if f["type"] != "event"] == [
        {"type": "pong"}
    ]
    assert len(built) == len(sent)  # one window (12 bits) for all three: once per event


async def test_the_close_handshake_completes_with_each_code(
    served: tuple[Any, MemoryChannel],
) -> None:
    page, channel = served
    for name in ("normal", "violation", "away"):
        await page.evaluate(f"window.connect('{name}')")
    await wait_until(lambda: channel.stats()["subscribers"] == 3)
    await channel.publish("e", {"prepared": True})
    for name in ("normal", "violation", "away"):
        assert (await frames_of(page, name, 1))[0]["payload"]["data"] == {"prepared": True}
    # 1000: the page closes; the server answers, so the close is clean.
    await page.evaluate("window.sockets.normal.ws.close(1000)")
    assert await closed_of(page, "normal") == {"code": 1000, "clean": True}
    # 1008: ten bad frames in a row.
    await page.evaluate("for (let i = 0; i < 10; i++) window.sockets.violation.ws.send('{')")
    assert await closed_of(page, "violation") == {"code": 1008, "clean": True}
    errors = [f for f in await frames_of(page, "violation", 11) if f["type"] == "error"]
    assert len(errors) == 10
    # 1001: the channel closes (the app shuts down).
    await channel.close()
    assert await closed_of(page, "away") == {"code": 1001, "clean": True}
