"""In-process channel: MemoryChannel publish -> deliver into 1,000 no-op carriers.

Per run, ``events`` events are published as fast as ``publish`` returns and the clock stops
when every carrier's writer has sent every frame (a counter, not a sleep, says when). Rows:

* ``encode once``: MemoryChannel as shipped: one JSON frame per event, shared by subscribers;
* ``encode per subscriber``: the same channel with ``deliver`` re-encoding the frame for each
  carrier (what a naive fan-out does; emulated here so the win of encoding once shows);
* ``hand loop``: no channel at all: for each event, ``json.dumps`` per subscriber and
  ``await send_text`` on each in turn (the baseline a hand-written server would use).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench._payload import event_data
from bench._report import Table, median, ratio
from tbone.dispatch import jsonenc
from tbone.dispatch.carriers import Carrier
from tbone.dispatch.channels.mem import MemoryChannel
from tbone.dispatch.events import Event

__all__ = ["run"]


class _Done:
    """Counts sends and sets ``event`` once ``target`` is reached."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.event = asyncio.Event()

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.event.set()


class NullCarrier(Carrier):
    """A carrier whose send does nothing but count (the websocket's cost left out)."""

    def __init__(self, done: _Done) -> None:
        super().__init__(object())
        self.done = done

    async def send_text(self, text: str) -> None:
        self.done.hit()

    async def close_connection(self, code: int, reason: str) -> None:
        pass


class EncodePerSubscriber(MemoryChannel):
    """MemoryChannel, but encoding the frame again for every subscriber (the "before")."""

    def deliver(self, event: Event) -> None:
        for carrier in self.subscribers(event.name):
            text = jsonenc.dumps(event.to_dict())
            carrier.offer(text, len(text))


Runner = Callable[[int, int], Awaitable[float]]


async def _channel_run(cls: type[MemoryChannel], subscribers: int, events: int) -> float:
    channel = cls(name=f"bench-{cls.__name__}", history=events, queue_size=events + 1)
    done = _Done(subscribers * events)
    carriers = [NullCarrier(done) for _ in range(subscribers)]
    for carrier in carriers:
        channel.subscribe("tick", carrier)
    await channel.ready()
    start = time.perf_counter()
    for seq in range(events):
        await channel.publish("tick", event_data(seq))
    await asyncio.wait_for(done.event.wait(), 60)
    elapsed = time.perf_counter() - start
    await channel.close(forget=True)
    return elapsed


async def _encode_once(subscribers: int, events: int) -> float:
    return await _channel_run(MemoryChannel, subscribers, events)


async def _encode_each(subscribers: int, events: int) -> float:
    return await _channel_run(EncodePerSubscriber, subscribers, events)


async def _hand_loop(subscribers: int, events: int) -> float:
    done = _Done(subscribers * events)
    carriers = [NullCarrier(done) for _ in range(subscribers)]
    start = time.perf_counter()
    for seq in range(events):
        frame: dict[str, Any] = {
            "type": "event",
            "payload": {"name": "tick", "data": event_data(seq), "id": str(seq), "channel": "c"},
        }
        for carrier in carriers:
            await carrier.send_text(json.dumps(frame))
    await asyncio.wait_for(done.event.wait(), 60)
    return time.perf_counter() - start


VARIANTS: dict[str, Runner] = {
    "encode once (tbone)": _encode_once,
    "encode per subscriber": _encode_each,
    "hand loop": _hand_loop,
}


async def _measure(runs: int, subscribers: int, events: int) -> Table:
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for fn in VARIANTS.values():  # warm-up: imports, allocator, code caches
        await fn(subscribers, max(1, events // 10))
    for _ in range(runs):
        for name, fn in VARIANTS.items():
            samples[name].append(await fn(subscribers, events))
    base = {name: median(s) for name, s in samples.items()}
    table = Table(
        f"In-process channel: publish -> {subscribers:,} carriers (median of {runs} runs)",
        [
            "variant",
            "events/s",
            "µs per event",
            "ns per delivery",
            "vs encode per subscriber",
            "vs hand loop",
        ],
        note=(
            f"{events:,} events of ~200 bytes per run, each delivered to {subscribers:,} "
            "no-op carriers; the clock stops when the last frame was sent."
        ),
    )
    for name, elapsed in base.items():
        table.add(
            name,
            events / elapsed,
            elapsed / events * 1e6,
            elapsed / (events * subscribers) * 1e9,
            ratio(elapsed, base["encode per subscriber"]),
            ratio(elapsed, base["hand loop"]),
        )
    return table


def run(*, runs: int = 5, subscribers: int = 1000, events: int = 200) -> str:
    """Run the benchmark and return its table (Markdown)."""
    return asyncio.run(_measure(runs, subscribers, events)).render()
