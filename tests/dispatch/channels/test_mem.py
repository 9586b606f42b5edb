from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tbone.dispatch import Channel, ChannelNameConflict, MemoryChannel
from tbone.dispatch.channels import clear_registry, get_channel
from tbone.dispatch.testing import RecordingCarrier
from tests.dispatch.channels.behaviour import ChannelBehaviour
from tests.support.asgi_server import wait_until


class TestMemoryBehaviour(ChannelBehaviour):
    @pytest.fixture
    async def make_channel(self) -> AsyncIterator[Any]:
        made: list[Channel] = []

        async def make(name: str, **options: Any) -> Channel:
            channel = MemoryChannel(name=name, **options)
            made.append(channel)
            return channel

        yield make
        for channel in made:
            await channel.close(forget=True)


def test_a_name_is_required() -> None:
    with pytest.raises(TypeError, match=r"MemoryChannel\(name='pubsub'\)"):
        MemoryChannel()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="needs a name"):
        MemoryChannel(name="")


def test_a_name_is_bound_to_one_class() -> None:
    class OtherChannel(MemoryChannel):
        pass

    channel = MemoryChannel(name="bound")
    assert MemoryChannel("bound") is channel
    assert get_channel("bound") is channel
    with pytest.raises(ChannelNameConflict, match="already a MemoryChannel") as info:
        OtherChannel(name="bound")
    assert (info.value.name, info.value.existing, info.value.wanted) == (
        "bound",
        MemoryChannel,
        OtherChannel,
    )
    clear_registry()
    assert get_channel("bound") is None
    assert MemoryChannel(name="bound") is not channel


async def test_forget_frees_the_name() -> None:
    channel = MemoryChannel(name="freed")
    await channel.close(forget=True)
    assert MemoryChannel(name="freed") is not channel


async def test_history_from_an_earlier_life_is_incomplete() -> None:
    channel = MemoryChannel(name="lives")
    await channel.publish("e", 1)
    past = await channel.history(since="1-5")  # another epoch: a restarted process
    assert past.complete is False
    assert [e.data for e in past] == [1]
    with pytest.raises(ValueError, match="not an event id"):
        await channel.history(since="garbage")


async def test_ids_are_epoch_and_sequence() -> None:
    channel = MemoryChannel(name="ids")
    a = await channel.publish("e")
    b = await channel.publish("e")
    assert a.id == f"{channel.epoch}-1"
    assert b.id == f"{channel.epoch}-2"
    assert a.data is None


async def test_unencodable_data_fails_at_publish() -> None:
    channel = MemoryChannel(name="bad")
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    with pytest.raises(TypeError, match="not JSON serializable"):
        await channel.publish("e", object())
    with pytest.raises(TypeError, match="event name"):
        await channel.publish("", 1)
    await channel.publish("e", "fine")
    assert [f["payload"]["data"] for f in await carrier.wait_for(1)] == ["fine"]


async def test_publish_does_not_wait_for_subscribers() -> None:
    channel = MemoryChannel(name="nowait")
    slow = RecordingCarrier()
    slow.block()
    channel.subscribe("e", slow)
    # 500 publishes complete although the only subscriber takes nothing.
    await asyncio.wait_for(asyncio.gather(*(channel.publish("e", i) for i in range(500))), 5)
    assert channel.stats()["published"] == 500
    slow.unblock()
    assert len(await slow.wait_for(500)) == 500


async def test_events_before_the_consumer_first_runs_are_delivered() -> None:
    channel = MemoryChannel(name="early")
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)  # the consumer task exists but has not run yet
    await channel.publish("e", 1)
    assert (await carrier.wait_for(1))[0]["payload"]["data"] == 1


