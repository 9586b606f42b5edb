"""The behaviour every channel backend must show, written once and run for each backend.

A backend's test module subclasses :class:`ChannelBehaviour` and provides a ``make_channel``
fixture: an async factory ``await make_channel(name, history=N)`` returning a fresh channel of
that backend whose history keeps at least the last ``N`` events (more is allowed: trimming may
be approximate). The factory's fixture closes what it made (``close(forget=True)``).

Backends whose ids are ordered implement ``Channel.order_key`` (resume relies on it to skip live
events that history already gave when the consumer lags behind a history read), and call
``self.mark_ready()`` in ``listen`` once their read position is fixed (``Channel.ready``).
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tbone.dispatch import Carrier, Channel, MessageTooLarge
from tbone.dispatch.testing import RecordingCarrier
from tests.support.asgi_server import wait_until

MakeChannel = Callable[..., Awaitable[Channel]]


def _payloads(frames: list[Any]) -> list[Any]:
    return [f["payload"] for f in frames if f["type"] == "event"]


class ChannelBehaviour:
    @pytest.fixture
    def name(self) -> str:
        return f"test-{uuid.uuid4().hex[:12]}"

    async def test_same_name_is_the_same_channel(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        channel = await make_channel(name)
        assert type(channel)(name=name) is channel

    async def test_publish_returns_the_event_with_an_id(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        channel = await make_channel(name)
        first = await channel.publish("resource_create", {"pk": 1})
        second = await channel.publish("resource_create", {"pk": 2})
        assert (first.name, first.data, first.channel) == ("resource_create", {"pk": 1}, name)
        assert first.id
        assert second.id
        assert first.id != second.id
        assert [e.id for e in await channel.history()][-2:] == [first.id, second.id]

    @pytest.mark.parametrize("event", ["item create!", "caf\u00e9", "a/b", "x" * 201])
    async def test_a_name_no_client_can_subscribe_to_is_refused_at_publish(
        self, make_channel: MakeChannel, name: str, event: str
    ) -> None:
        channel = await make_channel(name)
        with pytest.raises(ValueError, match="cannot publish") as info:
            await channel.publish(event, 1)
        assert f"cannot publish {event!r}: event names are 1 to 200 characters of A-Z a-z " in (
            str(info.value)
        )
        assert [e.id for e in await channel.history()] == []  # nothing stored
        assert (await channel.publish("user:42.updated-v2", 1)).name == "user:42.updated-v2"

    async def test_subscriber_receives_events_in_publish_order(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        channel = await make_channel(name)
        carrier = RecordingCarrier()
        channel.subscribe("tick", carrier)
        await channel.ready()
        sent = [await channel.publish("tick", {"n": i}) for i in range(50)]
        got = _payloads(await carrier.wait_for(50))
        assert [p["data"]["n"] for p in got] == list(range(50))
        assert [p["id"] for p in got] == [e.id for e in sent]
        assert {(p["name"], p["channel"]) for p in got} == {("tick", name)}

    async def test_a_consumer_starts_at_the_newest_event_the_channel_holds(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        # "From now" is after the newest stored event, not after the oldest one.
        channel = await make_channel(name)
        for i in range(3):
            await channel.publish("e", i)
        carrier = RecordingCarrier()
        channel.subscribe("e", carrier)
        await channel.ready()
        await channel.publish("e", "after")
        await wait_until(
            lambda: any(p["data"] == "after" for p in _payloads(carrier.frames)),
            timeout=10,
            what="the event published after ready()",
        )
        assert [p["data"] for p in _payloads(carrier.frames)] == ["after"]

    async def test_only_subscribed_events_arrive(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        channel = await make_channel(name)
        carrier = RecordingCarrier()
        channel.subscribe("wanted", carrier)
        await channel.ready()
        await channel.publish("unwanted", 1)
        await channel.publish("wanted", 2)
        await channel.publish("unwanted", 3)
        await channel.publish("wanted", 4)
        got = _payloads(await carrier.wait_for(2))
        assert [(p["name"], p["data"]) for p in got] == [("wanted", 2), ("wanted", 4)]

    async def test_unsubscribe_with_a_new_carrier_for_the_same_connection(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        channel = await make_channel(name)
        connection = object()
        first = RecordingCarrier(connection)
        channel.subscribe("a", first)
        channel.subscribe("b", first)
        await channel.ready()
        assert channel.unsubscribe("a", RecordingCarrier(connection)) is True
        assert channel.unsubscribe("a", RecordingCarrier(connection)) is False
        await channel.publish("a", "gone")
        await channel.publish("b", "kept")
        got = _payloads(await first.wait_for(1))
        assert [p["data"] for p in got] == ["kept"]
        channel.unsubscribe_all(RecordingCarrier(connection))
        assert channel.stats()["subscribers"] == 0

    async def test_a_slow_subscriber_is_closed_and_the_others_get_everything(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        channel = await make_channel(name)
        fast = [RecordingCarrier() for _ in range(100)]
        stuck = RecordingCarrier(max_messages=10, slow_timeout=0.5)
        stuck.block()  # a client that stopped reading
        for carrier in [*fast, stuck]:
            channel.subscribe("tick", carrier)
        await channel.ready()
        for i in range(40):
            await channel.publish("tick", i)
        for carrier in fast:
            got = _payloads(await carrier.wait_for(40))
            assert [p["data"] for p in got] == list(range(40))
        assert (await stuck.wait_closed())[0] == 1013
        stats = channel.stats()
        assert stats["closed_slow"] == 1
        assert stats["subscribers"] == 100
        stuck.unblock()

    async def test_a_broken_subscriber_is_dropped_and_the_others_go_on(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        channel = await make_channel(name)
        good = RecordingCarrier()
        broken = RecordingCarrier(fail_after=2)
        channel.subscribe("tick", broken)
        channel.subscribe("tick", good)
        await channel.ready()
        for i in range(10):
            await channel.publish("tick", i)
        assert [p["data"] for p in _payloads(await good.wait_for(10))] == list(range(10))
        assert len(broken.texts) == 2
        stats = channel.stats()
        assert stats["dropped"] == 1
        assert channel.subscribers("tick") == [good]

    async def test_history_since_an_id(self, make_channel: MakeChannel, name: str) -> None:
        channel = await make_channel(name, history=100)
        sent = [await channel.publish("e", i) for i in range(5)]
        past = await channel.history(since=sent[1].id)
        assert past.complete is True
        assert [e.id for e in past] == [e.id for e in sent[2:]]
        assert [e.data for e in past] == [2, 3, 4]
        latest = await channel.history(since=sent[-1].id)
        assert latest.complete is True
        assert list(latest) == []

    async def test_trimmed_history_is_reported_incomplete(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        channel = await make_channel(name, history=5)
        first = await channel.publish("e", -1)
        sent = []
        # Trimming may be approximate: publish until the first event is gone (bounded).
        for batch in range(40):
            sent += [await channel.publish("e", batch * 50 + i) for i in range(50)]
            past = await channel.history(since=first.id)
            if not past.complete:
                break
        assert past.complete is False
        ids = [e.id for e in past]
        assert ids, "the events still kept are returned"
        assert ids == [e.id for e in sent[-len(ids) :]]

    async def test_an_event_over_max_message_bytes_is_refused_before_it_is_stored(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        channel = await make_channel(name, max_message_bytes=1000)
        kept = await channel.publish("e", "x" * 900)
        with pytest.raises(MessageTooLarge) as refused:
            await channel.publish("e", "x" * 2000)
        assert isinstance(refused.value, ValueError)
        assert (refused.value.event, refused.value.limit) == ("e", 1000)
        assert [e.id for e in await channel.history()] == [kept.id]
        assert channel.stats()["refused"] == 1

    def test_the_default_size_limit_is_below_a_connections_outbox(self) -> None:
        from tbone.dispatch.carriers import Carrier

        assert Channel.__init__.__kwdefaults__["max_message_bytes"] < Carrier.default_max_bytes

    async def test_resume_sends_the_missed_events_then_recovered_then_live(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        channel = await make_channel(name, history=100)
        await channel.ready()
        seen = await channel.publish("e", "seen")
        missed = [await channel.publish("e", f"missed {i}") for i in range(3)]
        await channel.publish("other", "not subscribed")
        carrier = RecordingCarrier()
        complete = await channel.resume(carrier, ["e"], since=seen.id)
        assert complete is True
        live = await channel.publish("e", "live")
        frames = await carrier.wait_for(5)
        assert [f["type"] for f in frames] == ["event"] * 3 + ["recovered", "event"]
        assert [f["payload"]["id"] for f in frames if f["type"] == "event"] == [
            *(e.id for e in missed),
            live.id,
        ]
        assert frames[3]["payload"] == {"channel": name, "complete": True}

    async def test_close_says_going_away_and_leaves_no_task(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        before = asyncio.all_tasks()
        channel = await make_channel(name)
        carriers = [RecordingCarrier() for _ in range(5)]
        for carrier in carriers:
            channel.subscribe("tick", carrier)
        await channel.ready()
        for i in range(20):  # close under load: frames still queued are dropped
            await channel.publish("tick", i)
        await channel.close()
        assert {c.closed_with[0] for c in carriers if c.closed_with} == {1001}
        assert all(c.closed_with for c in carriers)
        assert channel.stats()["consumer"] == "closed"
        assert channel.stats()["subscribers"] == 0
        gc.collect()
        assert asyncio.all_tasks() - before == set()

    async def test_publish_without_subscribers(self, make_channel: MakeChannel, name: str) -> None:
        channel = await make_channel(name)
        event = await channel.publish("nobody", {"x": 1})
        assert event.id
        assert channel.stats()["published"] == 1

    async def test_subscribing_again_after_close_restarts_the_consumer(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        channel = await make_channel(name)
        channel.subscribe("e", RecordingCarrier())
        await channel.ready()
        await channel.close()
        carrier = RecordingCarrier()
        channel.subscribe("e", carrier)
        await channel.ready()
        await channel.publish("e", "again")
        assert _payloads(await carrier.wait_for(1))[0]["data"] == "again"

    async def test_resume_of_more_than_an_outbox_holds_is_paced(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        # A client back after a long absence: history holds 5x what its outbox takes at once.
        channel = await make_channel(name, history=100)
        await channel.ready()
        since = await channel.publish("e", "seen")
        missed = [await channel.publish("e", i) for i in range(50)]
        carrier = RecordingCarrier(max_messages=10, delay=0.001)
        assert await channel.resume(carrier, ["e"], since=since.id) is True
        frames = await carrier.wait_for(51)
        assert [f["payload"]["id"] for f in frames[:50]] == [e.id for e in missed]
        assert frames[50]["type"] == "recovered"
        assert carrier.closed_with is None

    async def test_an_in_process_subscription_gets_live_events_in_order(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        channel = await make_channel(name)
        async with channel.subscription("a", "b") as events:
            for n in range(5):
                await channel.publish("a" if n % 2 else "b", n)
                await channel.publish("other", n)  # not subscribed: never seen
            got = [await asyncio.wait_for(anext(events), 5) for _ in range(5)]
            assert [(e.name, e.data) for e in got] == [
                ("b", 0),
                ("a", 1),
                ("b", 2),
                ("a", 3),
                ("b", 4),
            ]
            assert events.complete is True
            assert events.last_id == got[-1].id
        assert channel.stats()["subscribers"] == 0  # leaving unsubscribed

    async def test_an_in_process_subscription_resumes_then_goes_live(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        channel = await make_channel(name, history=100)
        published = [await channel.publish("e", n) for n in range(10)]
        async with channel.subscription("e", since=published[3].id) as events:
            await channel.publish("e", 10)
            got = [await asyncio.wait_for(anext(events), 5) for _ in range(7)]
            assert [e.data for e in got] == list(range(4, 11))
            assert events.complete is True
        async with channel.subscription("e", history=True) as events:
            got = [await asyncio.wait_for(anext(events), 5) for _ in range(11)]
            assert [e.data for e in got] == list(range(11))

    async def test_a_tbone_carrier_made_with_no_arguments_works_and_closing_it_leaves(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        # TBone's base class had no constructor: `class Collect(Carrier)` with only deliver(),
        # made as `Collect()`.
        received: list[Any] = []

        class Collect(Carrier):
            async def deliver(self, data: Any) -> None:
                received.append(data["payload"]["data"])

        channel = await make_channel(name)
        first, second = Collect(), Collect()
        assert first != second  # no connection: each is its own
        assert "no connection" in repr(first)
        channel.subscribe("e", first)
        channel.subscribe("e", second)
        await channel.ready()
        await channel.publish("e", 1)
        await wait_until(lambda: len(received) == 2, what="both deliveries")
        await first.close()  # nothing to close but its subscriptions
        assert (first.closed, first.close_code) == (True, 1000)
        assert channel.subscribers("e") == [second]
        await channel.publish("e", 2)
        await wait_until(lambda: len(received) == 3, what="the third delivery")
        assert received == [1, 1, 2]

    async def test_a_carrier_written_for_tbone_gets_events_and_can_leave(
        self, make_channel: MakeChannel, name: str
    ) -> None:
        # TBone's carriers implemented deliver(data) only and skipped super().__init__().
        class TBoneCarrier(Carrier):
            def __init__(self) -> None:
                self.frames: list[Any] = []

            async def deliver(self, data: Any) -> None:
                self.frames.append(data)

        channel = await make_channel(name)
        carrier = TBoneCarrier()
        channel.subscribe("e", carrier)
        await channel.ready()
        for n in range(3):
            await channel.publish("e", n)
        await wait_until(lambda: len(carrier.frames) == 3, what="three frames")
        assert [f["payload"]["data"] for f in carrier.frames] == [0, 1, 2]
        assert channel.unsubscribe("e", carrier) is True
        await channel.publish("e", 3)
        assert channel.subscribers("e") == []
        assert len(carrier.frames) == 3
