"""Floods and leaks: 10,000 connect/subscribe/disconnect cycles against a real uvicorn.

Each cycle connects (subscribed at connect to one of 50 events), subscribes to one more with
a frame, proves it with a ping, and leaves: with a close handshake, or (every 4th) by dropping
the TCP connection.

After a warm-up (caches, free lists and the allocator reach their steady size), the number
of tasks, carriers, protocol sessions and subscriber entries must come back to where they
were, and the process's memory may grow by a small bound only.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette

from tbone.dispatch import MemoryChannel, carriers, jsonenc, serving
from tbone.dispatch.carriers import Carrier
from tbone.dispatch.protocol import ProtocolSession
from tbone_asgi import channel_route
from tests.support.asgi_server import run_uvicorn
from tests.support.web_servers import wait_until, ws_connect

CYCLES = 10_000
WARMUP = 1_000
CONCURRENCY = 16
RSS_BOUND = 4 * 1024 * 1024  # bytes the process may grow by over the 9,000 measured cycles


def _rss() -> int:
    """Resident set size of this process in bytes (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _census(channel: MemoryChannel) -> dict[str, int]:
    gc.collect()
    objects = gc.get_objects()
    return {
        "tasks": len(asyncio.all_tasks()),
        "carriers": sum(isinstance(o, Carrier) for o in objects),
        "sessions": sum(isinstance(o, ProtocolSession) for o in objects),
        "subscribers": channel.stats()["subscribers"],
        "subscriptions": channel.stats()["subscriptions"],
        "live carriers": carriers.live_connections(),
        "open connections": sum(serving._open.values()),
    }


@pytest.mark.slow
async def test_ten_thousand_connect_subscribe_disconnect_cycles(
    figure: Callable[[str, Any], Any],
) -> None:
    channel = MemoryChannel(name="churn")
    app = Starlette(routes=[channel_route("/ws", channel)])
    done = 0

    async def cycle(n: int) -> None:
        async with ws_connect(
            f"{url}?events=e{n % 50}", compression=None, ping_interval=None
        ) as ws:
            await ws.send(
                jsonenc.dumps({"type": "subscribe", "payload": {"events": [f"x{n % 7}"]}})
            )
            await ws.send('{"type":"ping"}')  # answered after the subscribe: it is on
            assert jsonenc.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
            if n % 4 == 0:
                ws.transport.abort()  # every 4th leaves without a close handshake

    async def worker(start: int, stop: int) -> None:
        nonlocal done
        for n in range(start, stop, CONCURRENCY):
            await cycle(n)
            done += 1

    async def run(first: int, last: int) -> None:
        await asyncio.gather(*(worker(first + k, last) for k in range(CONCURRENCY)))
        await wait_until(lambda: channel.stats()["subscribers"] == 0, 10, "all unsubscribed")

    async with run_uvicorn(app) as server:
        url = server.ws_url("/ws")
        await run(0, WARMUP)
        before, rss_before = _census(channel), _rss()
        started = time.monotonic()
        await run(WARMUP, CYCLES)
        elapsed = time.monotonic() - started
        after, rss_after = _census(channel), _rss()
    assert done == CYCLES
    assert after == before, f"grew: {before} -> {after}"
    assert after["subscribers"] == after["subscriptions"] == after["live carriers"] == 0
    grown = rss_after - rss_before
    assert grown < RSS_BOUND, f"RSS grew by {grown / 1e6:.1f} MB over {CYCLES - WARMUP} cycles"
    figure("cycles", CYCLES)
    figure("concurrency", CONCURRENCY)
    figure("cycles per second", (CYCLES - WARMUP) / elapsed)
    figure("tasks before/after", f"{before['tasks']}/{after['tasks']}")
    figure("RSS growth over the measured cycles (KiB)", grown // 1024)
