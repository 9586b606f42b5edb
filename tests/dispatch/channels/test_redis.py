"""RedisChannel against a real, private redis-server (see tests/support/redis_server.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tbone.dispatch import Channel, jsonenc
from tbone.dispatch.channels.redis import MessageTooLarge, RedisChannel
from tbone.dispatch.testing import RecordingCarrier
from tests.dispatch.channels.behaviour import ChannelBehaviour
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
async def make_channel(redis_server: RedisServer) -> AsyncIterator[Any]:
    made: list[Channel] = []

    async def make(name: str, *, history: int = 1000, **options: Any) -> Channel:
        options.setdefault("block_ms", 200)
        options.setdefault("probe_interval", 1.0)
        options.setdefault("backoff", (0.05, 0.5))
        channel = RedisChannel(name=name, url=redis_server.url, maxlen=history, **options)
        made.append(channel)
        return channel

    yield make
    for channel in made:
        await channel.close(forget=True)


class TestRedisBehaviour(ChannelBehaviour):
    pass


def _payloads(frames: list[Any]) -> list[Any]:
    return [f["payload"] for f in frames if f["type"] == "event"]


async def _reading(make_channel: Any, name: str) -> tuple[RedisChannel, RecordingCarrier]:
    """A channel whose reader reads, and a carrier subscribed to its "e" events."""
    channel = await make_channel(name, history=100)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    return channel, carrier


class _LogWatch(logging.Handler):
    """Lets a test await a log message of the channels (no polling, no sleeps)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._changed.set()

    async def wait_for(self, text: str, timeout: float = 5.0) -> str:
        """The first message containing ``text``, waiting up to ``timeout`` seconds for it."""

        async def seen() -> str:
            while True:
                for message in self.messages:
                    if text in message:
                        return message
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(seen(), timeout)


@pytest.fixture
def logs() -> Iterator[_LogWatch]:
    handler = _LogWatch()
    logger = logging.getLogger("tbone.dispatch.channels")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


# -- options and errors -------------------------------------------------------------------------


def test_needs_exactly_one_of_url_or_client() -> None:
    with pytest.raises(TypeError, match="exactly one of url= or client="):
        RedisChannel(name="no-backend")
    client = aioredis.Redis()
    with pytest.raises(TypeError, match="exactly one of url= or client="):
        RedisChannel(name="both", url="redis://127.0.0.1:1/0", client=client)


def test_a_sync_client_is_refused_with_the_fix() -> None:
    import redis

    with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis"):
        RedisChannel(name="sync-client", client=redis.Redis())  # type: ignore[arg-type]


def test_probe_interval_must_outlast_the_block_time() -> None:
    with pytest.raises(ValueError, match="probe_interval") as info:
        RedisChannel(name="probe", url="redis://127.0.0.1:1/0", block_ms=5000, probe_interval=5)
    assert "Lower block_ms or raise probe_interval" in str(info.value)


@pytest.mark.parametrize("option", ["maxlen", "block_ms", "max_message_bytes", "read_count"])
def test_sizes_must_be_positive_ints(option: str) -> None:
    with pytest.raises(ValueError, match=f"{option} must be at least 1, got 0"):
        RedisChannel(name=f"bad-{option}", url="redis://127.0.0.1:1/0", **{option: 0})


async def test_bad_history_id_is_a_clear_error(make_channel: Any) -> None:
    channel = await make_channel("bad-id")
    with pytest.raises(ValueError, match="stream ids look like"):
        await channel.history(since="not-an-id")


async def test_oversized_message_is_refused_and_nothing_is_stored(
    make_channel: Any, redis_server: RedisServer
) -> None:
    channel = await make_channel("big", max_message_bytes=1000)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    small = await channel.publish("e", "x" * 900)
    with pytest.raises(MessageTooLarge) as info:
        await channel.publish("e", "é" * 600)  # 1,200 bytes once encoded as UTF-8
    error = info.value
    assert (error.channel, error.event, error.limit) == ("big", "e", 1000)
    assert error.size == len(jsonenc.dumps_bytes("é" * 600)) + 1
    assert "max_message_bytes" in str(error)
    after = await channel.publish("e", "after")
    frames = _payloads(await carrier.wait_for(2))
    assert [p["id"] for p in frames] == [small.id, after.id]
    async with aioredis.Redis.from_url(redis_server.url) as client:
        assert await client.xlen(channel.key) == 2
    assert channel.stats()["refused"] == 1


