"""tbone.js in headless Chromium against a real uvicorn: order, unsubscribe, errors, refusals."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from tbone.dispatch import MemoryChannel
from tbone_asgi import channel_route
from tests.demo.browser import launch_chromium
from tests.demo.restartable import RestartableServer

pytestmark = pytest.mark.timeout(60)

WAIT = 10_000  # ms

# The page imports the module itself; each test drives it through page.evaluate.
PAGE = """<!doctype html><meta charset="utf-8"><title>tbone.js</title>
<script type="module">
import * as tbone from "/static/tbone/tbone.js";
window.tbone = tbone;
window.got = [];
window.states = [];
window.errors = [];
window.open = (options) => {
  const client = tbone.connect("/ws", options);
  client.on("*", (data, event) => window.got.push([event.name, data, event.id, event.channel]));
  client.onState((change) => window.states.push(change.state));
  client.onError((error) => window.errors.push(error));
  window.client = client;
  return new Promise((resolve) => client.onState((c) => c.state === "open" && resolve()));
};
window.loaded = true;
</script>"""


@pytest.fixture
async def channel() -> MemoryChannel:
    return MemoryChannel(name="js-client")


@pytest.fixture
async def page(channel: MemoryChannel) -> AsyncIterator[Any]:
    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    app = Starlette(
        routes=[
            Route("/", index),
            channel_route("/ws", channel, authorize=lambda conn, event: event != "secret"),
            Mount("/static/tbone", StaticFiles(packages=[("tbone_asgi", "static")])),
        ]
    )
    problems: list[str] = []
    async with RestartableServer(app) as server, launch_chromium() as browser:
        tab = await browser.new_page()
        tab.on("pageerror", lambda exc: problems.append(str(exc)))
        await tab.goto(server.url)
        await tab.wait_for_function("window.loaded === true", timeout=WAIT)
        yield tab
        await tab.close()
    assert problems == []


async def got(page: Any, count: int) -> list[list[Any]]:
    await page.wait_for_function(f"window.got.length >= {count}", timeout=WAIT)
    frames: list[list[Any]] = await page.evaluate("window.got")
    return frames


async def test_events_in_order_then_unsubscribe(page: Any, channel: MemoryChannel) -> None:
    await page.evaluate("window.open({events: ['a', 'b']})")
    await page.evaluate("window.client.ping()")  # answered after the subscriptions are on
    sent = [await channel.publish("a", n) for n in range(5)]
    sent.append(await channel.publish("b", {"x": "y"}))
    assert await got(page, 6) == [[e.name, e.data, e.id, "js-client"] for e in sent]

    await page.evaluate("window.client.unsubscribe(['a'])")  # resolves once the server did it
    await channel.publish("a", "not any more")
    last = await channel.publish("b", "still")
    frames = await got(page, 7)
    assert frames[6] == ["b", "still", last.id, "js-client"]
    assert len(frames) == 7
    assert await page.evaluate("window.client.lastId") == last.id
    assert await page.evaluate("window.client.events") == ["b"]


async def test_a_refused_subscribe_rejects_and_the_connection_stays(
    page: Any, channel: MemoryChannel
) -> None:
    await page.evaluate("window.open({events: ['a']})")
    refused = await page.evaluate(
        "window.client.subscribe(['c', 'secret'])"
        ".then(() => null, (e) => [e.name, e.code, e.events])"
    )
    assert refused == ["SubscribeError", "forbidden", ["c", "secret"]]
    assert [e["code"] for e in await page.evaluate("window.errors")] == ["forbidden"]
    assert await page.evaluate("window.client.events") == ["a"]  # all or nothing
    await page.evaluate("window.client.subscribe(['c'])")  # resolves: accepted
    event = await channel.publish("c", 1)
    assert (await got(page, 1))[0][2] == event.id
    assert await page.evaluate("window.client.state") == "open"


async def test_an_incomplete_resume_is_surfaced(page: Any, channel: MemoryChannel) -> None:
    # An id from an earlier life of the channel (another epoch): history cannot reach back.
    await page.evaluate("window.open({events: ['a'], since: '1-1'})")
    await page.wait_for_function("window.client.recoveries.length === 1", timeout=WAIT)
    assert await page.evaluate("window.client.recoveries") == [
        {"channel": "js-client", "complete": False, "since": "1-1"}
    ]


async def test_a_long_catch_up_comes_whole_then_live(page: Any, channel: MemoryChannel) -> None:
    # More than a replay was once capped at (16 MiB): it all comes before `recovered`, which
    # says complete, and the client goes live with no gap reported.
    first = await channel.publish("a", {"n": 0})
    pad = "x" * 10_000
    missed = [await channel.publish("a", {"n": n, "pad": pad}) for n in range(1, 1801)]
    assert sum(e.size for e in missed) > 16 * 1024 * 1024
    await page.evaluate(f"window.open({{events: ['a'], since: '{first.id}'}})")
    await page.wait_for_function("window.client.recoveries.length === 1", timeout=WAIT)
    assert await page.evaluate("window.client.recoveries") == [
        {"channel": "js-client", "complete": True, "since": first.id}
    ]
    assert await page.evaluate("window.got.map((e) => e[2])") == [e.id for e in missed]
    live = await channel.publish("a", {"n": "live"})
    await page.wait_for_function(f"window.got.length === {len(missed) + 1}", timeout=WAIT)
    assert await page.evaluate("window.got[window.got.length - 1][2]") == live.id
    assert await page.evaluate("window.client.recoveries.length") == 1
    assert await page.evaluate("window.states") == ["open"]  # one connection, never dropped


async def test_a_refusing_close_stops_reconnecting(page: Any) -> None:
    await page.evaluate("window.open({events: ['a']})")
    # A frame over the server's 64 KiB limit: closed with 1009, which retrying cannot fix.
    await page.evaluate("window.client._ws.send('x'.repeat(70000))")
    await page.wait_for_function("window.client.state === 'failed'", timeout=WAIT)
    # No "reconnecting" in between: the client stopped (handlers were added after "connecting").
    assert await page.evaluate("window.states") == ["open", "failed"]


async def test_bad_arguments_throw_with_the_fix(page: Any) -> None:
    message = await page.evaluate(
        "(() => { try { window.tbone.connect('/ws', {events: 'a'}) } catch (e) "
        "{ return e.message } })()"
    )
    assert "array of names" in message
    message = await page.evaluate(
        "(() => { try { window.tbone.connect('/ws', {events: ['no spaces']}) } catch (e) "
        "{ return e.message } })()"
    )
    assert "1 to 200 characters" in message
    message = await page.evaluate(
        "(() => { try { window.tbone.connect('ftp://x/ws') } catch (e) { return e.message } })()"
    )
    assert "ws://" in message
    url = await page.evaluate(
        "new window.tbone.TBoneClient('/ws?token=t', {events: ['a', 'b'], since: '5-2'})"
        ".connectURL()"
    )
    assert url.endswith("/ws?token=t&events=a,b&since=5-2")
    assert url.startswith("ws://127.0.0.1:")


async def test_a_silent_connection_is_dropped_and_reconnected() -> None:
    # A server that accepts but never answers a ping (a half-dead link, as the browser sees
    # it): the client must give up on it after pongTimeout and connect again.
    accepted: list[int] = []
    again = asyncio.Event()

    async def silent(websocket: WebSocket) -> None:
        await websocket.accept()
        accepted.append(1)
        if len(accepted) == 2:
            again.set()
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.receive_text()  # read and ignore every frame, pings included

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    app = Starlette(
        routes=[
            Route("/", index),
            WebSocketRoute("/ws", silent),
            Mount("/static/tbone", StaticFiles(packages=[("tbone_asgi", "static")])),
        ]
    )
    async with RestartableServer(app) as server, launch_chromium() as browser:
        tab = await browser.new_page()
        await tab.goto(server.url)
        await tab.wait_for_function("window.loaded === true", timeout=WAIT)
        await tab.evaluate(
            "window.open({pingInterval: 200, pongTimeout: 300, backoff: {initial: 50}})"
        )
        await asyncio.wait_for(again.wait(), 10)
        states = await tab.evaluate("window.states")
        assert states[:2] == ["open", "reconnecting"]
        await tab.evaluate("window.client.close()")
        await tab.close()


async def test_no_reconnect_storm_when_every_connection_is_closed_at_once() -> None:
    # Accept, then close at once with 1013 (what a server replaying a backlog bigger than the
    # connection's outbox does): the delays must keep growing, not restart at every open.
    async def closing(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(code=1013, reason="too slow")

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    app = Starlette(
        routes=[
            Route("/", index),
            WebSocketRoute("/ws", closing),
            Mount("/static/tbone", StaticFiles(packages=[("tbone_asgi", "static")])),
        ]
    )
    async with RestartableServer(app) as server, launch_chromium() as browser:
        tab = await browser.new_page()
        await tab.goto(server.url)
        await tab.wait_for_function("window.loaded === true", timeout=WAIT)
        await tab.evaluate(
            """() => {
              window.delays = [];
              const client = window.tbone.connect("/ws", { backoff: { initial: 20, max: 400 } });
              client.onState((c) => c.delay !== undefined && window.delays.push(c.delay));
              window.client = client;
            }"""
        )
        await tab.wait_for_function("window.delays.length >= 5", timeout=WAIT)
        delays = await tab.evaluate("window.delays")
        await tab.evaluate("window.client.close()")
        await tab.close()
    # Drawn from [d/2, d] with d = 20, 40, 80, 160, 320 ms: the fifth is at least 160.
    assert delays[4] >= 160, delays


async def test_an_unreadable_since_is_a_gap_not_the_end(page: Any, channel: MemoryChannel) -> None:
    await page.evaluate("window.open({events: ['a'], since: 'not-an-id'})")
    await page.wait_for_function(
        "window.client.recoveries.length === 1 && window.client.state === 'open'"
        " && window.client.lastId === null",
        timeout=WAIT,
    )
    assert await page.evaluate("window.client.recoveries") == [
        {"channel": None, "complete": False, "since": "not-an-id"}
    ]
    await page.evaluate("window.client.ping()")
    event = await channel.publish("a", 1)
    assert (await got(page, 1))[0][2] == event.id
