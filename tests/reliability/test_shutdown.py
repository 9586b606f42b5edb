"""Server shutdown under load, then a client resuming against the next server loses nothing.

The channel is a RedisChannel, so history survives the server; the publisher is another
process (``redis_worker.py``) that keeps publishing through the restart. Two ways to stop:

* ``drain``: the app closes its channels first (what a deploy hook does before stopping the
  server): every subscriber gets close code 1001 (going away).
* ``server``: uvicorn is simply told to exit: it closes websockets itself, with 1012 (service
  restart), before the lifespan shutdown closes the channels.

Either way no task is left behind and every event stored meanwhile reaches the resumed client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette

from tbone.dispatch import carriers, close_all_channels, get_channel, serving
from tbone.dispatch.channels.redis import RedisChannel
from tbone_asgi import channel_route, channels_lifespan
from tests.reliability.test_redis_faults import _line, _spawn
from tests.reliability.wsclient import Subscriber
from tests.support.asgi_server import run_uvicorn
from tests.support.redis_server import RedisServer
from tests.support.web_servers import wait_until

CLIENTS = 50
EVENTS = 400  # the publisher process's ticks, ~5 ms apart
STOP_AFTER = 100  # acknowledged events after which the first server stops


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis-shutdown")) as server:
        yield server


def _app(url: str) -> Starlette:
    RedisChannel(name="shut", url=url, block_ms=200, probe_interval=1.0, backoff=(0.05, 0.5))
    return Starlette(routes=[channel_route("/ws", "shut")], lifespan=channels_lifespan("shut"))


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "code"), [("drain", 1001), ("server", 1012)])
async def test_shutdown_under_load_then_resume(
    redis_server: RedisServer, figure: Callable[[str, Any], Any], stop: str, code: int
) -> None:
    async with aioredis.Redis.from_url(redis_server.url) as admin:
        await admin.delete("tbone:channel:shut")
    publisher = None
    try:
        async with run_uvicorn(_app(redis_server.url)) as server:
            channel = get_channel("shut")
            assert channel is not None
            await channel.ready()
            url = server.ws_url("/ws?events=tick,end")
            clients = await asyncio.gather(*(Subscriber.connect(url) for _ in range(CLIENTS)))
            await wait_until(lambda: channel.stats()["subscribers"] == CLIENTS, 10, "subscribed")
            publisher = await _spawn("publish", redis_server.url, "shut", str(EVENTS))
            acked = 0
            while acked < STOP_AFTER:
                acked += (await _line(publisher)).startswith("acked")
            await asyncio.gather(*(c.read_events(1) for c in clients))  # all under load
            stopping = time.monotonic()
            if stop == "drain":
                await close_all_channels()
            else:
                server.server.should_exit = True  # what uvicorn does on SIGTERM
            await asyncio.gather(*(c.read_until_closed() for c in clients))
            closed_in = time.monotonic() - stopping
        # The server has stopped: nothing of it may be left in this loop.
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert pending == [], pending
        assert carriers.live_connections() == 0
        assert not carriers._closing
        assert serving._open == {}
        assert [c.close_code for c in clients] == [code] * CLIENTS

        # The next server (a new process would make a new channel: so do we).
        await close_all_channels()
        async with run_uvicorn(_app(redis_server.url)) as server:
            resumed = await asyncio.gather(
                *(
                    Subscriber.connect(server.ws_url(f"/ws?events=tick,end&since={c.ids[-1]}"))
                    for c in clients
                )
            )
            while not (await _line(publisher)).startswith("acked -1 "):
                pass  # the publisher's "end" event is stored
            await asyncio.gather(
                *(
                    c.read_until(
                        lambda s: any(
                            f["payload"]["name"] == "end" for f in s.frames if f["type"] == "event"
                        )
                    )
                    for c in resumed
                )
            )
            for client in resumed:
                await client.close()
        assert await asyncio.wait_for(publisher.wait(), 30) == 0
    finally:
        if publisher is not None and publisher.returncode is None:
            publisher.kill()
            await publisher.wait()

    async with aioredis.Redis.from_url(redis_server.url) as admin:
        stored = [i.decode() for i, _ in await admin.xrange("tbone:channel:shut")]
    lost = 0
    for before, after in zip(clients, resumed, strict=True):
        expected = stored[stored.index(before.ids[-1]) + 1 :]
        lost += len(set(expected) - set(after.ids))
        assert after.ids == expected
        assert after.recovered == [{"channel": "shut", "complete": True}]
    assert lost == 0
    figure(f"{stop}: close code", code)
    figure(f"{stop}: clients", CLIENTS)
    figure(f"{stop}: all closed within s", closed_in)
    figure(f"{stop}: events stored across the restart", len(stored))
    figure(f"{stop}: events lost on resume", lost)
