"""Resume's own rules (``tbone.dispatch.channels.resume``), on a MemoryChannel.

What every backend must do on resume is in ``behaviour.py``, and the exactness of a resume
under random interleavings in ``test_resume_stateful.py``; these are the edges a model
reaches only by chance.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tbone.dispatch import Event, History, MemoryChannel
from tbone.dispatch.channels.resume import Hold
from tbone.dispatch.testing import RecordingCarrier
from tests.dispatch.channels.test_custom_backend import ListChannel
from tests.support.asgi_server import wait_until

PAD = "x" * 150  # an event's frame is about 260 bytes


def gate_history(channel: MemoryChannel) -> asyncio.Event:
    """Make each history page of ``channel`` arrive once the returned event is set: the page
    is read at once and its answer waits, as a backend's answer travels back."""
    gate = asyncio.Event()
    read = channel.history_page

    async def page(since: str | None, *, limit: int, max_bytes: int) -> Any:
        answer = await read(since, limit=limit, max_bytes=max_bytes)
        await gate.wait()
        return answer

    channel.history_page = page  # type: ignore[method-assign]
    return gate


def counting_pages(channel: Any) -> list[History]:
    """The history pages ``channel`` gives from now on, in order."""
    pages: list[History] = []
    read = channel.history_page

    async def page(since: str | None, *, limit: int, max_bytes: int) -> History:
        answer: History = await read(since, limit=limit, max_bytes=max_bytes)
        pages.append(answer)
        return answer

    channel.history_page = page
    return pages


class UnorderedChannel(ListChannel):  # type: ignore[misc, valid-type]
    """The docs' example backend with ids that carry no order, as MongoDB's: it keeps every
    event, whatever its ``history`` says."""

    def order_key(self, id: str) -> Any:
        return None


async def test_the_end_of_a_replay_waits_for_room_in_the_outbox() -> None:
    # The replay leaves the outbox past half full (frames of another name were there first);
    # the `recovered` frame and a live event held during the replay go out after it. Offered
    # at once they would overflow the outbox, closing the connection with 1013: the replay
    # waits for room first.
    channel = MemoryChannel(name="room-at-the-end", history=100)
    outbox = 1100
    carrier = RecordingCarrier(max_bytes=outbox)
    channel.subscribe("b", carrier)
    await channel.ready()
    carrier.block()  # it reads nothing until told: the frames stay in its outbox
    others = []
    for n in range(2):  # the first one's send waits, the second waits in the outbox
        others.append(await channel.publish("b", {"n": n, "pad": PAD + "x" * 10}))
        await wait_until(lambda: channel.stats()["last_id"] == others[-1].id, what="delivered")
    since = await channel.publish("a", {"pad": PAD})
    missed = await channel.publish("a", {"n": 0, "pad": PAD})
    await wait_until(lambda: channel.stats()["last_id"] == missed.id, what="delivered")
    waiting = carrier.queued_bytes
    assert waiting == sum(e.size for e in others)
    live_size = missed.size + 5  # {"n": "live"}
    assert waiting * 2 < outbox  # not behind: the replay offers its event
    assert waiting + missed.size + 60 + live_size > outbox  # then recovered and the held one
    assert live_size <= outbox // 4  # which the hold keeps
    gate = gate_history(channel)
    resuming = asyncio.ensure_future(channel.resume(carrier, ["a"], since.id))
    await wait_until(lambda: channel.subscribers("a") == [carrier], what="the hold is on")
    live = await channel.publish("a", {"n": "live", "pad": PAD})  # after the page was read
    await wait_until(lambda: channel.stats()["last_id"] == live.id, what="held")
    assert live.size == live_size
    gate.set()
    await wait_until(lambda: carrier.closed or carrier.queued == 2, what="the replay is out")
    assert not carrier.closed
    assert not resuming.done()  # waiting for room before the end
    carrier.unblock()
    assert await resuming is True
    frames = await carrier.wait_for(5)
    assert carrier.closed_with is None
    assert [f["type"] for f in frames] == ["event"] * 3 + ["recovered", "event"]
    ids = [f["payload"]["id"] for f in frames if f["type"] == "event"]
    assert ids == [e.id for e in [*others, missed, live]]


async def test_a_replay_is_not_capped_and_the_old_caps_only_warn() -> None:
    # More events than the old default cap (10,000), in many pages of a small outbox.
    channel = MemoryChannel(name="uncapped", history=10_100)
    since = await channel.publish("a", 0)
    missed = [await channel.publish("a", n) for n in range(1, 10_051)]
    carrier = RecordingCarrier(max_bytes=64 * 1024)
    with pytest.warns(DeprecationWarning, match=r"RedisChannel\(maxlen=\)"):
        complete = await channel.resume(carrier, ["a"], since.id, max_events=5, max_bytes=100)
    assert complete is True
    frames = await carrier.wait_for(len(missed) + 1)
    assert [f["payload"]["id"] for f in frames[:-1]] == [e.id for e in missed]
    assert frames[-1] == {"type": "recovered", "payload": {"channel": "uncapped", "complete": True}}


