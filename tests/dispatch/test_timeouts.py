"""Bounded waits keep every cancellation, and a channel's close ends whatever its backend does.

The race these tests pin down made ``MongoChannel.close()`` hang about one run in three
against a real server: ``close()`` cancelled the consumer while a ``getMore`` answer came in,
Python 3.11's ``asyncio.wait_for`` returned that answer and dropped the cancellation, and the
consumer read on forever while ``close()`` waited for it. No server is at fault, so no server
is needed to show it: a future that completes in the same loop iteration as the cancel is
enough (``test_the_race_loses_the_cancel_in_asyncio_wait_for`` shows it on 3.10 and 3.11).
"""

from __future__ import annotations

import ast
import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tbone.dispatch import Channel, Event, History
from tbone.dispatch.testing import RecordingCarrier
from tbone.dispatch.timeouts import wait_at_most

ROOT = Path(__file__).resolve().parents[2]


async def answered_while_cancelled(wait: Callable[[Awaitable[str]], Awaitable[str]]) -> str:
    """Run ``wait(operation)`` in a task; answer the operation and cancel the task at once.

    Returns what the task returned, or "cancelled" when the cancel reached it.
    """
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def operation() -> str:
        return await answer

    task = asyncio.ensure_future(wait(operation()))
    for _ in range(3):  # let it reach the point where it waits for the answer
        await asyncio.sleep(0)
    answer.set_result("answer")  # the server answers...
    task.cancel()  # ...in the iteration where close() cancels the consumer
    try:
        return await task
    except asyncio.CancelledError:
        return "cancelled"


async def test_a_cancel_that_meets_the_answer_is_kept() -> None:
    assert await answered_while_cancelled(lambda op: wait_at_most(op, 10)) == "cancelled"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio.wait_for is fixed in 3.12")
async def test_the_race_loses_the_cancel_in_asyncio_wait_for() -> None:
    # The reason this package never calls asyncio.wait_for (CPython gh-86296).
    assert await answered_while_cancelled(lambda op: asyncio.wait_for(op, 10)) == "answer"


async def test_no_answer_in_time_is_a_timeout_and_cancels_the_operation() -> None:
    cancelled = asyncio.Event()

    async def never() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    with pytest.raises(TimeoutError, match=r"no answer within 0\.05s"):
        await wait_at_most(never(), 0.05)
    assert cancelled.is_set()


async def test_the_operations_own_timeout_error_passes_unchanged() -> None:
    async def fails() -> None:
        raise TimeoutError("the driver's own")

    with pytest.raises(TimeoutError, match="the driver's own"):
        await wait_at_most(fails(), 5)


async def test_no_bound_awaits_as_it_is() -> None:
    async def value() -> int:
        return 7

    assert await wait_at_most(value(), None) == 7


def test_no_module_calls_asyncio_wait_for() -> None:
    offenders = []
    for package in ("tbone", "tbone_asgi", "demo"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == "wait_for"
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "asyncio"
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], "use tbone.dispatch.timeouts.wait_at_most instead"


class Stubborn(Channel):
    """A backend whose read swallows cancellations, ``lose`` times (None: every time)."""

    def __init__(self, name: str, *, lose: int | None, **options: Any) -> None:
        super().__init__(name, **options)
        self.lose = lose
        self.reading = asyncio.Event()

    async def store(self, name: str, data: Any) -> Event:
        raise NotImplementedError

    async def listen(self, after: str | None) -> AsyncIterator[Event]:
        self.mark_ready()
        self.reading.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.lose is not None:
                    if self.lose == 0:
                        raise
                    self.lose -= 1
        yield  # pragma: no cover - makes this an async generator

    async def read_history(self, since: str | None) -> History:
        return History([], True)


async def test_close_cancels_again_a_consumer_that_lost_the_cancel() -> None:
    channel = Stubborn("stubborn-once", lose=2)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    await wait_at_most(channel.close(forget=True, timeout=10), 5)
    assert channel.stats()["consumer"] == "closed"
    assert carrier.closed_with == (1001, "channel closed")


async def test_close_ends_in_its_timeout_when_the_consumer_never_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = Stubborn("stubborn-forever", lose=None)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    consumer = channel._consumer
    assert consumer is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING, "tbone.dispatch.channels"):
        await channel.close(forget=True, timeout=0.5)
    assert loop.time() - started < 2.0
    assert "did not stop within the close timeout" in caplog.text
    # The subscribers were closed all the same.
    assert carrier.closed_with == (1001, "channel closed")
    channel.lose = 0  # let the test end without a task left behind
    consumer.cancel()
    await asyncio.wait([consumer])