async def test_data_json_cannot_encode_is_refused(make_channel: Any) -> None:
    channel = await make_channel("not-json")
    with pytest.raises(TypeError, match="not JSON serializable"):
        await channel.publish("e", object())
    assert channel.stats()["published"] == 0


# -- encoding -----------------------------------------------------------------------------------


async def test_frames_equal_the_standard_encoding_and_data_is_decoded(make_channel: Any) -> None:
    channel = await make_channel("frames", history=100)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    values = [{"b": 1, "a": [1.5, None, True]}, "ünïcode ✓", 0, None, [{"k": "v"}], 'q"uote']
    sent = [await channel.publish("e", v) for v in values]
    await carrier.wait_for(len(values))
    for text, event in zip(carrier.texts, sent, strict=True):
        assert text == jsonenc.dumps(event.to_dict())
    past = await channel.history()
    assert [e.data for e in past] == values
    assert [e.frame for e in past] == carrier.texts
    assert all(e.size == len(e.frame.encode()) for e in past)


async def test_events_read_from_the_stream_are_decoded_only_when_read(
    make_channel: Any, parsed: list[str]
) -> None:
    channel, carrier = await _reading(make_channel, "lazy")
    values = [{"n": i, "s": "ü"} for i in range(3)]
    texts = [jsonenc.dumps(v) for v in values]
    for value in values:
        await channel.publish("e", value)
    got = _payloads(await carrier.wait_for(3))
    assert [p["data"] for p in got] == values
    past = await channel.history()
    # The consumer spliced the stored text into the frames, and so did history: only the
    # carrier's frames were parsed, by the test.
    assert not set(texts) & set(parsed)
    assert [e.data for e in past] == values
    assert [e.data for e in past] == values
    assert [t for t in parsed if t in texts] == texts  # each once, on first read


async def test_foreign_entries_in_the_stream_are_skipped(
    make_channel: Any, redis_server: RedisServer
) -> None:
    channel = await make_channel("foreign", history=100)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    async with aioredis.Redis.from_url(redis_server.url) as client:
        await client.xadd(channel.key, {"something": "else"})
        await client.xadd(channel.key, {"n": "e", "d": "{not json"})
    good = await channel.publish("e", {"ok": True})
    got = _payloads(await carrier.wait_for(1))
    assert [p["id"] for p in got] == [good.id]
    assert channel.stats()["bad_entries"] == 2
    assert [e.id for e in await channel.history()] == [good.id]


async def test_a_history_page_of_foreign_entries_only_is_read_past(
    make_channel: Any, redis_server: RedisServer
) -> None:
    # A foreign entry bigger than a page's bytes is a page by itself, with no event in it:
    # history_page reads on, or a resume paging from its last event would read it forever.
    channel = await make_channel("foreign-page", history=100)
    await channel.ready()
    since = await channel.publish("e", 1)
    async with aioredis.Redis.from_url(redis_server.url) as client:
        await client.xadd(channel.key, {"something": "y" * 600})
    after = await channel.publish("e", 2)
    page = await channel.history_page(since.id, limit=1000, max_bytes=500)
    assert [e.id for e in page] == [after.id]
    carrier = RecordingCarrier(max_bytes=1000)  # pages of 500 bytes
    assert await asyncio.wait_for(channel.resume(carrier, ["e"], since.id), 5) is True
    frames = await carrier.wait_for(2)
    assert [f["payload"].get("id") for f in frames] == [after.id, None]