async def test_a_replay_that_history_trims_past_ends_incomplete_then_goes_live() -> None:
    # A reader slower than the publishers: while its replay waits for room, history moves on
    # past the replay's cursor. The next page says so: `recovered` with complete false (the
    # events trimmed are lost), then live events, in order and none twice.
    channel = MemoryChannel(name="trimmed-under-it", history=8)
    since = await channel.publish("a", {"n": 0, "pad": PAD})
    missed = [await channel.publish("a", {"n": n, "pad": PAD}) for n in range(1, 7)]
    carrier = RecordingCarrier(max_bytes=4 * missed[0].size)  # pages of two events
    pages = counting_pages(channel)
    carrier.block()
    resuming = asyncio.ensure_future(channel.resume(carrier, ["a"], since.id))
    # Two frames offered (the writer took one and waits to send it): the third waits for room.
    await wait_until(lambda: carrier.queued == 1, what="the replay waits for room")
    assert not resuming.done()
    later = [await channel.publish("a", {"n": n, "pad": PAD}) for n in range(7, 20)]
    await wait_until(lambda: channel.stats()["last_id"] == later[-1].id, what="delivered")
    carrier.unblock()
    assert await resuming is False
    live = await channel.publish("a", {"n": 20, "pad": PAD})
    await carrier.wait_for(1)
    await wait_until(lambda: live.id in carrier.texts[-1], what="the live event")
    frames = carrier.frames
    [end] = [i for i, f in enumerate(frames) if f["type"] == "recovered"]
    assert frames[end]["payload"]["complete"] is False
    replayed = [f["payload"]["data"]["n"] for f in frames[:end]]
    then = [f["payload"]["data"]["n"] for f in frames[end + 1 :]]
    assert replayed == list(range(1, len(replayed) + 1))  # from `since` on, in order
    assert len(replayed) < len(missed)  # the rest was trimmed before the replay got there
    assert then == sorted(set(then))  # live: in order, none twice
    assert then[-1] == 20
    assert then[0] > replayed[-1]
    assert len(pages) >= 2  # a later page found the trim
    assert pages[-1].complete is False


async def test_ids_without_order_are_remembered_within_bounds() -> None:
    # A backend whose ids carry no order (as MongoDB's): the resume tells the live events it
    # already sent by their ids, and keeps only the newest of them (history's size, plus
    # what the hold may hold), however long the replay.
    channel = UnorderedChannel(name="unordered", history=20)
    await channel.ready()
    since = await channel.publish("a", 0)
    missed = [await channel.publish("a", n) for n in range(1, 101)]  # more than `history`
    given: list[list[str]] = []
    release = Hold.release

    def recording(self: Hold, last_id: str | None, replayed: Any) -> list[Event]:
        given.append(list(replayed))
        return release(self, last_id, replayed)

    carrier = RecordingCarrier(max_messages=8)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Hold, "release", recording)
        assert await channel.resume(carrier, ["a"], since.id) is True
    live = await channel.publish("a", 101)
    frames = await carrier.wait_for(len(missed) + 2)
    ids = [f["payload"]["id"] for f in frames if f["type"] == "event"]
    assert ids == [e.id for e in [*missed, live]]
    [kept] = given
    assert len(kept) == channel.history_size + max(1, carrier.max_messages // 4) + 1
    assert kept == [e.id for e in missed[-len(kept) :]]


async def test_a_page_that_says_more_but_holds_no_event_is_an_error_not_a_loop() -> None:
    # Paging goes on from the last event of a page: a backend that skips stored entries and
    # answers an empty page that says `more` would be read forever.
    channel = MemoryChannel(name="empty-page", history=10)
    since = await channel.publish("a", 0)

    async def empty(since: str | None, *, limit: int, max_bytes: int) -> History:
        return History([], complete=True, more=True)

    channel.history_page = empty  # type: ignore[method-assign]
    carrier = RecordingCarrier()
    with pytest.raises(RuntimeError, match="must hold one"):
        await asyncio.wait_for(channel.resume(carrier, ["a"], since.id), 5)
    assert carrier.texts == []


async def test_a_replay_read_while_events_keep_coming_catches_up_exactly() -> None:
    # Live events of the resumed name keep coming during a long replay, more than its hold
    # keeps (a quarter of an outbox of 20 frames): the replay reads history on until it has
    # caught up, then `recovered` (complete), then live events: each once, in order.
    channel = MemoryChannel(name="catching-up", history=5000)
    since = await channel.publish("a", -1)
    missed = [await channel.publish("a", n) for n in range(600)]
    carrier = RecordingCarrier(max_messages=20)
    pages = counting_pages(channel)
    live: list[Event] = []

    async def publish() -> None:
        for n in range(600, 900):
            live.append(await channel.publish("a", n))
            await asyncio.sleep(0)

    publishing = asyncio.ensure_future(publish())
    assert await channel.resume(carrier, ["a"], since.id) is True
    await publishing
    frames = await carrier.wait_for(len(missed) + len(live) + 1)
    ids = [f["payload"]["id"] for f in frames if f["type"] == "event"]
    assert ids == [e.id for e in [*missed, *live]]
    [end] = [i for i, f in enumerate(frames) if f["type"] == "recovered"]
    assert frames[end]["payload"]["complete"] is True
    assert end > len(missed)  # the replay went on past what history held at first
    assert len(pages) > 1  # read again after the hold overflowed


async def test_a_replay_to_a_reader_that_stopped_is_closed_by_the_slow_rule() -> None:
    channel = MemoryChannel(name="stopped-reading", history=1000)
    since = await channel.publish("a", -1)
    for n in range(100):
        await channel.publish("a", n)
    carrier = RecordingCarrier(max_messages=10, slow_timeout=0.2)
    carrier.block()  # it never reads
    await asyncio.wait_for(channel.resume(carrier, ["a"], since.id), 5)
    assert await carrier.wait_closed() == (1013, "subscriber too slow")
    assert channel.stats()["closed_slow"] == 1
    assert channel.stats()["subscribers"] == 0
