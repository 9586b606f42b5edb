"""Redis Sentinel failovers under a steady publish, with two uvicorn workers and websockets.

A private master, replica and three Sentinels (tests/support/redis_ha.py); two workers, each
its own ``uvicorn`` process with a ``RedisChannel`` on ``Sentinel(...).master_for(...)``; three
websocket clients per worker, each reconnecting after a close and resuming with the last id
it saw (what the browser client does); a publisher in the test that retries each event until
the master acknowledges it. Then the master changes, in the middle of the stream:

* ``SENTINEL FAILOVER``: the replica is promoted at once, while the old master still takes
  writes from the connections it has, until the Sentinels turn it into a replica (about ten
  seconds later). Everything it acknowledged meanwhile is lost: its new master never had it.
* ``kill -9`` of the master, just after its replica dropped its link (it would reconnect
  within a second): the Sentinels agree the master is down and promote the replica, which
  lacks the last events the master acknowledged (and the readers may have delivered).

Asserted, for every client: each event published after the failover completed arrives,
once, in order; each acknowledged event it did not get was reported to it (closed with 1013,
then ``recovered`` with ``complete: false`` on its resume), never a silent gap.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.sentinel import Sentinel

from tbone.dispatch.channels.redis import RedisChannel
from tests.support.redis_ha import SERVICE, SentinelSetup
from tests.support.resuming_reader import Reader
from tests.support.uvicorn_process import Worker, uvicorn_process

pytestmark = pytest.mark.slow

APP = """
import json
import os

from redis.asyncio.sentinel import Sentinel
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from tbone.dispatch.channels.redis import RedisChannel
from tbone_asgi import channel_route, channels_lifespan

sentinels = [tuple(address) for address in json.loads(os.environ["TBONE_TEST_SENTINELS"])]
master = Sentinel(sentinels, socket_timeout=1.0).master_for("mymaster", socket_timeout=2.0)
channel = RedisChannel(
    name="ha", client=master, block_ms=200, probe_interval=1.0, backoff=(0.05, 0.5)
)


async def stats(request):
    await channel.ready()
    return JSONResponse(channel.stats())