async def test_entries_written_by_something_else_are_checked_before_delivery(
    make_channel: Any, redis_server: RedisServer, parsed: list[str]
) -> None:
    channel, carrier = await _reading(make_channel, "other-writer")
    async with aioredis.Redis.from_url(redis_server.url) as client:
        await client.xadd(channel.key, {"n": "e", "d": '{"from": "elsewhere"}'})  # no "v"
    got = _payloads(await carrier.wait_for(1))
    assert got[0]["data"] == {"from": "elsewhere"}
    assert parsed.count('{"from": "elsewhere"}') == 1  # parsed once, before delivery


async def test_a_client_you_own_is_used_and_left_open(redis_server: RedisServer) -> None:
    async with aioredis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        channel = RedisChannel(name="own-client", client=client, block_ms=200, probe_interval=1)
        carrier = RecordingCarrier()
        channel.subscribe("e", carrier)
        await channel.ready()
        event = await channel.publish("e", {"n": 1})
        got = _payloads(await carrier.wait_for(1))
        assert got == [{"name": "e", "data": {"n": 1}, "id": event.id, "channel": "own-client"}]
        assert [e.data for e in await channel.history()] == [{"n": 1}]
        await channel.close(forget=True)
        assert await client.ping() is True  # still the caller's to use and close


# -- stats --------------------------------------------------------------------------------------


async def test_stats_report_the_reader(make_channel: Any) -> None:
    channel = await make_channel("stats", block_ms=100, probe_interval=1.0)
    before = channel.stats()
    assert before["reader"] == "stopped"
    assert before["last_answer_s"] is None
    assert before["backend"] == "redis"
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    start = time.time()
    await channel.publish("e", 1)
    await carrier.wait_for(1)
    stats = channel.stats()
    assert stats["stream"] == "tbone:channel:stats"
    assert stats["consumer"] == "running"
    assert stats["reader"] in {"waiting", "delivering"}
    assert 0 <= stats["last_answer_s"] < 1.0
    assert stats["lag_ms"] is not None
    assert 0 <= stats["lag_ms"] <= (time.time() - start) * 1000 + 50  # 50 ms for clock rounding
    assert stats["behind"] is False
    assert (stats["published"], stats["delivered"], stats["reconnects"], stats["errors"]) == (
        1,
        1,
        0,
        0,
    )
    assert stats["last_error"] is None
    assert (stats["maxlen"], stats["block_ms"], stats["probe_interval"]) == (1000, 100, 1.0)
    await channel.close()
    assert channel.stats()["reader"] == "stopped"


async def test_one_reader_per_channel_whatever_the_subscribers(
    make_channel: Any, redis_server: RedisServer
) -> None:
    channel = await make_channel("one-reader")
    carriers = [RecordingCarrier() for _ in range(20)]
    for i, carrier in enumerate(carriers):
        channel.subscribe(f"e{i % 3}", carrier)
    await channel.ready()
    async with aioredis.Redis.from_url(redis_server.url) as client:
        clients = await client.client_list()
    blocked = [c for c in clients if c.get("cmd") == "xread"]
    assert len(blocked) == 1, blocked


# -- faults -------------------------------------------------------------------------------------


async def test_a_silent_redis_is_detected_within_the_probe_interval(
    tmp_path: Path, logs: _LogWatch
) -> None:
    with RedisServer(tmp_path / "redis") as server:
        channel = RedisChannel(
            name="silent",
            url=server.url,
            block_ms=100,
            probe_interval=0.5,
            backoff=(0.05, 0.2),
        )
        carrier = RecordingCarrier()
        channel.subscribe("e", carrier)
        await channel.ready()
        first = await channel.publish("e", "before")
        await carrier.wait_for(1)
        server.pause()  # sockets stay open, nothing answers
        try:
            paused_at = time.monotonic()
            failure = await logs.wait_for("backend failed")
            detected_in = time.monotonic() - paused_at
        finally:
            server.resume()
        # Within the probe interval, plus slack for a loaded machine; without the probe the
        # blocked XREAD would wait forever (nothing answers, the socket stays open).
        assert detected_in < 0.5 + 1.0, detected_in
        assert "TimeoutError" in failure
        stats = channel.stats()
        assert stats["errors"] >= 1
        assert "Timeout" in stats["last_error"]
        await channel.ready()  # back once Redis answers again
        second = await channel.publish("e", "after")
        got = _payloads(await carrier.wait_for(2))
        assert [p["id"] for p in got] == [first.id, second.id]
        await channel.close(forget=True)


