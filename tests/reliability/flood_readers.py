"""Readers for the slow-consumer tests, in a process of their own (so they do not take the
server's CPU): ``python -m tests.reliability.flood_readers <ws-url> <readers> <phase-events>``.

Opens that many aiohttp websocket clients, prints ``connected``, reads ``tick`` events
(``{"seq": n, "t": <time.time() at publish>}``) until the ``end`` event, then prints one JSON
line: every reader's event count and whether its sequence was complete and in order, and for
each phase (``phase-events`` consecutive events) the p50 and p99 latency, publish to read, in
ms, over all readers.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

__all__ = ["main"]

DEADLINE = 90.0  # seconds the readers may run in all


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def main(url: str, readers: int, phase_events: int) -> None:
    phases: dict[int, list[float]] = {}

    async def read(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        seqs: list[int] = []
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(message.data)
            if frame.get("type") != "event":
                continue
            if frame["payload"]["name"] == "end":
                break
            data = frame["payload"]["data"]
            seq = data["seq"]
            phases.setdefault(seq // phase_events, []).append(time.time() - data["t"])
            seqs.append(seq)
        return {"count": len(seqs), "in_order": seqs == list(range(len(seqs)))}

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        gate = asyncio.Semaphore(50)  # bounded handshake concurrency

        async def connect() -> aiohttp.ClientWebSocketResponse:
            async with gate:
                return await session.ws_connect(url, autoping=True, max_msg_size=0)

        sockets = await asyncio.gather(*(connect() for _ in range(readers)))
        print("connected", flush=True)
        results = await asyncio.wait_for(asyncio.gather(*(read(ws) for ws in sockets)), DEADLINE)
        for ws in sockets:
            await ws.close()
    summary = {
        "readers": results,
        "p50_ms": [_percentile(phases[n], 0.50) for n in sorted(phases)],
        "p99_ms": [_percentile(phases[n], 0.99) for n in sorted(phases)],
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
