"""Resume's own rules (``tbone.dispatch.channels.resume``), on a MemoryChannel.

What every backend must do on resume is in ``behaviour.py``, and the exactness of a resume
under random interleavings in ``test_resume_stateful.py``; these are the edges a model
reaches only by chance.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tbone.dispatch import MemoryChannel
from tbone.dispatch.testing import RecordingCarrier
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
