"""Flow control in the channel core, without a network: bursts, the window, the slow rule.

Connections are RecordingCarriers: one that reads as fast as it can, one that sends slowly
(``delay``), one that never completes a send (``block()``). What a real server adds (its
buffers, its own waits) is in tests/reliability/test_bursts.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tbone.dispatch import MemoryChannel
from tbone.dispatch.events import MessageTooLarge
from tbone.dispatch.testing import RecordingCarrier
from tests.support.asgi_server import wait_until


def numbers(carrier: RecordingCarrier, name: str = "e") -> list[Any]:
    return [
        f["payload"]["data"]
        for f in carrier.frames
        if f["type"] == "event" and f["payload"]["name"] == name
    ]


async def test_a_tight_publish_loop_reaches_every_reader_in_order() -> None:
    # The loop never yields on its own: what it publishes must still all arrive, and readers
    # that keep up are never closed, however much bigger than an outbox the burst is.
    channel = MemoryChannel(name="burst")
    readers = [RecordingCarrier(max_messages=50) for _ in range(10)]
    for reader in readers:
        channel.subscribe("e", reader)
    for n in range(5000):
        await channel.publish("e", n)
    for reader in readers:
        await reader.wait_for(5000, timeout=30)
        assert numbers(reader) == list(range(5000))
        assert not reader.closed
    stats = channel.stats()
    assert stats["closed_slow"] == 0
    assert stats["lagged"] > 0  # the burst did put them behind: the window carried it
    assert (stats["lagging"], stats["window"]) == (0, 0)  # all caught up, window released


async def test_one_big_event_never_closes_a_connection_by_itself() -> None:
    channel = MemoryChannel(name="big")
    small = RecordingCarrier(max_bytes=1000)  # far smaller than the event
    channel.subscribe("e", small)
    await channel.publish("e", "x" * 5000)
    await channel.publish("e", "after")
    await small.wait_for(2)
    assert [len(d) for d in numbers(small)] == [5000, 5]
    assert not small.closed


async def test_every_channel_refuses_an_event_over_max_message_bytes() -> None:
    channel = MemoryChannel(name="sized", max_message_bytes=1000)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    with pytest.raises(MessageTooLarge) as refused:
        await channel.publish("e", "x" * 1000)
    assert (refused.value.size, refused.value.limit) == (1000 + 2 + 1, 1000)
    assert "max_message_bytes" in str(refused.value)
    assert isinstance(refused.value, ValueError)
    kept = await channel.publish("e", "x" * 990)  # under the limit: fine
    assert (await channel.history()).events == [kept]  # nothing of the refused one stored
    assert channel.stats()["refused"] == 1
    assert numbers(await _frames(carrier, 1)) == ["x" * 990]


def test_the_default_size_limit_is_half_a_connections_outbox() -> None:
    from tbone.dispatch.carriers import Carrier

    assert MemoryChannel(name="defaults").max_message_bytes == Carrier.default_max_bytes // 2


async def delivered(channel: MemoryChannel, event: Any) -> None:
    """Wait until the consumer has handed ``event`` out (subscriptions count from there)."""
    await wait_until(lambda: channel.stats()["last_id"] == event.id, what=f"{event} delivered")


async def _frames(carrier: RecordingCarrier, count: int) -> RecordingCarrier:
    await carrier.wait_for(count)
    return carrier


async def test_a_stuck_reader_is_closed_within_slow_timeout_and_holds_nobody_back() -> None:
    channel = MemoryChannel(name="stuck", window=100)
    good = [RecordingCarrier(max_messages=20) for _ in range(3)]
    stuck = RecordingCarrier(max_messages=20, slow_timeout=0.5)
    stuck.block()
    for carrier in [*good, stuck]:
        channel.subscribe("e", carrier)
    longest = 0.0
    started = time.monotonic()
    for n in range(2000):
        before = time.monotonic()
        await channel.publish("e", n)
        longest = max(longest, time.monotonic() - before)
    for carrier in good:
        await carrier.wait_for(2000, timeout=30)
        assert numbers(carrier) == list(range(2000))
    assert (await stuck.wait_closed())[0] == 1013
    # The window (100 events) filled behind the stuck reader: the publisher waited for it,
    # never more than its slow_timeout (and the watch's quarter), and then went on.
    assert 0.3 < longest <= 0.5 * 1.25 + 0.3
    assert time.monotonic() - started < 10
    stats = channel.stats()
    assert (stats["closed_slow"], stats["subscribers"]) == (1, 3)
    assert stats["waits"] >= 1
    assert stats["publish_waits"] >= 1


async def test_a_reader_that_sends_but_cannot_keep_up_is_closed_when_it_holds_the_window() -> None:
    # Slow, not stuck: it completes a send every 20 ms, so the "no send" watch never fires;
    # but it falls further and further behind a steady stream, fills the window, and the
    # consumer waits for it: slow_timeout of such waits in all since it fell behind close it.
    channel = MemoryChannel(name="slowpoke", window=50)
    good = RecordingCarrier()
    slow = RecordingCarrier(max_messages=8, delay=0.02, slow_timeout=0.5)
    channel.subscribe("e", good)
    channel.subscribe("e", slow)
    published = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not slow.closed and loop.time() < deadline:
        await channel.publish("e", published)
        published += 1
        if published % 10 == 0:
            await asyncio.sleep(0.001)  # a paced publisher: 10 events a millisecond or so
    assert (await slow.wait_closed())[0] == 1013
    await good.wait_for(published)
    assert numbers(good) == list(range(published))
    got = numbers(slow)
    assert got == list(range(len(got)))  # what it got, it got in order, without gaps
    assert channel.stats()["closed_slow"] == 1


async def test_a_slow_reader_in_a_burst_that_fits_the_window_gets_everything() -> None:
    channel = MemoryChannel(name="fits")
    slow = RecordingCarrier(max_messages=10, delay=0.001)
    fast = RecordingCarrier(max_messages=10)
    channel.subscribe("e", slow)
    channel.subscribe("e", fast)
    for n in range(1000):
        await channel.publish("e", n)
    await fast.wait_for(1000)
    await slow.wait_for(1000, timeout=20)
    assert numbers(slow) == numbers(fast) == list(range(1000))
    assert channel.stats()["closed_slow"] == 0


async def test_publish_waits_at_most_publish_timeout_then_stores() -> None:
    # A consumer that cannot go on (its only reader is stuck with a long slow_timeout): the
    # publisher is held at most publish_timeout per publish, and nothing is lost.
    channel = MemoryChannel(name="held", window=10, queue_size=20, publish_timeout=0.2)
    stuck = RecordingCarrier(max_messages=4, slow_timeout=30)
    stuck.block()
    channel.subscribe("e", stuck)
    waits = []
    for n in range(60):
        before = time.monotonic()
        await channel.publish("e", n)
        waits.append(time.monotonic() - before)
    assert max(waits) <= 0.2 + 0.2
    assert sum(w > 0.15 for w in waits) >= 1
    assert channel.stats()["publish_waits"] >= 1
    stuck.unblock()
    await stuck.wait_for(60, timeout=10)
    assert numbers(stuck) == list(range(60))


async def test_subscriptions_changed_while_behind_apply_where_they_were_made() -> None:
    # "From now on" is the channel's stream, also for a connection that is behind.
    channel = MemoryChannel(name="moving")
    carrier = RecordingCarrier(max_messages=4)
    carrier.block()
    channel.subscribe("a", carrier)
    for n in range(10):
        await channel.publish("a", n)
    await wait_until(lambda: channel.stats()["lagging"] == 1, what="behind")
    await delivered(channel, await channel.publish("b", "before"))  # not subscribed yet
    channel.subscribe("b", carrier)
    await channel.publish("b", "after")
    await delivered(channel, await channel.publish("a", 10))
    channel.unsubscribe("a", carrier)
    await channel.publish("a", "gone")  # unsubscribed by then: never sent
    await channel.publish("b", "last")
    carrier.unblock()
    await wait_until(lambda: channel.stats()["lagging"] == 0, what="caught up")
    await carrier.wait_for(13)
    assert numbers(carrier, "a") == list(range(11))
    assert numbers(carrier, "b") == ["after", "last"]
    assert len(carrier.texts) == 13


async def test_unsubscribing_from_all_while_behind_still_sends_what_came_before() -> None:
    channel = MemoryChannel(name="leaving")
    carrier = RecordingCarrier(max_messages=4)
    carrier.block()
    channel.subscribe("a", carrier)
    for n in range(10):
        await channel.publish("a", n)
    await wait_until(lambda: channel.stats()["lagging"] == 1, what="behind")
    channel.unsubscribe_all(carrier)
    assert channel.subscribers("a") == []
    await channel.publish("a", "later")
    carrier.unblock()
    await carrier.wait_for(10)
    await wait_until(lambda: channel.stats()["subscribers"] == 0, what="left once caught up")
    assert numbers(carrier, "a") == list(range(10))


async def test_a_reader_closed_while_behind_frees_the_window() -> None:
    channel = MemoryChannel(name="freed", window=20)
    stuck = RecordingCarrier(max_messages=4, slow_timeout=60)
    stuck.block()
    channel.subscribe("e", stuck)
    for n in range(15):
        await channel.publish("e", n)
    await wait_until(lambda: channel.stats()["window"] > 0, what="window in use")
    await stuck.close(1000)
    await wait_until(lambda: channel.stats()["window"] == 0, what="window released")
    assert channel.stats()["lagging"] == 0


async def test_a_subclass_that_delivers_its_own_way_is_not_held_back() -> None:
    # What this process published is counted as delivered by the consumer loop, not inside
    # deliver(): a subclass overriding deliver() does not make publish wait.
    class Counting(MemoryChannel):
        def deliver(self, event: Any) -> None:
            self.count = getattr(self, "count", 0) + 1

    channel = Counting(name="own-way", queue_size=10)
    channel.kickoff()
    started = time.monotonic()
    for n in range(100):
        await channel.publish("e", n)
    await wait_until(lambda: getattr(channel, "count", 0) == 100, what="all handed out")
    assert time.monotonic() - started < 2  # no publish waited publish_timeout (5 s)
