from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tbone.dispatch import MemoryChannel
from tbone.dispatch.carriers import Carrier
from tbone.dispatch.testing import RecordingCarrier
from tests.support.asgi_server import wait_until


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


def test_a_carrier_that_sends_nothing_is_refused_when_made() -> None:
    with pytest.raises(TypeError, match="implement async send_text"):
        Carrier(object())

    class Silent(Carrier):
        pass

    with pytest.raises(TypeError, match=r"Silent sends nothing.*deliver\(self, data\)"):
        Silent(object())


class TBoneStyle(Carrier):
    """A carrier written for TBone: only deliver(), and no call to super().__init__()."""

    default_slow_timeout = 0.2

    def __init__(self, sink: list[Any], *, stuck: asyncio.Event | None = None) -> None:
        self.sink = sink
        self.stuck = stuck

    async def deliver(self, data: Any) -> None:
        if self.stuck is not None:
            await self.stuck.wait()
        self.sink.append(data)


async def test_a_tbone_style_carrier_gets_every_event_decoded() -> None:
    received: list[Any] = []
    carrier = TBoneStyle(received)
    channel = MemoryChannel(name="tbone-style")
    channel.subscribe("e", carrier)
    await channel.ready()
    for i in range(2500):  # more than one outbox: the window path too
        await channel.publish("e", {"n": i})
    await wait_until(lambda: len(received) == 2500)
    assert [frame["payload"]["data"]["n"] for frame in received] == list(range(2500))
    assert received[0]["type"] == "event"
    assert received[0]["payload"]["name"] == "e"
    assert channel.unsubscribe("e", carrier) is True
    assert channel.subscribers("e") == []
    assert carrier != TBoneStyle([])  # equal by identity: it names no connection


async def test_a_stuck_tbone_style_carrier_is_closed_by_the_slow_rule() -> None:
    stuck = asyncio.Event()
    slow = TBoneStyle([], stuck=stuck)
    fast_received: list[Any] = []
    fast = TBoneStyle(fast_received)
    channel = MemoryChannel(name="tbone-style-slow")
    channel.subscribe("e", slow)
    channel.subscribe("e", fast)
    await channel.ready()
    for i in range(3000):
        await channel.publish("e", i)
    await wait_until(lambda: slow.closed, timeout=5)
    assert slow.close_code == 1013
    await wait_until(lambda: len(fast_received) == 3000)
    assert channel.subscribers("e") == [fast]
    assert channel.stats()["closed_slow"] == 1
    stuck.set()


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


def test_the_carrier_options_bundle_names_the_base_class_options() -> None:
    # The carriers take CarrierOptions as **options: it must not drift from Carrier.__init__.
    import inspect

    from tbone.dispatch.carriers.options import CarrierOptions

    keyword_only = [
        p.name
        for p in inspect.signature(Carrier.__init__).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    ]
    assert sorted(CarrierOptions.__annotations__) == sorted(keyword_only)
