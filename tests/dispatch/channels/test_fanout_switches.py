"""The fan-out's two switches: its fast path, and flow control off (the benchmark's row).

``Fanout.deliver`` inlines ``Carrier.behind`` and goes around ``Carrier.offer_event`` for the
carriers whose class overrides neither; any other carrier has its own methods called.
``Fanout.flow_control = False`` (``bench/_noflow.py``) offers every frame at once.
"""

from __future__ import annotations

import pytest

from tbone.dispatch import MemoryChannel
from tbone.dispatch.carriers import Carrier
from tbone.dispatch.channels.fanout import FAST_PATH_BYPASSES, Fanout, takes_frames
from tbone.dispatch.errors import CLOSE_TRY_AGAIN_LATER
from tbone.dispatch.events import Event
from tbone.dispatch.testing import RecordingCarrier
from tests.support.asgi_server import wait_until


class SaysBehind(RecordingCarrier):
    """Overrides only ``behind``: its connection is behind while ``full`` says so."""

    full = True

    @property
    def behind(self) -> bool:
        return self.full


class TakesEvents(RecordingCarrier):
    """Overrides only ``offer_event``: it counts the events it is offered."""

    offered = 0

    def offer_event(self, event: Event, *, now: bool = True) -> bool:
        self.offered += 1
        return super().offer_event(event, now=now)


def test_only_classes_that_override_nothing_the_fast_path_bypasses_take_it() -> None:
    assert FAST_PATH_BYPASSES == ("behind", "offer_event")
    assert takes_frames(Carrier)
    assert takes_frames(RecordingCarrier)
    assert not takes_frames(SaysBehind)
    assert not takes_frames(TakesEvents)


async def test_a_subclass_that_overrides_only_behind_is_asked() -> None:
    channel = MemoryChannel(name="says-behind")
    carrier = SaysBehind()
    channel.subscribe("e", carrier)
    await channel.publish("e", 1)
    await wait_until(lambda: channel.stats()["lagged"] == 1)
    assert carrier.texts == []  # behind, by its own word: the event waits in the window
    assert channel.stats()["lagging"] == 1
    await channel.close()


async def test_a_subclass_that_overrides_only_offer_event_is_offered_each_event() -> None:
    channel = MemoryChannel(name="takes-events")
    carrier = TakesEvents()
    channel.subscribe("e", carrier)
    for n in range(3):
        await channel.publish("e", n)
    await carrier.wait_for(3)
    assert carrier.offered == 3
    await channel.close()


async def test_without_flow_control_every_frame_is_offered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What bench/_noflow.py says: every frame is offered, as before flow control existed.
    monkeypatch.setattr(Fanout, "flow_control", False)
    channel = MemoryChannel(name="no-flow")
    reader = RecordingCarrier()  # room for the burst: only a reader that stops overflows
    channel.subscribe("e", reader)
    for n in range(200):
        await channel.publish("e", n)
    frames = await reader.wait_for(200)
    assert [f["payload"]["data"] for f in frames] == list(range(200))
    stats = channel.stats()
    assert (stats["lagged"], stats["window"]) == (0, 0)
    await channel.close()


@pytest.mark.parametrize("flow_control", [True, False])
async def test_a_reader_that_stops_overflows_only_without_flow_control(
    monkeypatch: pytest.MonkeyPatch, flow_control: bool
) -> None:
    # Without flow control a connection that stops reading fills its outbox until it
    # overflows and is closed with 1013; with it, it lags in the window instead.
    monkeypatch.setattr(Fanout, "flow_control", flow_control)
    channel = MemoryChannel(name=f"stuck-{flow_control}")
    stuck = RecordingCarrier(max_messages=10, slow_timeout=30)
    stuck.block()
    channel.subscribe("e", stuck)
    for n in range(30):
        await channel.publish("e", n)
    await wait_until(lambda: channel.stats()["pending"] == 0)
    stats = channel.stats()
    if flow_control:
        assert not stuck.closed
        assert stats["lagged"] == 1
    else:
        await wait_until(lambda: stuck.closed_with is not None)
        assert stuck.closed_with is not None
        assert stuck.closed_with[0] == CLOSE_TRY_AGAIN_LATER
        assert stats["lagged"] == 0
    stuck.unblock()
    await channel.close()
