"""The outbox and its writer, driven by a RecordingCarrier: no channel, no server."""

from __future__ import annotations

from tbone.dispatch.carriers import Life
from tbone.dispatch.events import Event
from tbone.dispatch.testing import RecordingCarrier, RecordingLink


async def test_a_frame_with_nothing_ahead_is_sent_at_once_without_a_task() -> None:
    carrier = RecordingCarrier()
    assert carrier.offer('{"n":1}') is True
    assert carrier.texts == ['{"n":1}']
    assert (carrier.queued, carrier.queued_bytes, carrier._writer) == (0, 0, None)


async def test_frames_behind_a_send_that_waits_go_out_in_order() -> None:
    carrier = RecordingCarrier()
    carrier.block()
    for n in range(5):
        assert carrier.offer(f'{{"n":{n}}}') is True
    assert carrier.queued == 4  # the first is the send under way
    carrier.unblock()
    assert [f["n"] for f in await carrier.wait_for(5)] == [0, 1, 2, 3, 4]
    assert await carrier.flush(5.0) is True
    assert carrier.queued_bytes == 0


async def test_behind_from_half_full_and_low_water_at_a_quarter() -> None:
    carrier = RecordingCarrier(max_messages=8)
    carrier.block()
    carrier.offer("{}")  # under way
    marks = []
    for _ in range(4):
        carrier.offer("{}")
        marks.append((carrier.queued, carrier.behind, carrier._below_low_water()))
    assert marks == [(1, False, True), (2, False, True), (3, False, False), (4, True, False)]
    carrier.unblock()
    assert await carrier.flush(5.0) is True


async def test_an_outbox_over_its_limits_closes_the_connection_with_1013() -> None:
    carrier = RecordingCarrier(max_messages=3)
    link = RecordingLink(carrier)
    carrier.bind(link)
    carrier.block()
    assert [carrier.offer("{}") for _ in range(4)] == [True, True, True, True]
    assert carrier.offer("{}") is False  # three wait, one is under way: over max_messages
    assert (carrier.life, carrier.close_code, link.closed_how) == (Life.CLOSING, 1013, "slow")
    assert carrier.queued == 0  # the outbox was dropped
    assert await carrier.wait_closed() == (1013, "subscriber too slow")


async def test_a_lagging_connection_is_refilled_at_low_water() -> None:
    carrier = RecordingCarrier(max_messages=4)
    link = RecordingLink(carrier, held=[f'{{"n":{n}}}' for n in range(2, 6)])
    carrier.bind(link)
    carrier.block()
    carrier.offer('{"n":0}')
    carrier.offer('{"n":1}')
    carrier.lag(link)  # the channel holds 2..5 back for it
    assert carrier.lagging
    carrier.unblock()
    frames = await carrier.wait_for(6)
    assert [f["n"] for f in frames] == [0, 1, 2, 3, 4, 5]
    assert link.refills >= 1
    assert not carrier.lagging  # the link had nothing more: it let go
    await carrier.close()


async def test_flush_returns_false_when_the_carrier_closes_meanwhile() -> None:
    carrier = RecordingCarrier()
    carrier.block()
    carrier.offer("{}")
    carrier.offer("{}")
    carrier.close_soon("gone")
    assert await carrier.flush(5.0) is False


async def test_an_event_goes_out_as_its_prepared_frame_when_the_connection_takes_bytes() -> None:
    carrier = RecordingCarrier()
    written: list[bytes] = []

    def write(event: Event) -> bool:
        written.append(event.wire(None))
        return True

    carrier._prepared = write
    event = Event("e", {"n": 1}, "1-1", "c")
    assert carrier.offer_event(event) is True
    assert written == [event.wire(None)]
    assert carrier.texts == []  # no send_text: the bytes were written as they were


async def test_an_event_the_connection_cannot_take_now_is_sent_as_text() -> None:
    carrier = RecordingCarrier()
    carrier._prepared = lambda event: False  # (paused, or closing)
    event = Event("e", {"n": 1}, "1-1", "c")
    assert carrier.offer_event(event) is True
    assert carrier.texts == [event.frame]
