"""In-process subscriptions (``channel.subscription``): bounded like a websocket subscriber.

What every backend must show is in behaviour.py; here, on MemoryChannel, the rules that need
a burst or a reader that stops.
"""

from __future__ import annotations

import asyncio

import pytest

from tbone.dispatch import MemoryChannel
from tbone.dispatch.channels import EventStream, SubscriptionClosed
from tests.support.asgi_server import wait_until


async def test_a_burst_bigger_than_the_stream_reaches_a_reader_that_keeps_reading() -> None:
    channel = MemoryChannel(name="stream-burst")
    async with channel.subscription("e", max_messages=10) as events:
        got: list[int] = []

        async def read() -> None:
            async for event in events:
                got.append(event.data)
                if len(got) == 3000:
                    return

        reader = asyncio.ensure_future(read())
        for n in range(3000):  # a tight loop: the stream falls behind, the window carries it
            await channel.publish("e", n)
        await asyncio.wait_for(reader, 30)
    assert got == list(range(3000))
    stats = channel.stats()
    assert stats["lagged"] > 0
    assert stats["closed_slow"] == 0


async def test_a_reader_that_stops_is_closed_and_resumes_from_its_last_id() -> None:
    channel = MemoryChannel(name="stream-stuck")
    async with channel.subscription("e", max_messages=10, slow_timeout=1.0) as events:
        for n in range(100):  # the stream holds 5 (half of max_messages): it falls behind
            await channel.publish("e", n)
        taken = [(await anext(events)).data for _ in range(3)]
        # Then it stops reading: behind, with no progress for slow_timeout, it is closed.
        await wait_until(lambda: events.closed, timeout=10, what="the stuck stream closed")
        with pytest.raises(SubscriptionClosed) as caught:
            await anext(events)  # what was queued before the close went with it
    assert caught.value.code == 1013
    assert caught.value.last_id == events.last_id
    assert channel.stats()["closed_slow"] == 1
    async with channel.subscription("e", since=caught.value.last_id) as events:
        rest = [(await asyncio.wait_for(anext(events), 5)).data for _ in range(97)]
        assert events.complete is True
    assert taken + rest == list(range(100))


async def test_iteration_ends_when_the_channel_closes() -> None:
    channel = MemoryChannel(name="stream-close")
    async with channel.subscription("e") as events:
        await channel.publish("e", 1)
        assert (await anext(events)).data == 1
        await channel.close()
        assert [e async for e in events] == []


async def test_a_resume_from_an_id_the_channel_cannot_read_raises_when_iterated() -> None:
    channel = MemoryChannel(name="stream-bad-since")
    async with channel.subscription("e", since="not-an-id") as events:
        with pytest.raises(ValueError, match="not an event id"):
            await asyncio.wait_for(anext(events), 5)


def test_a_subscription_names_its_events() -> None:
    channel = MemoryChannel(name="stream-no-events")
    with pytest.raises(TypeError, match="at least one event"):
        channel.subscription()
    assert isinstance(channel.subscription("e"), EventStream)
