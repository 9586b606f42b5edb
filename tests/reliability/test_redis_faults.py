"""Redis faults with real processes: kills and restarts under a steady publish, a silent link.

The publisher and the two consumers are separate OS processes (``redis_worker.py``), as the
workers of a deployment would be; the Redis server is a private ``redis-server`` with an
fsynced AOF (tests/support/redis_server.py), so a SIGKILL loses nothing it acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tbone.dispatch.channels.redis import RedisChannel
from tbone.dispatch.testing import RecordingCarrier
from tests.support.redis_server import RedisServer
from tests.support.web_servers import wait_until

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 600  # published by the publisher process, ~5 ms apart
KILL_AFTER = (100, 250, 400)  # acknowledged events after which Redis is killed and restarted
SUBSCRIBERS = 3  # per consumer process
FAILS_PER_OUTAGE = 5  # Redis stays down until this many publishes failed on it (~0.1 s)


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.reliability.redis_worker",
        *args,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _line(process: asyncio.subprocess.Process, timeout: float = 30.0) -> str:
    assert process.stdout is not None
    raw = await asyncio.wait_for(process.stdout.readline(), timeout)
    if not raw:
        assert process.stderr is not None
        err = await process.stderr.read()
        raise AssertionError(f"worker exited early: {err.decode()[-2000:]}")
    return raw.decode().strip()


@pytest.mark.slow
async def test_three_kills_during_a_steady_publish(
    tmp_path: Path, figure: Callable[[str, Any], Any]
) -> None:
    with RedisServer(tmp_path / "redis", persist=True) as server:
        consumers = [await _spawn("consume", server.url, "faults", str(SUBSCRIBERS)) for _ in "ab"]
        publisher = None
        try:
            for consumer in consumers:
                assert await _line(consumer) == "ready"
            publisher = await _spawn("publish", server.url, "faults", str(EVENTS))
            acked = retries = 0
            outages: list[float] = []
            down: float | None = None
            failed = 0
            kills = list(KILL_AFTER)
            started = time.monotonic()
            while acked < EVENTS + 1:  # the ticks and the final "end"
                line = await _line(publisher)
                if line.startswith("retry"):
                    retries += 1
                    failed += 1
                    if down is not None and failed >= FAILS_PER_OUTAGE:  # bring Redis back
                        # start() blocks until Redis is ready: run it off the loop.
                        await asyncio.to_thread(server.start)
                        outages.append(time.monotonic() - down)
                        down = None
                    continue
                acked += 1
                if kills and acked == kills[0]:
                    kills.pop(0)
                    server.kill()  # SIGKILL; Redis stays down until a publish fails on it
                    down = time.monotonic()
                    failed = 0
            assert not kills, "the publisher finished before every kill happened"
            results = [json.loads(await _line(c, timeout=60)) for c in consumers]
            elapsed = time.monotonic() - started
            for process in (*consumers, publisher):
                assert await asyncio.wait_for(process.wait(), 30) == 0
        finally:
            for process in (*consumers, *([publisher] if publisher else [])):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        async with aioredis.Redis.from_url(server.url) as client:
            stored = [
                entry_id.decode() for entry_id, _ in await client.xrange("tbone:channel:faults")
            ]

    # Every stored event, exactly once and in stream order, to each of the 6 subscribers.
    assert len(stored) >= EVENTS + 1
    for worker, result in enumerate(results):
        for number, ids in enumerate(result["ids"]):
            assert ids == stored, (
                f"consumer {worker} subscriber {number}: {len(ids)} events, "
                f"{len(ids) - len(set(ids))} repeated, {len(set(stored) - set(ids))} missing"
            )
        assert result["stats"]["reconnects"] >= 3
    figure("events stored", len(stored))
    figure("subscribers (2 processes x 3)", 2 * SUBSCRIBERS)
    figure("publisher retries while Redis was down", retries)
    figure("longest outage (kill to ready again) s", max(outages))
    figure(
        "consumer reconnects (min over processes)", min(r["stats"]["reconnects"] for r in results)
    )
    figure("run time s", elapsed)


async def test_a_stopped_redis_is_noticed_within_the_probe_interval(
    tmp_path: Path, figure: Callable[[str, Any], Any]
) -> None:
    probe = 1.0
    with RedisServer(tmp_path / "redis", persist=True) as server:
        channel = RedisChannel(
            name="silent", url=server.url, block_ms=300, probe_interval=probe, backoff=(0.05, 0.2)
        )
        carrier = RecordingCarrier()
        channel.subscribe("e", carrier)
        await channel.ready()
        before = await channel.publish("e", "before")
        await carrier.wait_for(1)
        server.pause()  # SIGSTOP: the socket stays open, nothing answers
        try:
            paused = time.monotonic()
            # The reader's state has no event to await: wait_until checks it every 5 ms.
            await wait_until(
                lambda: channel.stats()["consumer"] == "reconnecting", probe + 2.0, "noticed"
            )
            noticed = time.monotonic() - paused
        finally:
            server.resume()
        await channel.ready()
        after = await channel.publish("e", "after")
        frames = await carrier.wait_for(2)
        await channel.close(forget=True)
    # The blocked XREAD may have just started when Redis stopped: up to probe_interval later.
    assert noticed <= probe + 0.5, noticed
    assert [f["payload"]["id"] for f in frames] == [before.id, after.id]
    figure("probe_interval s", probe)
    figure("silent link noticed after s", noticed)
