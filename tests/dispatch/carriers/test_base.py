from __future__ import annotations

import asyncio
import logging

import pytest

from tbone.dispatch import MemoryChannel
from tbone.dispatch.carriers import Carrier
from tbone.dispatch.testing import RecordingCarrier


class Exploding(RecordingCarrier):
    async def send_text(self, text: str) -> None:
        raise RuntimeError("a bug, not a disconnect")


class Buffered(RecordingCarrier):
    """A server that accepts every frame but cannot pass it on (uvicorn, aiohttp)."""

    def __init__(self) -> None:
        super().__init__(max_bytes=2000)
        self.buffered = 0

    async def send_text(self, text: str) -> None:
        self.buffered += len(text)

    def backlog(self) -> int:
        return self.buffered


def test_equality_and_hash_follow_the_connection() -> None:
    ws = object()
    a, b, c = RecordingCarrier(ws), RecordingCarrier(ws), RecordingCarrier()
    assert a == b
    assert hash(a) == hash(b)
    assert a != c
    assert a != ws
    assert len({a, b, c}) == 2


async def test_deliver_encodes_and_reports_the_peer() -> None:
    carrier = RecordingCarrier(fail_after=1)
    assert await carrier.deliver({"type": "event", "payload": {"n": 1}}) is True
    assert carrier.texts == ['{"type":"event","payload":{"n":1}}']
    assert await carrier.deliver_text("{}") is False  # the peer went away
    assert carrier.closed
    assert await carrier.deliver_text("{}") is False


async def test_an_ordinary_disconnect_logs_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    channel = MemoryChannel(name="quiet")
    carrier = RecordingCarrier(fail_after=0)
    channel.subscribe("e", carrier)
    with caplog.at_level(logging.DEBUG, logger="tbone"):
        await channel.publish("e", 1)
        await channel.publish("e", 2)
        other = RecordingCarrier()
        channel.subscribe("e", other)
        await channel.publish("e", 3)
        await other.wait_for(1)
    assert channel.subscribers("e") == [other]
    assert not [r for r in caplog.records if r.exc_info]


async def test_an_unexpected_send_error_is_logged_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    carrier = Exploding()
    with caplog.at_level(logging.ERROR, logger="tbone.dispatch.carriers"):
        assert await carrier.deliver(1) is False
    assert "a bug, not a disconnect" in caplog.text
    assert carrier.closed


async def test_the_servers_buffer_counts_against_the_limit() -> None:
    channel = MemoryChannel(name="buffered")
    carrier = Buffered()
    channel.subscribe("e", carrier)
    for i in range(30):  # every send "succeeds", but 30 x ~90 bytes pile up below us
        await channel.publish("e", i)
    assert (await carrier.wait_closed())[0] == 1013
    assert channel.stats()["closed_slow"] == 1


async def test_close_is_idempotent_and_detaches() -> None:
    channel = MemoryChannel(name="closing")
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await carrier.close(4000, "bye")
    await carrier.close(4001, "again")
    assert carrier.closed_with == (4000, "bye")
    assert channel.subscribers("e") == []
    assert carrier.offer("{}") is False
    with pytest.raises(ValueError, match="is closed"):
        channel.subscribe("e", carrier)


async def test_the_base_class_needs_send_text() -> None:
    bare = Carrier(object())
    with pytest.raises(NotImplementedError):
        await bare.send_text("x")
    with pytest.raises(NotImplementedError):
        await bare.close_connection(1000, "")
    assert bare.backlog() == 0
    assert "Carrier" in repr(bare)


async def test_a_send_that_completes_at_once_needs_no_writer_task() -> None:
    carrier = RecordingCarrier()
    channel = MemoryChannel(name="inline")
    channel.subscribe("e", carrier)
    for i in range(3):
        assert carrier.offer(f'"{i}"') is True
    assert carrier.texts == ['"0"', '"1"', '"2"']  # sent inside offer(), in order
    assert carrier._writer is None


async def test_a_send_that_must_wait_is_finished_in_order_by_the_writer() -> None:
    carrier = RecordingCarrier()
    channel = MemoryChannel(name="inflight")
    channel.subscribe("e", carrier)
    carrier.block()
    assert carrier.offer('"first"') is True  # started here, suspended on the gate
    assert carrier.offer('"second"') is True  # queued behind it
    assert carrier.offer('"third"', now=False) is True
    assert carrier.texts == []
    assert carrier._writer is not None
    carrier.unblock()
    assert await carrier.wait_for(3) == ["first", "second", "third"]


async def test_closing_during_a_suspended_send_leaves_nothing_running() -> None:
    carrier = RecordingCarrier()
    channel = MemoryChannel(name="cut")
    channel.subscribe("e", carrier)
    carrier.block()
    before = asyncio.all_tasks()
    carrier.offer('"stuck"')
    await carrier.close(1001, "bye")
    assert carrier._inflight is None
    assert asyncio.all_tasks() - before == set()
    assert carrier.closed_with == (1001, "bye")
