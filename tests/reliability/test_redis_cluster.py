"""RedisChannel on a Redis Cluster: channels spread over the masters, and one master down.

A private cluster of three masters without replicas (tests/support/redis_ha.py), each with an
fsynced AOF; two workers, each its own ``uvicorn`` process with 30 ``RedisChannel`` objects
on one ``RedisCluster`` client; one websocket client per channel per worker. Each channel's
stream is one key, so it lives in one slot: the 30 streams land on all three masters.

Then one master is killed (the one serving slot 0, the hardest case for redis-py's cluster
client). Without a replica its slots are down: a publish to its channels fails with an error
the caller sees, their readers report the outage in ``stats()``, and the channels on the
other masters go on as if nothing happened: live events, and resumes that read history. The
master comes back with its data dir: the readers resume where they were, like after any
Redis outage, and every client has every event that was acknowledged, once, in order, with
no gap reported.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster

from tbone.dispatch.channels.redis import RedisChannel
from tests.support.redis_ha import ClusterSetup, cli
from tests.support.resuming_reader import Reader
from tests.support.uvicorn_process import Worker, uvicorn_process

pytestmark = pytest.mark.slow

CHANNELS = 30
ROUND = 5  # events per channel in each round
OPTIONS = "block_ms=200, probe_interval=1.0, backoff=(0.05, 0.5)"

APP = f"""
import json
import os

from redis.asyncio.cluster import ClusterNode, RedisCluster
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from tbone.dispatch.channels.redis import RedisChannel
from tbone_asgi import channel_route, channels_lifespan

ports = json.loads(os.environ["TBONE_TEST_CLUSTER"])
cluster = RedisCluster(
    startup_nodes=[ClusterNode("127.0.0.1", port) for port in ports], socket_timeout=2.0
)
channels = [
    RedisChannel(name=f"ch{{n:02d}}", client=cluster, {OPTIONS}) for n in range({CHANNELS})
]


async def ready(request):
    for channel in channels:
        await channel.ready()
    return JSONResponse({{}})


async def stats(request):
    return JSONResponse({{channel.name: channel.stats() for channel in channels}})


app = Starlette(
    routes=[
        Route("/ready", ready),
        Route("/stats", stats),
        *(channel_route(f"/ws/{{channel.name}}", channel) for channel in channels),
    ],
    lifespan=channels_lifespan(*channels),
)
"""


async def _publish_round(
    channels: list[RedisChannel], acked: dict[str, list[str]], event: str = "tick"
) -> None:
    """One ``event`` on each channel, retrying each until the cluster acknowledges it."""
    for _ in range(ROUND if event == "tick" else 1):
        for channel in channels:
            for attempt in range(50):
                try:
                    acked[channel.name].append((await channel.publish(event, None)).id)
                    break
                except redis.exceptions.RedisError:
                    # The cluster client re-reads the slots after a failure: the next try
                    # goes where the slot is served now.
                    await asyncio.sleep(0.05 * attempt)
            else:
                raise AssertionError(f"{channel.name}: no publish went through")


async def _stats(workers: list[Worker]) -> list[dict[str, Any]]:
    return [await worker.get("/stats") for worker in workers]


async def _until(workers: list[Worker], check: Callable[[list[dict[str, Any]]], bool]) -> None:
    """Poll both workers' stats (state nothing signals) until ``check`` holds; bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    while not check(await _stats(workers)):
        assert loop.time() < deadline, "the workers' stats never showed it"
        await asyncio.sleep(0.05)