async def test_one_connection_on_two_channels_shares_one_ordered_outbox() -> None:
    a, b = MemoryChannel(name="a"), MemoryChannel(name="b")
    connection = object()
    a.subscribe("e", RecordingCarrier(connection))
    b.subscribe("e", RecordingCarrier(connection))
    live = a.subscribers("e")[0]
    assert b.subscribers("e")[0] is live  # the first carrier for the connection is kept
    await a.publish("e", "a1")
    await b.publish("e", "b1")
    await a.publish("e", "a2")
    got = await live.wait_for(3)  # type: ignore[attr-defined]
    assert sorted(f["payload"]["data"] for f in got) == ["a1", "a2", "b1"]
    assert [f["payload"]["data"] for f in got if f["payload"]["channel"] == "a"] == ["a1", "a2"]


async def test_a_carrier_closed_as_too_slow_leaves_every_channel() -> None:
    a, b = MemoryChannel(name="a"), MemoryChannel(name="b")
    stuck = RecordingCarrier(max_messages=2, slow_timeout=0.2)
    stuck.block()
    a.subscribe("e", stuck)
    b.subscribe("e", stuck)
    for i in range(5):
        await a.publish("e", i)
    assert (await stuck.wait_closed())[0] == 1013
    assert a.subscribers("e") == []
    assert b.subscribers("e") == []
    assert a.stats()["closed_slow"] == 1


async def test_half_the_byte_limit_puts_a_connection_behind() -> None:
    channel = MemoryChannel(name="bytes")
    stuck = RecordingCarrier(max_bytes=1000, slow_timeout=0.2)
    stuck.block()
    channel.subscribe("e", stuck)
    await channel.publish("e", "x" * 600)  # taken at once, its send hangs: 600 bytes waiting
    second = await channel.publish("e", "x" * 600)
    await channel.ready()
    await wait_until(lambda: channel.stats()["lagging"] == 1, what="the second frame held back")
    assert not stuck.closed  # behind is not too slow: only time makes it so
    stuck.unblock()
    got = await stuck.wait_for(2)
    assert [f["payload"]["id"] for f in got][-1] == second.id
    assert channel.stats()["lagging"] == 0


async def test_ten_thousand_subscribe_cycles_leave_nothing_behind() -> None:
    channel = MemoryChannel(name="cycles")
    keeper = RecordingCarrier()
    channel.subscribe("keep", keeper)  # keeps the consumer running throughout
    await channel.ready()
    gc.collect()
    tasks_before = len(asyncio.all_tasks())
    for i in range(10_000):
        carrier = RecordingCarrier()
        channel.subscribe("e", carrier)
        channel.subscribe("f", carrier)
        if i % 100 == 0:
            await channel.publish("e", i)  # gives the carrier a writer task to clean up
            await asyncio.sleep(0)
        channel.unsubscribe("e", carrier)
        channel.unsubscribe_all(carrier)
    for _ in range(3):  # let writers that were woken up exit
        await asyncio.sleep(0)
    gc.collect()
    from tbone.dispatch.carriers import live_connections

    assert channel.stats()["subscriptions"] == 1
    assert channel.subscribers("keep") == [keeper]
    assert channel.subscribers("f") == []
    assert len(asyncio.all_tasks()) == tasks_before
    assert live_connections() == 1


async def test_async_with_starts_and_closes() -> None:
    async with MemoryChannel(name="ctx") as channel:
        assert channel.stats()["consumer"] in ("starting", "running")
        await channel.ready()
        assert channel.stats()["consumer"] == "running"
    assert channel.stats()["consumer"] == "closed"


async def test_a_channel_survives_its_event_loop() -> None:
    channel = MemoryChannel(name="loops")

    def other_loop() -> list[Any]:
        async def use() -> list[Any]:
            carrier = RecordingCarrier()
            channel.subscribe("e", carrier)
            await channel.publish("e", "other loop")
            return await carrier.wait_for(1)

        return asyncio.run(use())

    got = await asyncio.get_running_loop().run_in_executor(None, other_loop)
    assert got[0]["payload"]["data"] == "other loop"
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)  # the old loop is gone: the channel starts afresh here
    await channel.publish("e", "this loop")
    assert (await carrier.wait_for(1))[0]["payload"]["data"] == "this loop"
    assert channel.stats()["errors"] == 0  # nothing of the old loop was used
