"""Replays are bounded: long resumes cannot make the server hold their history in memory.

A RedisChannel holds 10,000 events of 10 KB (100 MB). Four clients, in a process of their
own, each send a subscribe frame with ``since`` at the start of the stream; a fifth sends
its frame and never reads. Meanwhile a well-behaved client receives a paced live stream. The
server reads history in pages bounded by the connection's outbox, paced by what each client
reads, and sends each reader the whole history (then ``complete: true``): what bounds one
resume's work is the channel's history, not a cap. Measured: the server process's peak
memory growth, and the well-behaved client's latency. (The rate limit on resumes is in
test_limits.py.)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette

from tbone.dispatch import jsonenc
from tbone.dispatch.channels.redis import RedisChannel
from tbone_asgi import channel_route
from tbone_asgi.uvicorn import WebSocketProtocol
from tests.support.asgi_server import run_uvicorn, wait_until
from tests.support.web_servers import ws_connect

pytestmark = [pytest.mark.slow, pytest.mark.load]

ROOT = Path(__file__).resolve().parents[2]
STORED = 10_000
RESUMES = 1
PEAK_MIB = 96


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("ws", ["auto", "prepared"])
async def test_long_replays_are_paged_and_paced(redis_url: str, figure: Any, ws: str) -> None:
    # Room for the live events too: nothing is trimmed under the replays (each would then
    # rightly end with complete false, its start lost).
    channel = RedisChannel(name=f"replays-{time.monotonic_ns()}", url=redis_url, maxlen=2 * STORED)
    # 100 MB of history, written the way the channel writes it, in a few round trips.
    async with aioredis.Redis.from_url(redis_url) as client:
        data = jsonenc.dumps_bytes({"pad": "x" * 10_000})
        ids: list[str] = []
        for _ in range(0, STORED, 500):
            pipe = client.pipeline(transaction=False)
            for _ in range(500):
                pipe.xadd(channel.key, {b"n": b"e", b"d": data})
            ids += [raw.decode() for raw in await pipe.execute()]
    app = Starlette(routes=[channel_route("/ws", channel)])  # the defaults
    # prepared: tbone_asgi.uvicorn's protocol, the replayed events as prepared frames.
    async with run_uvicorn(app, ws=WebSocketProtocol if ws == "prepared" else ws) as server:
        await channel.ready()
        async with ws_connect(server.ws_url("/ws?events=live"), compression=None) as good:
            await good.send('{"type":"ping"}')
            assert json.loads(await asyncio.wait_for(good.recv(), 5)) == {"type": "pong"}
            start = peak = rss()
            began = time.monotonic()
            attackers = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.reliability.replay_clients",
                server.ws_url("/ws"),
                "5",
                str(RESUMES),
                ids[0],
                "--stuck",
                "1",
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert attackers.stdin is not None
            assert attackers.stdout is not None
            latencies: list[float] = []

            async def live() -> None:
                n = 0
                while attackers.returncode is None:
                    await channel.publish("live", {"n": n, "t": time.time()})
                    n += 1
                    await asyncio.sleep(0.02)  # 50 events a second

            async def read_live() -> None:
                while True:
                    frame = json.loads(await good.recv())
                    latencies.append(time.time() - frame["payload"]["data"]["t"])

            async def sample() -> None:
                nonlocal peak
                while attackers.returncode is None:
                    peak = max(peak, rss())
                    await asyncio.sleep(0.02)

            tasks = [asyncio.ensure_future(t()) for t in (live, read_live, sample)]
            try:
                readers = json.loads(await asyncio.wait_for(attackers.stdout.readline(), 120))
                took = time.monotonic() - began
                # The one that never read was closed as too slow (its replay waited for it).
                await wait_until(lambda: channel.stats()["closed_slow"] == 1, timeout=20)
                attackers.stdin.write(b"go\n")
                await attackers.stdin.drain()
                [stuck] = json.loads(await asyncio.wait_for(attackers.stdout.readline(), 30))
                await asyncio.wait_for(attackers.wait(), 30)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)
        await wait_until(lambda: channel.stats()["subscribers"] == 0, timeout=15)
    assert stuck["closed"] in (1013, 1006)  # 1006: aborted after close_timeout
    for result in readers:
        # Each replay sent everything after `since`, however long, and said so.
        assert result["recovered"] == [True] * RESUMES
        assert result["errors"] == []
        assert result["events"] == RESUMES * (STORED - 1)
    growth = (peak - start) / 2**20
    assert growth < PEAK_MIB
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    figure("replays: server peak memory growth MiB", growth)
    figure("replays: well-behaved client p50 ms", latencies[len(latencies) // 2] * 1000)
    figure("replays: well-behaved client p99 ms", p99)
    figure("replays: events replayed to one reader", readers[0]["events"])
    figure("replays: seconds for all replays", took)
    assert p99 < 1000