async def test_channels_spread_over_the_masters_and_one_master_down_is_an_outage(
    tmp_path: Path, figure: Callable[[str, Any], Any]
) -> None:
    loop = asyncio.get_running_loop()
    with ClusterSetup(tmp_path / "cluster") as ha:
        names = [f"ch{n:02d}" for n in range(CHANNELS)]
        home = {name: ha.port_of_key(f"tbone:channel:{name}") for name in names}
        assert set(home.values()) == set(ha.ports)  # every master serves some channels
        (tmp_path / "app.py").write_text(APP)
        env = {"TBONE_TEST_CLUSTER": json.dumps(ha.ports)}
        client = RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", port) for port in ha.ports],
            socket_timeout=2.0,
        )
        channels = [RedisChannel(name=name, client=client) for name in names]
        acked: dict[str, list[str]] = {name: [] for name in names}
        async with (
            uvicorn_process(tmp_path, env=env) as one,
            uvicorn_process(tmp_path, env=env) as two,
        ):
            workers = [one, two]
            readers = {
                (w.port, name): Reader(w.ws_url(f"/ws/{name}?events=tick,end"))
                for w in workers
                for name in names
            }
            reading = [asyncio.ensure_future(r.run()) for r in readers.values()]
            try:
                for worker in workers:
                    await worker.get("/ready", timeout=30)
                await asyncio.wait_for(
                    asyncio.gather(*(r.subscribed.wait() for r in readers.values())), 30
                )
                await _publish_round(channels, acked)
                for reader in readers.values():
                    await reader.wait_for(ROUND)
                # The streams really are on their masters, one key each.
                for name, port in home.items():
                    assert cli(port, "EXISTS", f"tbone:channel:{name}") == "1", name

                down = ha.ports[0]
                lost = [c for c in channels if home[c.name] == down]
                kept = [c for c in channels if home[c.name] != down]
                ha.node(down).kill()
                killed = loop.time()
                with pytest.raises(redis.exceptions.RedisError):
                    await lost[0].publish("tick", "refused: its master is down")
                failed_in = loop.time() - killed
                # The other masters' channels go on meanwhile, delivered as usual.
                await _publish_round(kept, acked)
                for (_, name), reader in readers.items():
                    if home[name] != down:
                        await reader.wait_for(2 * ROUND)
                # And so does their history: a client resuming on each worker gets the rest.
                for worker in workers:
                    name = kept[0].name
                    resumed = Reader(
                        worker.ws_url(f"/ws/{name}?events=tick&since={acked[name][0]}")
                    )
                    resuming = asyncio.ensure_future(resumed.run())
                    try:
                        await resumed.wait_for(2 * ROUND - 1, recovered=1)
                    finally:
                        resuming.cancel()
                    assert (resumed.ids, resumed.recovered) == (acked[name][1:], [True])
                # Their readers say so: the outage shows in stats, for those channels only.
                await _until(
                    workers,
                    lambda stats: all(
                        s[c.name]["consumer"] == "reconnecting" and s[c.name]["errors"] >= 1
                        for s in stats
                        for c in lost
                    ),
                )
                noticed = loop.time() - killed

                await asyncio.to_thread(ha.node(down).start)  # its data dir: AOF and nodes.conf
                await asyncio.to_thread(ha.wait_ok)
                back = loop.time()
                await _publish_round(channels, acked)
                await _publish_round(channels, acked, "end")
                await asyncio.wait_for(
                    asyncio.gather(*(r.ended.wait() for r in readers.values())), 30
                )
                recovered_in = loop.time() - back
                stats = await _stats(workers)
            finally:
                for task in reading:
                    task.cancel()
                await asyncio.gather(*reading, return_exceptions=True)
                for channel in channels:
                    await channel.close(forget=True)
                await client.aclose()

    for (port, name), reader in readers.items():
        assert reader.ids == acked[name], (port, name, len(reader.ids), len(acked[name]))
        assert reader.closes == [], (port, name)  # no gap, no slow close: never closed
    for worker_stats in stats:
        for name in names:
            channel_stats = worker_stats[name]
            assert channel_stats["gaps"] == 0, channel_stats
            assert channel_stats["consumer"] == "running", channel_stats
            if home[name] == down:
                assert channel_stats["reconnects"] >= 1, channel_stats
            else:
                assert channel_stats["errors"] == 0, (channel_stats["last_error"], channel_stats)
    figure("channels", CHANNELS)
    figure("channels on the killed master", len(lost))
    figure("masters serving channels", len(set(home.values())))
    figure("publish to a down slot failed after s", failed_in)
    figure("outage shown in both workers' stats after s", noticed)
    figure("every client had every event, after the restart, within s", recovered_in)
