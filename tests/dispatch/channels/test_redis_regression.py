"""A stream that goes back below the reader, on one private redis-server.

What a Sentinel failover to a replica that lacked the last entries does to a channel (and a
restart without persistence, or a key deleted and written again): the stream's last id ends
up below the last id the reader delivered. Each test shapes the stream that way in one
MULTI, so the reader sees the old stream or the new one, never a mix, and checks that the
channel reports the gap (subscribers closed with 1013, ``gaps`` and ``stream_resets``
counted), goes on with new events, also with ids between the new end and its old position
(XREAD after the old position would wait for those forever), and says ``complete: false`` to
resumes that may have missed something.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tbone.dispatch import jsonenc
from tbone.dispatch.channels.redis import RedisChannel
from tbone.dispatch.testing import RecordingCarrier
from tests.support.asgi_server import wait_until
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(Path(tmp_path_factory.mktemp("redis"))) as server:
        yield server


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.Redis.from_url(redis_server.url, decode_responses=True) as raw:
        yield raw


@pytest.fixture
async def channel(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[RedisChannel]:
    made = RedisChannel(
        name=request.node.name,
        url=redis_server.url,
        block_ms=100,
        probe_interval=1.0,
        backoff=(0.05, 0.2),
    )
    yield made
    await made.close(forget=True)


def entry(value: Any) -> dict[str, Any]:
    """The fields of a tbone event ``e`` with data ``value``, as store() writes them."""
    return {"n": "e", "d": jsonenc.dumps(value), "v": "1"}


def ids(carrier: RecordingCarrier) -> list[str]:
    return [f["payload"]["id"] for f in carrier.frames if f["type"] == "event"]


async def reading(channel: RedisChannel, count: int) -> tuple[RecordingCarrier, list[str]]:
    """A subscriber that received ``count`` events published now; their ids."""
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    published = [(await channel.publish("e", n)).id for n in range(count)]
    await carrier.wait_for(count)
    assert ids(carrier) == published
    return carrier, published


async def replace_stream(
    client: aioredis.Redis, key: str, entries: list[tuple[str, Any]], *, kill_reader: bool
) -> list[str]:
    """In one MULTI: delete ``key``, write ``entries`` ((id or "*", data)) and, with
    ``kill_reader``, close every other connection (the reader reconnects and finds the new
    stream). Returns the ids written."""
    pipe = client.pipeline(transaction=True)
    if kill_reader:
        pipe.client_kill_filter(_type="normal", skipme=True)
    pipe.delete(key)
    for entry_id, value in entries:
        pipe.xadd(key, entry(value), id=entry_id)
    return list((await pipe.execute())[-len(entries) :] if entries else [])


async def test_a_stream_recreated_below_a_waiting_reader_is_a_gap_and_reading_goes_on(
    channel: RedisChannel, client: aioredis.Redis
) -> None:
    carrier, _ = await reading(channel, 3)
    # The reader stays connected, blocked after the third id; the stream now ends at 1-1.
    await replace_stream(client, channel.key, [("1-1", "lower")], kill_reader=False)
    assert (await carrier.wait_closed())[0] == 1013  # within a block_ms (the check when idle)
    stats = channel.stats()
    assert (stats["gaps"], stats["stream_resets"], stats["errors"]) == (1, 1, 0)
    # New entries above the new end are delivered, though their ids are below the old
    # position: the reader moved to the stream's end instead of waiting for ids above it.
    again = RecordingCarrier()
    channel.subscribe("e", again)
    await client.xadd(channel.key, entry("between"), id="2-1")
    later = await channel.publish("e", "later")
    await again.wait_for(2)
    assert ids(again) == ["2-1", later.id]
    assert [f["payload"]["data"] for f in again.frames] == ["between", "later"]
    assert channel.stats()["gaps"] == 1
    assert len(ids(carrier)) == 3  # the closed subscriber got nothing more


@pytest.mark.parametrize("written", [0, 2], ids=["ends below the reader", "newer entries"])
async def test_a_failover_shaped_loss_found_on_reconnect(
    written: int, channel: RedisChannel, client: aioredis.Redis
) -> None:
    carrier, published = await reading(channel, 5)
    a1, a2, a3, a4, a5 = published
    # The new master has the first three entries (same ids, replicated), not the last two,
    # and maybe new ones that publishers wrote to it before this reader came back.
    kept = [(entry_id, n) for n, entry_id in enumerate(published[:3])]
    fresh = [("*", f"fresh {n}") for n in range(written)]
    newer = (await replace_stream(client, channel.key, kept + fresh, kill_reader=True))[3:]
    assert (await carrier.wait_closed())[0] == 1013
    assert (channel.stats()["gaps"], channel.stats()["stream_resets"]) == (1, 1)
    # The reader reconnects again, maybe before any new event: the loss is reported once.
    await client.client_kill_filter(_type="normal", skipme=True)
    await wait_until(lambda: channel.stats()["reconnects"] == 2, 5.0, "reconnected again")
    await channel.ready()
    # Every id before the loss: incomplete, held or not (a4 and a5 are gone for good).
    for since in (a1, a2, a3, a5):
        assert (await channel.history(since=since)).complete is False, since
        page = await channel.history_page(since, limit=10, max_bytes=1 << 20)
        assert page.complete is False, since
    # A resume from the last id a client saw: what the stream holds after it, told, live.
    resumed = RecordingCarrier()
    assert await channel.resume(resumed, ["e"], since=a5) is False
    live = await channel.publish("e", "live")
    frames = await resumed.wait_for(written + 2)
    assert frames[written] == {
        "type": "recovered",
        "payload": {"channel": channel.name, "complete": False},
    }
    assert ids(resumed) == [*newer, live.id]
    assert (await channel.history(since=live.id)).complete is True
    assert (channel.stats()["gaps"], channel.stats()["stream_resets"]) == (1, 1)
    assert a4 not in ids(resumed)


async def test_entries_written_while_the_reader_was_away_come_with_the_resume(
    channel: RedisChannel, client: aioredis.Redis
) -> None:
    carrier, published = await reading(channel, 2)
    # FLUSHALL-like: the stream is gone, and new entries (newer ids) arrive before the reader
    # is back. It cannot tell what it missed, so it reports a gap; a resume brings them.
    written = await replace_stream(
        client, channel.key, [("*", "w0"), ("*", "w1")], kill_reader=True
    )
    assert (await carrier.wait_closed())[0] == 1013
    assert channel.stats()["gaps"] == 1
    resumed = RecordingCarrier()
    assert await channel.resume(resumed, ["e"], since=published[-1]) is False
    live = await channel.publish("e", "live")
    await resumed.wait_for(4)
    assert [f["type"] for f in resumed.frames] == ["event", "event", "recovered", "event"]
    assert ids(resumed) == [*written, live.id]