app = Starlette(
    routes=[Route("/stats", stats), channel_route("/ws", channel)],
    lifespan=channels_lifespan(channel),
)
"""

READERS = 3  # websocket clients per worker
BEFORE = 50  # events acknowledged before the failover starts
BEHIND = 5  # events acknowledged after the replica dropped its link, before the kill
AFTER = 40  # events published after it completed
PACE = 0.01  # seconds between two publishes (pacing, not synchronisation)
DEADLINE = 60.0


class Publisher:
    """Publishes ``tick`` events, retrying each until a master acknowledges it."""

    def __init__(self, channel: RedisChannel) -> None:
        self.channel = channel
        self.acked: list[tuple[str, float]] = []  # (id, when the successful attempt started)
        self.failures = 0
        self.stop = asyncio.Event()
        self._changed = asyncio.Event()

    async def publish(self, event: str, data: Any) -> str:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                stored = await self.channel.publish(event, data)
            except redis.exceptions.RedisError:
                self.failures += 1  # no master right now, or the old one refused: again
                await asyncio.sleep(0.02)
                continue
            self.acked.append((stored.id, started))
            self._changed.set()
            return stored.id

    async def run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            await self.publish("tick", {"seq": seq})
            seq += 1
            await asyncio.sleep(PACE)

    async def wait_acked(self, count: int, since: float = 0.0) -> None:
        """Until ``count`` events whose successful attempt started after ``since`` were acked."""
        while sum(1 for _, started in self.acked if started > since) < count:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), DEADLINE)


async def _until_ready(workers: list[Worker], readers: list[Reader]) -> None:
    for worker in workers:
        await worker.get("/stats")  # answers once that worker's reader reads the stream
    await asyncio.wait_for(asyncio.gather(*(r.subscribed.wait() for r in readers)), DEADLINE)
    for worker in workers:
        assert (await worker.get("/stats"))["subscribers"] == READERS


@pytest.mark.parametrize("how", ["sentinel failover", "kill -9"])
async def test_every_event_after_a_failover_arrives_and_every_loss_is_reported(
    how: str, tmp_path: Path, figure: Callable[[str, Any], Any]
) -> None:
    loop = asyncio.get_running_loop()
    with SentinelSetup(tmp_path / "redis") as ha:
        (tmp_path / "app.py").write_text(APP)
        env = {"TBONE_TEST_SENTINELS": json.dumps(ha.sentinel_addresses)}
        sentinel = Sentinel(ha.sentinel_addresses, socket_timeout=1.0)
        master = sentinel.master_for(SERVICE, socket_timeout=2.0)
        publisher = Publisher(RedisChannel(name="ha", client=master))
        async with (
            uvicorn_process(tmp_path, env=env) as one,
            uvicorn_process(tmp_path, env=env) as two,
        ):
            workers = [one, two]
            readers = [Reader(w.ws_url("/ws?events=tick,end")) for w in workers for _ in "abc"]
            reading = [asyncio.ensure_future(r.run()) for r in readers]
            publishing: asyncio.Future[None] | None = None
            try:
                await _until_ready(workers, readers)
                publishing = asyncio.ensure_future(publisher.run())
                await publisher.wait_acked(BEFORE)
                started = loop.time()
                if how == "kill -9":
                    await asyncio.to_thread(ha.cut_replication)
                    await publisher.wait_acked(BEHIND, since=loop.time())
                    old = await asyncio.to_thread(ha.kill_master)
                    new = await asyncio.to_thread(ha.wait_switched, old)
                else:
                    old = ha.master_port()
                    await asyncio.to_thread(ha.failover)
                    new = await asyncio.to_thread(ha.wait_switched, old)
                    # Complete once the old master no longer takes writes.
                    await asyncio.to_thread(ha.wait_demoted, old)
                done = loop.time()
                await publisher.wait_acked(AFTER, since=done)
                publisher.stop.set()
                await asyncio.wait_for(publishing, DEADLINE)
                end = await publisher.publish("end", None)
                await asyncio.wait_for(asyncio.gather(*(r.ended.wait() for r in readers)), DEADLINE)
                stats = [await w.get("/stats") for w in workers]
            finally:
                for task in [*reading, *([publishing] if publishing else [])]:
                    task.cancel()
                await asyncio.gather(*reading, return_exceptions=True)
                await publisher.channel.close(forget=True)
                for client in (master, *sentinel.sentinels):
                    await client.aclose()
        async with aioredis.Redis(port=new, decode_responses=True) as client:
            held = {entry_id for entry_id, _ in await client.xrange("tbone:channel:ha")}

    acked = [entry_id for entry_id, _ in publisher.acked]
    after = [entry_id for entry_id, started in publisher.acked if started > done]
    lost = [entry_id for entry_id in acked if entry_id not in held]
    assert end in held
    assert not set(after) & set(lost)
    for number, reader in enumerate(readers):
        got = reader.ids
        assert len(got) == len(set(got)), f"reader {number}: an event arrived twice"
        assert got == sorted(got, key=lambda i: tuple(map(int, i.split("-")))), number
        missing = [entry_id for entry_id in after if entry_id not in set(got)]
        assert not missing, f"reader {number}: {len(missing)} events after the failover missing"
        unseen = [entry_id for entry_id in acked if entry_id not in set(got)]
        # Held by the new master: a resume brings it. Lost with the old one: told, not silent.
        assert all(entry_id in lost for entry_id in unseen), number
        # Every worker read past what the new master holds: each client was told.
        assert reader.told_of_a_gap, (number, reader.closes, reader.recovered)
    # The old master took writes its replica never had (until it was demoted, or while the
    # replica was behind): lost, and reported by each worker.
    assert lost
    for worker_stats in stats:
        assert worker_stats["gaps"] >= 1, worker_stats
    figure(f"{how}: events acknowledged", len(acked))
    figure(f"{how}: acknowledged, then lost with the old master", len(lost))
    figure(f"{how}: seconds until the failover completed", done - started)
    figure(f"{how}: publishes that failed and were retried", publisher.failures)
    figure(f"{how}: reader resumes (all readers)", sum(len(r.closes) for r in readers))
    figure(f"{how}: gaps reported (both workers)", sum(s["gaps"] for s in stats))
    figure(
        f"{how}: of which the stream ended below a reader", sum(s["stream_resets"] for s in stats)
    )
