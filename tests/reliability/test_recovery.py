"""What a client loses it gets back: after a 1013 in a burst, and while resuming in traffic.

* A client that stops reading during a burst is closed with 1013; it reads what was buffered
  for it, reconnects with the last id it saw and gets the rest, ``complete: true``, with the
  defaults (history 10,000 events, deeper than what one connection may hold back).
* The same with 3,000 events of 10 KB on uvicorn, Sanic and aiohttp, memory and Redis: the
  rest (some 26 MB) is longer than the 16 MiB a replay was once capped at, and all of it
  comes back in one resume, then ``complete: true``, then live events.
* Resume in the middle of traffic, over the wire on Redis: a connection subscribed to ``a``
  keeps resuming ``b`` from old ids while both are published in a tight loop; it must lose
  no ``a`` event (a resume touches only the names it resumes), and each resume of ``b`` must
  bring exactly the ``b`` events after its ``since``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from starlette.applications import Starlette

from tbone.dispatch import Channel, MemoryChannel
from tbone.dispatch.carriers import Carrier
from tbone.dispatch.protocol import Limits
from tbone_asgi import channel_route
from tests.reliability.test_bursts import QUICK, serving
from tests.reliability.test_bursts import make_channel as make_burst_channel
from tests.support.asgi_server import run_uvicorn, wait_until
from tests.support.web_servers import read_until_closed, small_buffer_socket, ws_connect

pytestmark = [pytest.mark.slow, pytest.mark.load]


def make_channel(kind: str, request: pytest.FixtureRequest) -> Channel:
    name = f"recover-{kind}-{time.monotonic_ns()}"
    if kind == "memory":
        return MemoryChannel(name=name)
    from tbone.dispatch.channels.redis import RedisChannel

    url = request.getfixturevalue("redis_url")
    return RedisChannel(name=name, url=url, block_ms=500, probe_interval=5.0)


def events(texts: list[Any]) -> list[dict[str, Any]]:
    frames = [json.loads(t) for t in texts]
    return [f["payload"] for f in frames if f["type"] == "event"]


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_client_closed_in_a_burst_gets_the_rest_with_its_last_id(
    kind: str, request: pytest.FixtureRequest, figure: Any
) -> None:
    channel = make_channel(kind, request)
    count = 6000
    app = Starlette(routes=[channel_route("/ws", channel)])  # every default
    async with run_uvicorn(app) as server:
        await channel.ready()
        url = server.ws_url("/ws?events=e")
        async with ws_connect(
            url, compression=None, max_queue=1, sock=small_buffer_socket(url)
        ) as client:
            await wait_until(lambda: channel.stats()["subscribers"] == 1)
            [carrier] = channel.subscribers("e")
            client.transport.pause_reading()  # it stops reading: a tab in the background
            pad = "x" * 1000
            published = [
                (await channel.publish("e", {"n": n, "pad": pad})).id for n in range(count)
            ]
            await wait_until(
                lambda: carrier.closed,
                timeout=Carrier.default_slow_timeout * 1.5 + 10,
                what="closed as too slow",
            )
            assert carrier.close_code == 1013
            client.transport.resume_reading()
            texts, _closed = await read_until_closed(client, timeout=10)
        got = events(texts)
        assert [e["id"] for e in got] == published[: len(got)]  # a gapless prefix
        assert 0 < len(got) < count
        last = got[-1]["id"]
        # Back with the last id it saw: the rest, then recovered complete:true, then live.
        async with ws_connect(server.ws_url(f"/ws?events=e&since={last}")) as again:
            rest = [
                json.loads(await asyncio.wait_for(again.recv(), 10))
                for _ in range(count - len(got))
            ]
            recovered = json.loads(await asyncio.wait_for(again.recv(), 10))
            live = await channel.publish("e", {"n": count})
            after = json.loads(await asyncio.wait_for(again.recv(), 10))
    assert [f["payload"]["id"] for f in rest] == published[len(got) :]
    assert recovered == {
        "type": "recovered",
        "payload": {"channel": channel.name, "complete": True},
    }
    assert after["payload"]["id"] == live.id
    figure(f"{kind}: events the closed client had received", len(got))
    figure(f"{kind}: events it got back on resume", len(rest))


#: What one replay was capped at before (it then said complete: false and skipped the rest).
OLD_CAP_BYTES = 16 * 1024 * 1024


@pytest.mark.parametrize("kind", ["memory", "redis"])
@pytest.mark.parametrize("server", ["uvicorn", "uvicorn-prepared", "sanic", "aiohttp"])
async def test_a_reader_closed_in_a_burst_of_10kb_events_gets_all_the_rest_back(
    server: str, kind: str, request: pytest.FixtureRequest, figure: Any
) -> None:
    channel = make_burst_channel(kind, lambda: request.getfixturevalue("redis_url"))
    count = 3000
    pad = "x" * 10_000
    async with serving(server, channel, QUICK) as base:  # /stuck: slow_timeout=QUICK
        await channel.ready()
        url = base + "/stuck?events=e"
        async with ws_connect(
            url, compression=None, max_queue=1, sock=small_buffer_socket(url)
        ) as client:
            await wait_until(lambda: channel.stats()["subscribers"] == 1)
            [carrier] = channel.subscribers("e")
            client.transport.pause_reading()  # it stops reading during the burst
            published = [
                (await channel.publish("e", {"n": n, "pad": pad})).id for n in range(count)
            ]
            await wait_until(
                lambda: carrier.closed, timeout=QUICK * 1.5 + 10, what="closed as too slow"
            )
            assert carrier.close_code == 1013
            client.transport.resume_reading()
            texts, closed = await read_until_closed(client, timeout=10)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1013
        got = events(texts)
        assert [e["id"] for e in got] == published[: len(got)]  # a gapless prefix
        assert 0 < len(got) < count
        missed = published[len(got) :]
        frame_bytes = len(texts[-1].encode())
        assert len(missed) * frame_bytes > OLD_CAP_BYTES  # longer than a replay once was
        # Back with the last id it saw: all the rest, once each and in order, then
        # recovered complete: true, then live events.
        resume_url = base + f"/ws?events=e&since={got[-1]['id']}"
        async with ws_connect(resume_url, compression=None) as again:
            rest = [
                json.loads(await asyncio.wait_for(again.recv(), 10)) for _ in range(len(missed))
            ]
            recovered = json.loads(await asyncio.wait_for(again.recv(), 10))
            live = await channel.publish("e", {"n": count})
            after = json.loads(await asyncio.wait_for(again.recv(), 10))
    assert [f["payload"]["id"] for f in rest] == missed
    assert recovered == {
        "type": "recovered",
        "payload": {"channel": channel.name, "complete": True},
    }
    assert after["payload"]["id"] == live.id
    assert channel.stats()["closed_slow"] == 1
    figure(f"{server} {kind}: events the closed reader had received", len(got))
    figure(f"{server} {kind}: MB it got back in one resume", len(missed) * frame_bytes / 1e6)


async def test_resuming_one_name_in_traffic_loses_no_event_of_another(
    redis_url: str, figure: Any
) -> None:
    from tbone.dispatch.channels.redis import RedisChannel

    channel = RedisChannel(
        name=f"traffic-{time.monotonic_ns()}", url=redis_url, block_ms=500, probe_interval=5.0
    )
    # Frames and resumes are rate-limited per connection; this client resumes a lot on purpose.
    limits = Limits(max_messages_per_second=float("inf"), max_resumes_per_minute=float("inf"))
    app = Starlette(routes=[channel_route("/ws", channel, limits=limits)])
    total = 3000
    async with run_uvicorn(app) as server:
        await channel.ready()
        async with ws_connect(server.ws_url("/ws?events=a"), compression=None) as client:
            await client.send('{"type":"ping"}')
            assert json.loads(await asyncio.wait_for(client.recv(), 5)) == {"type": "pong"}
            b_ids: list[str] = []
            a_ids: list[str] = []

            async def publish() -> None:
                for n in range(total):  # a tight loop, b now and then
                    a_ids.append((await channel.publish("a", n)).id)
                    if n % 10 == 0:
                        b_ids.append((await channel.publish("b", n)).id)

            publishing = asyncio.ensure_future(publish())
            received: list[dict[str, Any]] = []  # every frame, in order
            resumes: list[tuple[int, str]] = []  # (index in received, since)
            while not (publishing.done() and a_ids and _got_a(received) == len(a_ids)):
                frame = json.loads(await asyncio.wait_for(client.recv(), 15))
                received.append(frame)
                if len(received) % 20 == 0 and len(b_ids) > 5:
                    since = b_ids[-5]  # back a little: the replay and live events cross
                    resumes.append((len(received), since))
                    await client.send(
                        json.dumps(
                            {"type": "subscribe", "payload": {"events": ["b"], "since": since}}
                        )
                    )
            await publishing
            # Let the last resume end: a ping answered after it proves it is out.
            await client.send('{"type":"ping"}')
            while (frame := json.loads(await asyncio.wait_for(client.recv(), 15))) != {
                "type": "pong"
            }:
                received.append(frame)
    got_a = [f["payload"]["id"] for f in received if _is(f, "a")]
    assert got_a == a_ids  # nothing of a lost or repeated, whatever b's resumes did
    recovered = [f for f in received if f["type"] == "recovered"]
    assert len(recovered) == len(resumes)
    assert all(f["payload"]["complete"] for f in recovered)
    assert not [f for f in received if f["type"] == "error"]
    # Each resume of b: the b events after its since, from the first, before its recovered
    # frame (live b events of the earlier subscription may come first: the server had not
    # read the subscribe frame yet); after it, b goes on from there with no gap or repeat.
    ends = [i for i, f in enumerate(received) if f["type"] == "recovered"]
    starts = [start for start, _ in resumes]
    for k, ((start, since), end) in enumerate(zip(resumes, ends, strict=True)):
        before = [f["payload"]["id"] for f in received[start:end] if _is(f, "b")]
        after = b_ids[b_ids.index(since) + 1 :]
        assert any(before[j:] == after[: len(before) - j] for j in range(len(before))), (
            k,
            since,
            before,
            after[:10],
        )
        stop = starts[k + 1] if k + 1 < len(starts) else len(received)
        then = [f["payload"]["id"] for f in received[end:stop] if _is(f, "b")]
        assert then == b_ids[b_ids.index(before[-1]) + 1 :][: len(then)], k
    assert [f["payload"]["id"] for f in received if _is(f, "b")][-1] == b_ids[-1]
    figure("resumes of b in traffic", len(resumes))
    figure("a events, none lost", len(got_a))


def _is(frame: dict[str, Any], name: str) -> bool:
    return frame["type"] == "event" and frame["payload"]["name"] == name


def _got_a(received: list[dict[str, Any]]) -> int:
    return sum(1 for f in received if _is(f, "a"))
