"""A separate process for the Redis fault tests: a steady publisher, or a consumer.

``python -m tests.reliability.redis_worker publish <url> <channel> <count>`` publishes ``tick``
events ``{"seq": n}`` for n in range(count), about one every 5 ms, then one ``end`` event. A
publish that fails (Redis down) is retried until it is stored; every stored one is reported as
``acked <seq> <id>`` on stdout, so the test can time its faults by the publisher's progress.

``python -m tests.reliability.redis_worker consume <url> <channel> <subscribers>`` subscribes
that many carriers to ``tick`` and ``end``, prints ``ready`` once its reader reads the stream,
and after every carrier got ``end`` prints one JSON line: the event ids each carrier received,
in order, and the channel's stats.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import redis.exceptions

from tbone.dispatch.channels.redis import RedisChannel
from tbone.dispatch.testing import RecordingCarrier

__all__ = ["consume", "publish"]

DEADLINE = 60.0  # seconds a worker may run before giving up (the test fails then)


async def publish(url: str, name: str, count: int) -> None:
    channel = RedisChannel(name=name, url=url, socket_timeout=1.0, backoff=(0.05, 0.5))
    for seq in [*range(count), -1]:
        event, data = ("tick", {"seq": seq}) if seq >= 0 else ("end", None)
        while True:
            try:
                stored = await channel.publish(event, data)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                print(f"retry {seq}", flush=True)
                await asyncio.sleep(0.02)  # Redis is down: try again shortly
                continue
            print(f"acked {seq} {stored.id}", flush=True)
            break
        await asyncio.sleep(0.005)  # the steady rate (pacing, not synchronisation)
    await channel.close(forget=True)


async def consume(url: str, name: str, subscribers: int) -> None:
    channel = RedisChannel(
        name=name, url=url, block_ms=200, probe_interval=1.0, backoff=(0.05, 0.5)
    )
    carriers = [
        RecordingCarrier(max_messages=1_000_000, max_bytes=1 << 30) for _ in range(subscribers)
    ]
    for carrier in carriers:
        channel.subscribe("tick", carrier)
        channel.subscribe("end", carrier)
    await channel.ready()
    print("ready", flush=True)

    async def until_end(carrier: RecordingCarrier) -> None:
        while not carrier.texts or '"name":"end"' not in carrier.texts[-1]:
            await carrier.wait_for(len(carrier.texts) + 1, timeout=DEADLINE)

    await asyncio.wait_for(asyncio.gather(*(until_end(c) for c in carriers)), DEADLINE)
    result: dict[str, Any] = {
        "ids": [[f["payload"]["id"] for f in c.frames if f["type"] == "event"] for c in carriers],
        "stats": channel.stats(),
    }
    print(json.dumps(result), flush=True)
    await channel.close(forget=True)


def main(argv: list[str]) -> None:
    role, url, name, number = argv
    if role == "publish":
        asyncio.run(publish(url, name, int(number)))
    elif role == "consume":
        asyncio.run(consume(url, name, int(number)))
    else:
        raise SystemExit(f"unknown role {role!r}: publish or consume")


if __name__ == "__main__":
    main(sys.argv[1:])