async def test_close_ends_in_bounded_time_when_redis_stops_answering(tmp_path: Path) -> None:
    # SIGSTOP: the sockets stay open and nothing answers, as a hung or partitioned Redis.
    # The reader is blocked in XREAD and the clients must be closed: close() waits for
    # neither beyond its timeout.
    with RedisServer(tmp_path / "redis") as server:
        channel = RedisChannel(
            name="frozen", url=server.url, block_ms=1000, probe_interval=30.0, backoff=(0.05, 0.2)
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


async def test_events_stored_while_the_reader_was_away_arrive_in_order(
    tmp_path: Path, logs: _LogWatch
) -> None:
    with RedisServer(tmp_path / "redis", persist=True) as server:
        # The reader waits 0.3 to 0.6 s before reconnecting: long enough to publish meanwhile.
        channel = RedisChannel(
            name="away", url=server.url, block_ms=100, probe_interval=0.5, backoff=(0.6, 0.6)
        )
        carrier = RecordingCarrier()
        channel.subscribe("e", carrier)
        await channel.ready()
        first = await channel.publish("e", 0)
        await carrier.wait_for(1)
        server.restart()  # SIGKILL, then the same port and data
        await logs.wait_for("backend failed")
        assert channel.stats()["reader"] == "down"
        async with aioredis.Redis.from_url(server.url) as client:
            away = [
                (await client.xadd(channel.key, {"n": "e", "d": str(i)})).decode()
                for i in range(1, 6)
            ]
        assert channel.stats()["reader"] == "down"  # still backing off: these wait in Redis
        got = _payloads(await carrier.wait_for(6))
        assert [p["data"] for p in got] == list(range(6))
        assert [p["id"] for p in got] == [first.id, *away]
        assert channel.stats()["reconnects"] == 1
        await channel.close(forget=True)


async def test_redis_restarted_without_its_data(tmp_path: Path, logs: _LogWatch) -> None:
    with RedisServer(tmp_path / "redis", persist=False) as server:
        channel = RedisChannel(
            name="amnesia", url=server.url, block_ms=100, probe_interval=0.5, backoff=(0.05, 0.2)
        )
        carrier = RecordingCarrier()
        channel.subscribe("e", carrier)
        await channel.ready()
        old = await channel.publish("e", "old")
        await carrier.wait_for(1)
        server.restart()
        await logs.wait_for("is behind the last id delivered")
        # Events stored after `old` may have been lost unread: the subscriber is told (1013,
        # so its client resumes and learns `complete: false`), never left with a silent gap.
        assert (await carrier.wait_closed())[0] == 1013
        again = RecordingCarrier()
        channel.subscribe("e", again)
        new = await channel.publish("e", "new")
        assert [p["id"] for p in _payloads(await again.wait_for(1))] == [new.id]
        assert [p["id"] for p in _payloads(carrier.frames)] == [old.id]
        stats = channel.stats()
        assert (stats["stream_resets"], stats["gaps"]) == (1, 1)
        past = await channel.history(since=old.id)
        assert past.complete is False  # told, not a silent gap
        assert [e.id for e in past] == [new.id]
        await channel.close(forget=True)


async def test_a_quiet_channel_is_not_mistaken_for_a_dead_link(
    make_channel: Any, logs: _LogWatch
) -> None:
    channel = await make_channel("quiet", block_ms=50, probe_interval=0.5)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    # Many empty XREAD BLOCK answers in a row, and no failure among them.
    with pytest.raises((asyncio.TimeoutError, TimeoutError)):
        await logs.wait_for("backend failed", timeout=1.0)
    stats = channel.stats()
    assert (stats["errors"], stats["reconnects"]) == (0, 0)
    assert stats["last_answer_s"] < 0.5
    event = await channel.publish("e", "still here")
    assert _payloads(await carrier.wait_for(1))[0]["id"] == event.id


def test_a_channel_closed_on_one_event_loop_runs_again_on_the_next(
    redis_server: RedisServer,
) -> None:
    # Tests and reloads run the same channel (a process-wide singleton) on one loop after
    # another: clients of the first loop must not be reused on the second.
    async def round_trip(value: int) -> tuple[RedisChannel, list[Any]]:
        channel = RedisChannel(name="loops", url=redis_server.url, block_ms=100, probe_interval=1)
        carrier = RecordingCarrier()
        channel.subscribe("e", carrier)
        await channel.ready()
        await channel.publish("e", value)
        got = [p["data"] for p in _payloads(await carrier.wait_for(1))]
        await channel.close()  # the channel stays registered
        return channel, got

    first, got = asyncio.run(round_trip(1))
    assert got == [1]
    second, got = asyncio.run(round_trip(2))
    assert second is first
    assert got == [2]
    asyncio.run(second.close(forget=True))


async def test_a_backlog_is_read_in_batches_in_order(
    make_channel: Any, redis_server: RedisServer
) -> None:
    channel = await make_channel("batches", read_count=10)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    # 35 entries land in one round trip, while the reader is blocked: it reads 10 at a time.
    async with aioredis.Redis.from_url(redis_server.url) as client:
        pipe = client.pipeline(transaction=True)
        for i in range(35):
            pipe.xadd(channel.key, {"n": "e", "d": str(i)})
        ids = [raw.decode() for raw in await pipe.execute()]
    got = _payloads(await carrier.wait_for(35))
    assert [p["id"] for p in got] == ids
    assert [p["data"] for p in got] == list(range(35))
    assert channel.stats()["behind"] is False  # the last read was not a full batch


async def test_the_entries_of_one_read_are_delivered_as_one_batch(
    redis_server: RedisServer,
) -> None:
    nows: list[bool] = []

    class Watched(RedisChannel):
        def deliver(self, event: Any, *, now: bool = True) -> None:
            nows.append(now)
            super().deliver(event, now=now)

    channel = Watched(name="one-read", url=redis_server.url, block_ms=200, probe_interval=1)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    async with aioredis.Redis.from_url(redis_server.url) as client:
        pipe = client.pipeline(transaction=True)  # stored at once: one XREAD answer gets all
        for i in range(3):
            pipe.xadd(channel.key, {"n": "e", "d": str(i), "v": "1"})
        await pipe.execute()
    await carrier.wait_for(3)
    assert nows == [False, False, True]  # writers were told more followed


# -- gathering a publish loop's events ------------------------------------------------------------


class _Batches(RedisChannel):
    """Records the ``now`` of each delivery: True ends a batch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nows: list[bool] = []

    def deliver(self, event: Any, *, now: bool = True) -> None:
        self.nows.append(now)
        super().deliver(event, now=now)


@pytest.mark.parametrize(
    ("gather_ms", "error"),
    [(-1, ValueError), (1001, ValueError), ("2", TypeError), (True, TypeError)],
)
def test_gather_ms_is_checked(gather_ms: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="gather_ms"):
        RedisChannel(name="bad-gather", url="redis://127.0.0.1:1/0", gather_ms=gather_ms)


async def test_a_publish_loop_is_delivered_in_batches_in_order(redis_server: RedisServer) -> None:
    # Each publish is awaited before the next, as a user's loop does: the reader holds what it
    # read while the next publish of its process is on its way, so events go out in batches.
    channel, carrier = await _gathering(redis_server, "gather-loop")
    sent = [await channel.publish("e", i) for i in range(30)]
    got = _payloads(await carrier.wait_for(30))
    assert [p["id"] for p in got] == [e.id for e in sent]
    assert [p["data"] for p in got] == list(range(30))
    assert channel.nows.count(True) < 30, channel.nows  # fewer batches than events
    assert channel.stats()["gather_ms"] == 1000
    await channel.close(forget=True)


async def test_a_gathered_batch_holds_at_most_read_count(redis_server: RedisServer) -> None:
    channel, carrier = await _gathering(redis_server, "gather-count", read_count=4)
    sent = [await channel.publish("e", i) for i in range(25)]
    got = _payloads(await carrier.wait_for(25))
    assert [p["id"] for p in got] == [e.id for e in sent]
    sizes = [len(b) for b in _batch_sizes(channel.nows)]
    assert max(sizes) == 4, sizes
    await channel.close(forget=True)


async def test_the_reader_waits_only_for_publishes_of_its_process_on_their_way(
    redis_server: RedisServer,
) -> None:
    # With a whole second to gather, every event here still arrives at once: no publish of
    # this process is on its way once the last one returned, and another writer's entry
    # never makes the reader wait.
    channel, carrier = await _gathering(redis_server, "gather-none")
    start = time.monotonic()
    for i in range(5):
        await channel.publish("e", i)
    await carrier.wait_for(5)
    async with aioredis.Redis.from_url(redis_server.url) as client:
        await client.xadd(channel.key, {"n": "e", "d": "5", "v": "1"})
    await carrier.wait_for(6)
    single = await channel.publish("e", 6)
    got = _payloads(await carrier.wait_for(7))
    assert time.monotonic() - start < 0.9  # a wait for gather_ms would take 1 s alone
    assert [p["data"] for p in got] == list(range(7))
    assert got[-1]["id"] == single.id
    await channel.close(forget=True)


async def _gathering(
    redis_server: RedisServer, name: str, cls: type[_Batches] | None = None, **options: Any
) -> tuple[_Batches, RecordingCarrier]:
    """A channel of ``cls`` that may gather for a second, with one ready subscriber of "e"."""
    channel = (cls or _Batches)(
        name=name, url=redis_server.url, block_ms=200, probe_interval=1, gather_ms=1000, **options
    )
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    return channel, carrier


class _LateAnswers(_Batches):
    """Each XADD's answer comes back a second after Redis stored the entry."""

    def _publisher(self) -> Any:
        client = super()._publisher()

        class Late:
            async def xadd(self, *args: Any, **kwargs: Any) -> Any:
                stored = await client.xadd(*args, **kwargs)
                await asyncio.sleep(1.0)
                return stored

        return Late()


async def test_a_lone_publish_on_its_way_does_not_hold_its_own_event(
    redis_server: RedisServer,
) -> None:
    # The reader reads the entry before its publish returns (as when the answers of XADD and
    # XREAD arrive together): with no loop behind that publish, nothing is worth waiting for.
    channel, carrier = await _gathering(redis_server, "gather-lone", _LateAnswers)
    start = time.monotonic()
    publishing = asyncio.ensure_future(channel.publish("e", "lone"))
    got = _payloads(await carrier.wait_for(1))
    assert time.monotonic() - start < 0.5  # not held until the answer, a second later
    assert not publishing.done()
    assert got[0]["id"] == (await publishing).id
    await channel.close(forget=True)


async def test_gathering_gives_way_to_the_publisher_gate(redis_server: RedisServer) -> None:
    # Two events ahead of the reader and the publisher waits for it: the reader, holding its
    # batch for publishes on their way, then sees none on its way and delivers, so the
    # publisher goes on long before publish_timeout.
    channel, carrier = await _gathering(
        redis_server, "gather-gate", queue_size=2, publish_timeout=5.0
    )
    start = time.monotonic()
    sent = [await channel.publish("e", i) for i in range(20)]
    got = _payloads(await carrier.wait_for(20))
    assert time.monotonic() - start < 3.0
    assert [p["id"] for p in got] == [e.id for e in sent]
    assert max(len(b) for b in _batch_sizes(channel.nows)) <= 3
    await channel.close(forget=True)


def _batch_sizes(nows: list[bool]) -> list[list[bool]]:
    batches: list[list[bool]] = [[]]
    for now in nows:
        batches[-1].append(now)
        if now:
            batches.append([])
    return [b for b in batches if b]
