"""The slow rule on a carrier with no channel and no server."""

from __future__ import annotations

from tbone.dispatch.carriers import Life
from tbone.dispatch.testing import RecordingCarrier, RecordingLink
from tests.support.asgi_server import wait_until


async def test_a_connection_behind_that_sends_nothing_is_closed_after_slow_timeout() -> None:
    carrier = RecordingCarrier(slow_timeout=0.2)
    link = RecordingLink(carrier, held=["{}"])
    carrier.bind(link)
    carrier.block()
    carrier.offer("{}")
    carrier.lag(link)
    assert carrier._watch is not None
    assert await carrier.wait_closed(timeout=5.0) == (1013, "subscriber too slow")
    assert (carrier.life, link.closed_how) == (Life.CLOSED, "slow")


async def test_the_watch_ends_once_the_connection_caught_up() -> None:
    carrier = RecordingCarrier(slow_timeout=0.2)
    link = RecordingLink(carrier)
    carrier.bind(link)
    carrier.lag(link)
    carrier.unlag(link)  # caught up before the first look
    await wait_until(lambda: carrier._watch is None, what="the watch ended")
    assert not carrier.closed
    await carrier.close()


async def test_a_replay_waiting_for_room_is_watched_too() -> None:
    carrier = RecordingCarrier(max_messages=2, slow_timeout=0.2)
    carrier.block()
    carrier.offer("{}")
    carrier.offer("{}")
    assert carrier.behind
    assert await carrier.room() is False  # never drained: closed by the slow rule
    assert carrier.close_code == 1013
