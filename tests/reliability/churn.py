"""The churn of tests/reliability/test_leaks.py, in a fresh interpreter of its own.

``python -m tests.reliability.churn`` runs 10,000 connect/subscribe/disconnect cycles against a
real uvicorn in this process and prints one JSON line: the cycles done, the census of tasks,
carriers, sessions and subscribers before and after the measured cycles, the RSS growth over
them and their duration. Memory is measured in a process that ran nothing else: what earlier
tests left in the heap (fragmentation, free lists) would otherwise count as growth.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time

from starlette.applications import Starlette

from tbone.dispatch import MemoryChannel, carriers, jsonenc, serving
from tbone.dispatch.carriers import Carrier
from tbone.dispatch.protocol import ProtocolSession
from tbone_asgi import channel_route
from tests.support.asgi_server import run_uvicorn
from tests.support.web_servers import wait_until, ws_connect

__all__ = ["CONCURRENCY", "CYCLES", "WARMUP", "main"]

CYCLES = 10_000
WARMUP = 1_000
CONCURRENCY = 16


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


async def churn() -> dict[str, object]:
    channel = MemoryChannel(name="churn")
    app = Starlette(routes=[channel_route("/ws", channel)])
    done = 0
    url = ""

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
    await channel.close()
    return {
        "done": done,
        "before": before,
        "after": after,
        "grown": rss_after - rss_before,
        "elapsed": elapsed,
    }


def main() -> None:
    print(json.dumps(asyncio.run(churn())), flush=True)


if __name__ == "__main__":
    main()
