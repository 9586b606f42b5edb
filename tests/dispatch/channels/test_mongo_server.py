"""MongoChannel against a real MongoDB server, with both drivers.

The server is ``TBONE_TEST_MONGODB_URL`` when set (the GitHub workflow's ``mongo:7.0``), else a
SecantusDB server started for the session when ``secantusdb`` is installed (``.ci/run``
installs it); without either the tests are skipped with the reason, or fail under ``CI`` and
``TBONE_REQUIRE_MONGODB=1`` (see tests/support/mongo_server.py). Each test works in the
database ``tbone_test`` and drops the collections it made.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import Int64, ObjectId

from tbone.dispatch import Channel
from tbone.dispatch.channels.mongo import MongoChannel
from tbone.dispatch.testing import RecordingCarrier
from tests.dispatch.channels.behaviour import ChannelBehaviour
from tests.support.asgi_server import wait_until
from tests.support.mongo import DRIVERS, connect
from tests.support.mongo_server import SECANTUS, MongoServer, external_url

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """The server of this module's tests (see the module docstring)."""
    external = external_url()
    if external is not None:
        yield external
        return
    with MongoServer() as server:
        yield server.url


@pytest.fixture(params=DRIVERS)
async def database(request: pytest.FixtureRequest, url: str) -> AsyncIterator[Any]:
    async with connect(request.param, url) as client:
        # Connected before the test starts, so the driver's own tasks are not the test's.
        await client.admin.command("ping")
        yield client["tbone_test"]


@pytest.fixture
async def make(database: Any) -> AsyncIterator[Any]:
    """``await make(name, **options)``: a MongoChannel on a fresh collection, dropped after."""
    made: list[MongoChannel] = []

    async def make(name: str | None = None, **options: Any) -> MongoChannel:
        history = options.pop("history", 1000)
        options = {"capacity": history, "await_time": 0.2, "backoff": (0.05, 0.5), **options}
        channel = MongoChannel(name=name or f"t{uuid.uuid4().hex[:12]}", db=database, **options)
        made.append(channel)
        return channel

    yield make
    for channel in made:
        await channel.close(forget=True)
        await database.drop_collection(channel.collection_name)


class TestMongoBehaviour(ChannelBehaviour):
    @pytest.fixture
    async def make_channel(self, make: Any) -> Any:
        async def make_channel(name: str, **options: Any) -> Channel:
            channel: Channel = await make(name, **options)
            return channel

        return make_channel


def event_ids(carrier: RecordingCarrier) -> list[str]:
    return [f["payload"]["id"] for f in carrier.frames if f["type"] == "event"]


async def test_a_late_insert_with_a_smaller_id_is_delivered(make: Any, database: Any) -> None:
    channel = await make()
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    first = await channel.publish("e", "first")
    await carrier.wait_for(1)
    # Another process whose clock is behind: its ObjectId sorts before every earlier one.
    late = ObjectId("000000000000000000000001")
    await database[channel.collection_name].insert_one({"_id": late, "key": "e", "data": '"late"'})
    last = await channel.publish("e", "last")
    await carrier.wait_for(3)
    assert event_ids(carrier) == [first.id, str(late), last.id]
    # A re-opened cursor resumes after "last", not after the highest id.
    await database.command(
        "killCursors", channel.collection_name, cursors=[Int64(channel.cursor.cursor_id)]
    )
    after = await channel.publish("e", "after")
    await carrier.wait_for(4)
    assert event_ids(carrier) == [first.id, str(late), last.id, after.id]
    assert channel.stats()["reconnects"] >= 1


async def test_a_killed_cursor_loses_nothing(make: Any, database: Any) -> None:
    channel = await make()
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    sent = [await channel.publish("e", 0)]
    await carrier.wait_for(1)
    for round_ in range(3):
        cursor_id = channel.cursor.cursor_id
        await database.command("killCursors", channel.collection_name, cursors=[Int64(cursor_id)])
        sent += [await channel.publish("e", round_ * 10 + i) for i in range(1, 6)]
        await carrier.wait_for(len(sent))
    assert event_ids(carrier) == [e.id for e in sent]
    stats = channel.stats()
    assert stats["reconnects"] >= 1
    assert stats["gaps"] == 0


async def test_resuming_after_a_rolled_out_position(make: Any) -> None:
    channel = await make(capacity=5)
    first = await channel.publish("e", 0)
    sent = [await channel.publish("e", i) for i in range(1, 21)]
    past = await channel.history(since=first.id)
    assert past.complete is False
    assert [e.id for e in past] == [e.id for e in sent[-5:]]
    # What the consumer does after a fault: listen again after the last id it delivered.
    stream = channel.listen(first.id)
    got: list[Any] = []
    try:
        while len(got) < 5:  # in batches: the documents of each server answer
            got += await asyncio.wait_for(stream.__anext__(), 10)
    finally:
        await stream.aclose()
    assert [e.data for e in got] == list(range(16, 21))
    assert channel.stats()["gaps"] == 1


