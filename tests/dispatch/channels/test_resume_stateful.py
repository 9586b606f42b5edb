"""Resume is exact: a hypothesis state machine against MemoryChannel and RedisChannel.

Random interleavings of publish, subscribe, unsubscribe, resume (with ``since`` anywhere in
what was published) and stalls (a connection that stops completing sends for a while, so
that it falls behind and reads from the window) over three event names and three
connections. After every step the channel has delivered what was published, so the model
knows, for each (connection, name), exactly which events must arrive:

* a subscription receives the events of its name delivered after it, until unsubscribed;
* a resume of names X after ``since`` receives, for each name of X, the events after
  ``since`` that history holds (all of them while history reaches back, which the model
  checks against the ``complete`` flag), then live ones, and a ``recovered`` frame;
* a resume never changes what a connection receives for names outside X.

At the end every connection is let go, a sentinel event proves all earlier frames arrived,
and each (connection, name) must have received exactly the model's list: in order, with no
duplicate and no gap (MemoryChannel's history is kept short so that trimmed history, and
its ``complete: false``, happens too).

The paged configurations give the connections an outbox of a few frames, so a history page
(half of it) holds two events and a resume reads many pages, with live events published
meanwhile overflowing the resume's hold (a quarter of the outbox: one event): every page
must be sent, in order, and ``complete`` stays true while history reaches back. A replay
that stopped early (a cap) fails the model, and the test checks that resumes did read
several pages.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tbone.dispatch import Channel, MemoryChannel, close_all_channels
from tbone.dispatch.testing import RecordingCarrier
from tests.support.asgi_server import wait_until
from tests.support.redis_server import RedisServer

NAMES = ("a", "b", "c")
CARRIERS = 3
HISTORY = 12  # MemoryChannel: short, so resumes from before it are reported incomplete
_numbers = itertools.count()


class ResumeModel(RuleBasedStateMachine):
    """The model; subclasses say which channel (:meth:`make_channel`)."""

    history: int | None = None  # events the channel holds, when the model knows exactly
    #: Each connection's outbox in bytes (None: the default); a history page is half of it.
    outbox_bytes: int | None = None
    #: Added to each event's data (a page is counted in stored bytes, which Redis keeps small).
    pad = ""
    #: The most history pages one resume read, over every example of the class.
    most_pages = 0

    def make_channel(self, name: str) -> Channel:
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.channel = self.make_channel(f"model{next(_numbers)}")
        self.carriers = [
            RecordingCarrier(max_messages=6, max_bytes=self.outbox_bytes, slow_timeout=60)
            for _ in range(CARRIERS)
        ]
        self.pages = 0  # history pages read by the resume under way
        read_page = self.channel.history_page

        async def counted(since: str | None, *, limit: int, max_bytes: int) -> Any:
            self.pages += 1
            return await read_page(since, limit=limit, max_bytes=max_bytes)

        self.channel.history_page = counted  # type: ignore[method-assign]
        self.published: list[tuple[str, str]] = []  # (id, name) in channel order
        self.live: list[set[str]] = [set() for _ in range(CARRIERS)]
        self.expected: list[dict[str, list[str]]] = [
            {name: [] for name in NAMES} for _ in range(CARRIERS)
        ]
        self.resumes = [0] * CARRIERS
        self.blocked = [False] * CARRIERS

    def data(self, n: int) -> Any:
        return [n, self.pad] if self.pad else n

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 20))

    def call(self, function: Any, *args: Any) -> Any:
        """Call a synchronous channel method inside the loop (it may start tasks)."""

        async def inside() -> Any:
            return function(*args)

        return self.run(inside())

    @initialize()
    def start(self) -> None:
        self.run(self.channel.ready())

    # -- steps -------------------------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES))
    def publish(self, name: str) -> None:
        event_id = self.run(self.channel.publish(name, self.data(len(self.published)))).id
        # Settle: wait until the consumer delivered it (subscriptions count from there). A
        # stalled reader that fills the window holds the consumer: it reads again then.
        while not self.run(self._delivered(event_id)):
            if self.channel.blocked:
                for index in range(CARRIERS):
                    self.unblock(index)
        self.published.append((event_id, name))
        for index in range(CARRIERS):
            if name in self.live[index]:
                self.expected[index][name].append(event_id)

    async def _delivered(self, event_id: str) -> bool:
        for _ in range(50):
            if self.channel.stats()["last_id"] == event_id:
                return True
            await asyncio.sleep(0.002)
        return False

    @rule(index=st.integers(0, CARRIERS - 1), name=st.sampled_from(NAMES))
    def subscribe(self, index: int, name: str) -> None:
        self.call(self.channel.subscribe, name, self.carriers[index])
        self.live[index].add(name)

    @rule(index=st.integers(0, CARRIERS - 1), name=st.sampled_from(NAMES))
    def unsubscribe(self, index: int, name: str) -> None:
        self.call(self.channel.unsubscribe, name, self.carriers[index])
        self.live[index].discard(name)

    @precondition(lambda self: self.published)
    @rule(
        index=st.integers(0, CARRIERS - 1),
        names=st.sets(st.sampled_from(NAMES), min_size=1),
        back=st.integers(0, 30),
    )
    def resume(self, index: int, names: set[str], back: int) -> None:
        if self.blocked[index]:
            self.unblock(index)  # a replay waits for the reader: it must read
        since_at = max(0, len(self.published) - 1 - back)
        since = self.published[since_at][0]
        self.pages = 0
        complete = self.run(self.channel.resume(self.carriers[index], sorted(names), since))
        self.counted_pages()
        after = self.published[since_at + 1 :]
        held = self.published if self.history is None else self.published[-self.history :]
        if self.history is not None:
            assert complete is (len(after) <= len(held)), (since_at, len(self.published))
        if not complete:
            after = held  # all that history still holds: the gap is reported
        for name in names:
            self.expected[index][name].extend(i for i, n in after if n == name)
            self.live[index].add(name)
        self.resumes[index] += 1

    @precondition(lambda self: self.published)
    @rule(
        index=st.integers(0, CARRIERS - 1),
        back=st.integers(0, 4),
        before=st.lists(st.sampled_from(NAMES), max_size=3),
        during=st.lists(st.sampled_from(NAMES), max_size=4),
        data=st.data(),
    )
    def resume_in_traffic(
        self, index: int, back: int, before: list[str], during: list[str], data: Any
    ) -> None:
        """Resume new names while events are in flight and more are published meanwhile.

        Nothing is settled here: ``before`` are stored but not yet delivered when the resume
        starts, ``during`` are published while it reads and replays history. The names
        resumed are ones the connection does not receive yet, so what it must get is exact
        whatever the timing: for them, everything after ``since``; for its other names,
        every event, untouched by the resume.
        """
        free = [name for name in NAMES if name not in self.live[index]]
        if not free:
            return
        names = data.draw(st.sets(st.sampled_from(free), min_size=1), label="names")
        for other in range(CARRIERS):
            self.unblock(other)
        since_at = max(0, len(self.published) - 1 - back)
        since = self.published[since_at][0]
        first = len(self.published)

        inline = data.draw(st.booleans(), label="inline")

        async def step() -> tuple[bool, list[tuple[str, str]]]:
            stored: list[tuple[str, str]] = []

            async def publish(names: list[str]) -> None:
                for name in names:
                    await asyncio.sleep(0)
                    event = await self.channel.publish(name, self.data(first + len(stored)))
                    stored.append((event.id, name))

            for name in before:  # stored, not delivered: the consumer has not run yet
                data = self.data(first + len(stored))
                stored.append(((await self.channel.publish(name, data)).id, name))
            carrier = self.carriers[index]
            if inline:  # as the endpoint does: the resume starts before the consumer runs
                publishing = asyncio.ensure_future(publish(during))
                complete = await self.channel.resume(carrier, sorted(names), since)
                await publishing
            else:
                resuming = asyncio.ensure_future(self.channel.resume(carrier, sorted(names), since))
                await publish(during)
                complete = await resuming
            if stored:
                last = stored[-1][0]
                await wait_until(lambda: self.channel.stats()["last_id"] == last, what="settled")
            return complete, stored

        self.pages = 0
        complete, stored = self.run(step())
        self.counted_pages()
        assert complete is True  # since is well inside history here
        for event_id, name in stored:
            for other in range(CARRIERS):
                if name in self.live[other] and not (other == index and name in names):
                    self.expected[other][name].append(event_id)
        self.published.extend(stored)
        for name in names:
            self.expected[index][name].extend(
                i for i, n in self.published[since_at + 1 :] if n == name
            )
            self.live[index].add(name)
        self.resumes[index] += 1

    def counted_pages(self) -> None:
        cls = type(self)
        cls.most_pages = max(cls.most_pages, self.pages)

    @rule(index=st.integers(0, CARRIERS - 1))
    def block(self, index: int) -> None:
        if not self.blocked[index]:
            self.call(self.carriers[index].block)
            self.blocked[index] = True

    @rule(index=st.integers(0, CARRIERS - 1))
    def unblock(self, index: int) -> None:
        if self.blocked[index]:
            self.call(self.carriers[index].unblock)
            self.blocked[index] = False

    @invariant()
    def nobody_was_closed(self) -> None:
        assert not any(c.closed for c in self.carriers)

    # -- the end -----------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            for index in range(CARRIERS):
                self.unblock(index)
            self.run(self.check())
        finally:
            self.run(close_all_channels())
            self.loop.close()

    async def check(self) -> None:
        # A sentinel after everything: once it arrived, every earlier frame has.
        for carrier in self.carriers:
            self.channel.subscribe("zz", carrier)
        await self.channel.publish("zz", "end")
        for carrier in self.carriers:
            await carrier.wait_for(1)
            while '"zz"' not in carrier.texts[-1]:
                await carrier.wait_for(len(carrier.texts) + 1)
        for index, carrier in enumerate(self.carriers):
            frames = carrier.frames
            for name in NAMES:
                got = [
                    f["payload"]["id"]
                    for f in frames
                    if f["type"] == "event" and f["payload"]["name"] == name
                ]
                assert got == self.expected[index][name], (index, name)
            recovered = [f for f in frames if f["type"] == "recovered"]
            assert len(recovered) == self.resumes[index]


class MemoryModel(ResumeModel):
    history = HISTORY

    def make_channel(self, name: str) -> Channel:
        return MemoryChannel(name=name, history=HISTORY, window=4)


SETTINGS = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


#: The paged configurations: events of about 110 bytes stored and 190 bytes as frames, so a
#: page (half the outbox) holds two or three, and the resume's hold (a quarter) one.
PAGED_OUTBOX = 800
PAGED_PAD = "x" * 100


class PagedMemoryModel(MemoryModel):
    outbox_bytes = PAGED_OUTBOX
    pad = PAGED_PAD


def test_resume_is_exact_on_memory() -> None:
    MemoryModel.TestCase.settings = SETTINGS
    MemoryModel.TestCase().runTest()


def test_a_resume_over_many_pages_is_exact_on_memory() -> None:
    PagedMemoryModel.TestCase.settings = SETTINGS
    PagedMemoryModel.most_pages = 0
    PagedMemoryModel.TestCase().runTest()
    # History (12 events) spans six pages: some resumes must have read them all.
    assert PagedMemoryModel.most_pages >= 5


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with RedisServer(Path(tmp_path_factory.mktemp("redis"))) as server:
        yield server.url


def test_resume_is_exact_on_redis(redis_url: str) -> None:
    from tbone.dispatch.channels.redis import RedisChannel

    class RedisModel(ResumeModel):
        def make_channel(self, name: str) -> Channel:
            return RedisChannel(
                name=name, url=redis_url, block_ms=100, probe_interval=1.0, window=4
            )

    RedisModel.TestCase.settings = settings(SETTINGS, max_examples=60)
    RedisModel.TestCase().runTest()


def test_a_resume_over_many_pages_is_exact_on_redis(redis_url: str) -> None:
    from tbone.dispatch.channels.redis import RedisChannel

    class PagedRedisModel(ResumeModel):
        outbox_bytes = PAGED_OUTBOX
        pad = PAGED_PAD

        def make_channel(self, name: str) -> Channel:
            return RedisChannel(
                name=name, url=redis_url, block_ms=100, probe_interval=1.0, window=4
            )

    PagedRedisModel.TestCase.settings = settings(SETTINGS, max_examples=60)
    PagedRedisModel.TestCase().runTest()
    # Redis counts a page in stored bytes (three events here): fewer pages, but several.
    assert PagedRedisModel.most_pages >= 3
