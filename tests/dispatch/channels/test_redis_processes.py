"""RedisChannel across processes: events cross process boundaries, and survive a Redis crash."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tbone.dispatch.channels.redis import RedisChannel
from tbone.dispatch.testing import RecordingCarrier
from tests.support.redis_server import RedisServer

ROOT = str(Path(__file__).resolve().parents[3])

# A subscriber process: two carriers on one channel; prints "ready", then each carrier's ids.
SUBSCRIBER = """
import asyncio, json, sys
from tbone.dispatch.channels.redis import RedisChannel
from tbone.dispatch.testing import RecordingCarrier

async def main(url, name, count):
    channel = RedisChannel(name=name, url=url, block_ms=200, probe_interval=1.0)
    carriers = [RecordingCarrier(), RecordingCarrier()]
    for carrier in carriers:
        channel.subscribe("e", carrier)
    await channel.ready()
    print("ready", flush=True)
    for carrier in carriers:
        frames = await carrier.wait_for(count, timeout=20)
        print(json.dumps([f["payload"]["id"] for f in frames]), flush=True)
    await channel.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

# A publisher process: publishes 0, 1, 2... until `target` publishes succeeded. Prints
# "published N" after N successes (every 20), "failing" at its first failure, and at the end a
# JSON summary. A failed publish is not retried with the same number: the event is gone.
PUBLISHER = """
import asyncio, json, sys, time
from tbone.dispatch.channels.redis import RedisChannel

async def main(url, name, target):
    channel = RedisChannel(name=name, url=url, socket_timeout=1.0)
    ok, failed, n = [], 0, 0
    deadline = time.monotonic() + 30
    while len(ok) < target and time.monotonic() < deadline:
        try:
            event = await channel.publish("e", n)
        except Exception as exc:
            if not failed:
                print("failing", type(exc).__name__, flush=True)
            failed += 1
            await asyncio.sleep(0.01)  # Redis is down: do not spin
        else:
            ok.append(event.id)
            if len(ok) % 20 == 0:
                print("published", len(ok), flush=True)
        n += 1
    print(json.dumps({"ok": ok, "failed": failed}), flush=True)
    await channel.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


class Child:
    """A Python child process whose stdout lines a test awaits (bounded)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, script: str, *args: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            *args,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def line(self, timeout: float = 20.0) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            code = await asyncio.wait_for(self.process.wait(), timeout)
            raise AssertionError(f"child exited ({code}) before printing a line")
        return raw.decode().strip()

    async def until(self, prefix: str, timeout: float = 20.0) -> str:
        """The next line starting with ``prefix`` (earlier lines are skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            line = await self.line(max(0.01, deadline - loop.time()))
            if line.startswith(prefix):
                return line

    async def finish(self, timeout: float = 20.0) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


@pytest.fixture
async def children() -> AsyncIterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()
        await child.finish()


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    with RedisServer(tmp_path / "redis", persist=True) as server:
        yield server


async def test_events_published_in_one_process_reach_subscribers_in_another(
    redis_server: RedisServer, children: list[Child]
) -> None:
    subscriber = await Child.start(SUBSCRIBER, redis_server.url, "cross", "30")
    children.append(subscriber)
    assert await subscriber.line() == "ready"
    channel = RedisChannel(name="cross", url=redis_server.url, block_ms=200, probe_interval=1)
    here = RecordingCarrier()
    channel.subscribe("e", here)
    await channel.ready()
    sent = [(await channel.publish("e", {"n": i})).id for i in range(30)]
    for _ in range(2):  # each of the child's two subscribers got all of them, in order
        assert json.loads(await subscriber.line()) == sent
    assert await subscriber.finish() == 0
    assert [f["payload"]["id"] for f in await here.wait_for(30)] == sent
    await channel.close(forget=True)


async def test_redis_killed_while_another_process_publishes(
    redis_server: RedisServer, children: list[Child]
) -> None:
    channel = RedisChannel(
        name="crash", url=redis_server.url, block_ms=200, probe_interval=1.0, backoff=(0.05, 0.3)
    )
    carriers = [RecordingCarrier(), RecordingCarrier()]
    for carrier in carriers:
        channel.subscribe("e", carrier)
    await channel.ready()
    publisher = await Child.start(PUBLISHER, redis_server.url, "crash", "200")
    children.append(publisher)
    await publisher.until("published 40")
    redis_server.kill()  # SIGKILL mid-stream: no shutdown, no final save
    assert (await publisher.until("failing")).startswith("failing")  # it published into the void
    redis_server.start()  # same port, same AOF
    summary = json.loads(await publisher.until("{"))
    assert await publisher.finish() == 0
    assert len(summary["ok"]) == 200
    assert summary["failed"] > 0
    async with aioredis.Redis.from_url(redis_server.url) as client:
        stored = [raw_id.decode() for raw_id, _ in await client.xrange(channel.key)]
    # Every acknowledged publish is stored (AOF, fsync always); a publish whose answer was
    # lost in the crash may be stored too: subscribers must get exactly what Redis holds.
    assert set(summary["ok"]) <= set(stored)
    for carrier in carriers:
        frames = await carrier.wait_for(len(stored), timeout=10)
        assert [f["payload"]["id"] for f in frames] == stored
        data = [f["payload"]["data"] for f in frames]
        assert data == sorted(set(data))  # in publish order, no repeats
    stats = channel.stats()
    assert stats["reconnects"] >= 1
    assert stats["errors"] >= 1
    assert stats["consumer"] == "running"
    await channel.close(forget=True)