async def test_a_publish_loop_cannot_roll_out_what_the_consumer_has_not_read(make: Any) -> None:
    # capacity 10: this process's publishers wait once 5 events are unread by its consumer.
    channel = await make(capacity=10)
    carrier = RecordingCarrier(max_messages=1000)
    channel.subscribe("e", carrier)
    await channel.ready()
    sent = [await channel.publish("e", i) for i in range(300)]
    await carrier.wait_for(300, timeout=30)
    assert [f["payload"]["id"] for f in carrier.frames] == [e.id for e in sent]
    assert channel.stats()["gaps"] == 0


async def test_roll_over_while_tailing_keeps_order_and_never_repeats(
    make: Any, database: Any
) -> None:
    # Another process writes faster than this consumer reads: a roll-over past its position
    # is a gap, reported by closing the subscriber with 1013; never a repeat or a reordering.
    channel = await make(capacity=10)
    carrier = RecordingCarrier(max_messages=1000)
    channel.subscribe("e", carrier)
    await channel.ready()
    other = database[channel.collection_name]
    sent = []
    for i in range(300):
        doc = {"_id": ObjectId(), "key": "e", "data": str(i)}
        await other.insert_one(doc)
        sent.append(doc)

    def got() -> list[int]:
        return [f["payload"]["data"] for f in carrier.frames if f["type"] == "event"]

    await wait_until(lambda: carrier.closed or got()[-1:] == [299], timeout=30, what="the end")
    received = got()
    assert received == sorted(set(received))  # in publish order, none repeated
    if channel.stats()["gaps"] == 0:
        assert received == list(range(300))
    else:
        assert carrier.close_code == 1013


_CHILD = """
import asyncio, json, sys
from pymongo import AsyncMongoClient
from tbone.dispatch.channels.mongo import MongoChannel
from tbone.dispatch.testing import RecordingCarrier

async def main(url, db, name, count, expect):
    client = AsyncMongoClient(url, serverSelectionTimeoutMS=5000)
    channel = MongoChannel(name=name, db=client[db], await_time=0.2)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.gather(*(channel.publish("e", {"from": "child", "n": i}) for i in range(count)))
    frames = await carrier.wait_for(expect, timeout=30)
    print(json.dumps([f["payload"]["id"] for f in frames if f["type"] == "event"]), flush=True)
    await channel.close()
    await client.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
"""


async def test_two_processes_publish_concurrently_and_see_one_order(make: Any, url: str) -> None:
    channel = await make()
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    count = 50
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        url,
        "tbone_test",
        channel.name,
        str(count),
        str(2 * count),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        assert (await asyncio.wait_for(child.stdout.readline(), 30)).strip() == b"ready"
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        ours = await asyncio.gather(
            *(channel.publish("e", {"from": "parent", "n": i}) for i in range(count))
        )
        await carrier.wait_for(2 * count, timeout=30)
        theirs = json.loads(await asyncio.wait_for(child.stdout.readline(), 30))
        assert await asyncio.wait_for(child.wait(), 30) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    ids = event_ids(carrier)
    assert len(ids) == len(set(ids)) == 2 * count
    assert {e.id for e in ours} <= set(ids)
    assert theirs == ids  # both processes delivered the same events in the same order
    assert [e.id for e in await channel.history()] == ids  # which is the insert order


@pytest.mark.parametrize("driver", DRIVERS)
async def test_close_ends_in_bounded_time_when_the_server_stops_answering(driver: str) -> None:
    # A private server: SIGSTOP keeps its sockets open and answers nothing, as a hung or
    # partitioned mongod would. close() must not wait for it beyond its close timeout.
    with MongoServer() as server:
        async with connect(driver, server.url) as client:
            await client.admin.command("ping")
            channel = MongoChannel(
                name="frozen", db=client["tbone_test"], await_time=0.2, backoff=(0.05, 0.5)
            )
            carriers = [RecordingCarrier() for _ in range(3)]
            for carrier in carriers:
                channel.subscribe("e", carrier)
            await channel.ready()
            await channel.publish("e", "before")
            for carrier in carriers:
                await carrier.wait_for(1)
            server.pause()
            try:
                started = time.monotonic()
                await asyncio.wait_for(channel.close(forget=True, timeout=3.0), 15)
                took = time.monotonic() - started
            finally:
                server.resume()
    assert took < 3.0 + 1.5, took
    assert [c.closed_with for c in carriers] == [(1001, "channel closed")] * 3
    assert channel.stats()["consumer"] == "closed"


def test_ci_installs_the_server_version_these_tests_name() -> None:
    # docs/mongo.md says what was verified on this version: .ci/run must install that one.
    assert f"'{SECANTUS}'" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


async def test_a_history_page_reads_past_documents_that_are_not_events(
    make: Any, database: Any
) -> None:
    # Documents another program wrote (no key, no JSON data) fill more than a page between
    # two events: a page that says more must hold an event, so the read goes past them.
    channel = await make()
    first = await channel.publish("e", "first")
    foreign = [{"_id": ObjectId(), "note": "x" * 2000} for _ in range(5)]
    await database[channel.collection_name].insert_many(foreign)
    last = await channel.publish("e", "last")
    page = await channel.history_page(first.id, limit=2, max_bytes=1000)
    assert [e.id for e in page.events] == [last.id]
    assert (page.complete, page.more) == (True, False)
    assert channel.stats()["skipped"] >= 1
