"""RedisChannel's reader: one ``XREAD BLOCK`` loop per channel and process, and the publishes
of this process on their way to Redis, which it may wait for (``gather_ms``).

Rules (``docs/redis.md``; the channel's module docstring has them in short):

* One connection per attempt (:meth:`StreamReader.read`), closed when the attempt ends.
  Every read is bounded by ``probe_interval``: a silent Redis raises TimeoutError, and the
  consumer reconnects with backoff and reads again after the last id it delivered.
* While behind (a full batch, or back after a fault) it reads with a check that the last entry
  it read is still in the stream: if ``maxlen`` trimmed it, entries were lost unread, and the
  channel reports a gap. A stream that ends below the reader's position (found on connecting,
  and after each ``block_ms`` without entries) lost entries too: the gap is reported and
  reading goes on from the stream's new end.
* While a publish loop of this process has its next publish on its way, the reader holds a
  batch at most ``gather_ms`` for it (:meth:`StreamReader.gather`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol, TypeVar

from tbone.dispatch.channels.redis_clients import Clients, close_quietly
from tbone.dispatch.channels.redis_stream import START, Stream, entries_of, id_key, text
from tbone.dispatch.events import Event
from tbone.dispatch.extras import requires

with requires(__name__, "redis-py >= 5.0.1", extra="redis"):
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import MovedError
    from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Landings", "StreamReader"]

T = TypeVar("T")


class _Channel(Protocol):
    """What the reader needs of its channel."""

    def mark_ready(self) -> None: ...

    def report_gap(self, reason: str) -> None: ...


class Landings:
    """This process's publishes: how many are on their way to Redis, how many came back, the
    highest id they stored, and a future the next one to come back resolves.

    A publish that starts in the step in which the previous one came back (``just_landed``)
    is a loop's next (``for ...: await publish(...)``); ``looping`` says whether the last one
    started was.
    """

    __slots__ = ("just_landed", "landed", "landing", "looping", "stored_upto", "storing")

    def __init__(self) -> None:
        self.storing = 0
        self.landed = 0
        self.stored_upto = (0, 0)
        self.landing: asyncio.Future[None] | None = None
        self.just_landed = False
        self.looping = False

    def leaving(self) -> None:
        """A publish is on its way."""
        self.looping = self.just_landed
        self.storing += 1

    def stored(self, stream_id: str) -> None:
        """A publish stored ``stream_id``."""
        self.stored_upto = max(self.stored_upto, id_key(stream_id))

    def came_back(self, loop: asyncio.AbstractEventLoop) -> None:
        """A publish came back (stored or failed): wake a reader that waits for it."""
        self.storing = max(0, self.storing - 1)  # reset by on_new_loop meanwhile: 0
        self.landed += 1
        landing, self.landing = self.landing, None
        if landing is not None and not landing.done() and landing.get_loop() is loop:
            landing.set_result(None)
        if not self.just_landed:
            self.just_landed = True
            loop.call_soon(self._step_ended)

    def _step_ended(self) -> None:
        self.just_landed = False

    def on_new_loop(self) -> None:
        """Publishes of a previous event loop never come back."""
        self.storing = 0
        self.landing = None
        self.just_landed = self.looping = False


class StreamReader:
    """The reading side of one RedisChannel (see the module docstring)."""

    def __init__(
        self,
        channel: _Channel,
        stream: Stream,
        clients: Clients,
        landings: Landings,
        *,
        read_count: int,
        block_ms: int,
        gather_ms: float,
        catch_up_bytes: int,
    ) -> None:
        self.channel = channel
        self.stream = stream
        self.clients = clients
        self.landings = landings
        self.read_count = read_count
        self.block_ms = block_ms
        self.gather_ms = gather_ms
        self.catch_up_bytes = catch_up_bytes
        #: stopped, connecting, catching up, waiting, delivering or down.
        self.state = "stopped"
        self.last_answer: float | None = None
        self.lag_ms: int | None = None
        self.behind = False
        #: Set by the channel's close: the reader ends at its next answer from Redis.
        self.stopping = False
        self._client: aioredis.Redis | None = None
        # (lost position, where reading went on): a read after the old position reads on
        # from the new one instead of reporting the same loss twice.
        self._rebased: tuple[str, str] | None = None
        # This attempt's position, and whether the next read checks it is still held.
        self._position = START
        self._checked = False

    async def read(self, after: str | None) -> AsyncIterator[list[Event]]:
        """One attempt: read the stream after ``after`` (None: after its newest entry)."""
        if after is not None and self._rebased is not None and after == self._rebased[0]:
            after = self._rebased[1]  # that loss was reported; the position moved on since
        self.state = "connecting"
        client: aioredis.Redis | None = None
        try:
            await self.clients.prepare()
            client = self._client = self.clients.open_reader()
            await self._start(client, after)
            self.channel.mark_ready()
            while True:
                if self._checked:
                    entries = await self._catch_up(client)
                else:
                    entries = await self._wait(client)
                if not entries:
                    continue
                self.state = "delivering"
                self._position = text(entries[-1][0])
                self.lag_ms = max(0, int(time.time() * 1000) - id_key(self._position)[0])
                events = self.stream.events(entries)
                if events:
                    yield events
        except (MovedError, RedisConnectionError, RedisTimeoutError) as exc:
            self.clients.redirect(client, exc)
            raise
        finally:
            self.state = "down"
            self._client = None
            if client is not None:
                await close_quietly(client)

    async def _answer(self, request: Awaitable[T]) -> T:
        # Every answer: Redis is alive, and a close that asked the reader to stop is heard.
        reply = await request
        self.last_answer = time.monotonic()
        # Python < 3.12's asyncio.wait_for, which redis-py uses to bound socket writes, can
        # swallow a cancellation that lands as the write completes (CPython gh-86296). The
        # reader then checks this flag at each answer, so close() ends it within block_ms.
        if self.stopping:
            raise asyncio.CancelledError()
        return reply

    async def _start(self, client: aioredis.Redis, after: str | None) -> None:
        _, tail = await self._answer(self.stream.ends(client))
        self._checked = False
        if after is None:
            self._position = tail
        elif id_key(tail) < id_key(after):
            self._position = self._regressed(after, tail)
        else:
            self._position = after
            self._checked = True  # what was stored meanwhile may have been trimmed

    async def _catch_up(self, client: aioredis.Redis) -> list[Any]:
        # A read that checks the position is still in the stream.
        self.state = "catching up"
        position = self._position
        found, more, entries = await self._answer(
            self.stream.page(client, position, self.read_count, self.catch_up_bytes)
        )
        self._checked = self.behind = more
        if not found and position != START:
            first, tail = await self._answer(self.stream.ends(client))
            if id_key(tail) < id_key(position):
                self._position = self._regressed(position, tail)
                self._checked = False
                return []
            self._missing(position, first)
        return entries

    async def _wait(self, client: aioredis.Redis) -> list[Any]:
        # A blocking read of what comes after the position.
        self.state = "waiting"
        read = client.xread(
            {self.stream.key: self._position}, count=self.read_count, block=self.block_ms
        )
        reply = await self._answer(read)
        entries = entries_of(reply) if reply else []
        if entries and self.landings.storing and self.gather_ms:
            await self.gather(client, entries)
        self._checked = self.behind = len(entries) >= self.read_count
        if not entries:
            # block_ms without an entry: make sure the stream did not go back below us while
            # this connection lived (XREAD would wait for ids above the position, which may
            # take long to come).
            _, tail = await self._answer(self.stream.ends(client))
            if id_key(tail) < id_key(self._position):
                self._position = self._regressed(self._position, tail)
        return entries

    async def gather(self, client: aioredis.Redis, entries: list[Any]) -> None:
        """Add to ``entries`` the entries this process's publishes on their way store next.

        A loop that awaits each ``publish`` shares its event loop with this process's fan-out:
        each ``XADD`` answer is read only once the fan-out in progress is done, so the loop
        publishes one event per fan-out and every fan-out carries one event, its most
        expensive way (one wake-up of every connection per event, here and in the clients).
        Holding the batch while the loop's next publish is on its way, and reading what it
        stored, lets the loop run ahead and one fan-out carry many events. At most
        ``gather_ms`` and ``read_count`` entries. A publish counts as a loop's next when it
        starts in the step in which the previous one came back; any other publish on its way
        is waited for only when the batch's last entry has come back already (so it is a
        newer entry): a publish now and then is never held behind its own answer.
        """
        landings = self.landings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gather_ms / 1000
        seen = landings.landed
        while len(entries) < self.read_count:
            last = text(entries[-1][0])
            if landings.landed == seen:
                remaining = deadline - loop.time()
                if not landings.storing or remaining <= 0:
                    return
                if not landings.looping and landings.stored_upto < id_key(last):
                    # What is on its way may be what the batch ends with, and no loop follows
                    # it (a publish now and then): waiting for it would only delay the batch.
                    return
                landing = landings.landing
                if landing is None or landing.done():
                    landing = landings.landing = loop.create_future()
                await asyncio.wait((landing,), timeout=remaining)  # never cancels `landing`
                continue
            seen = landings.landed
            if landings.stored_upto <= id_key(last):
                continue  # what came back is in the batch already
            if loop.time() >= deadline:
                return
            reply = await self._answer(
                client.xread({self.stream.key: last}, count=self.read_count - len(entries))
            )
            if reply:
                entries.extend(entries_of(reply))

    def _regressed(self, position: str, tail: str) -> str:
        """The stream went back below ``position``: report the gap; where to read on."""
        self.stream.counts["stream_resets"] += 1
        self.stream.lost(position)
        self._rebased = (position, tail)
        self.landings.stored_upto = (0, 0)  # ids the stream lost: none of them comes back
        self.channel.report_gap(
            f"the stream {self.stream.key!r} is behind the last id delivered ({position}; it "
            f"now ends at {tail}): Redis lost entries (a failover to a replica that lacked "
            "them, a restart without persistence, or the key was deleted)"
        )
        return tail

    def _missing(self, position: str, first: str) -> None:
        """The stream no longer holds ``position`` (but does not end below it): report it."""
        if id_key(first) < id_key(position):
            # Older entries are still there: not trimmed, lost (a failover to a replica that
            # lacked it, newer entries written since; or deleted with XDEL).
            self.stream.counts["stream_resets"] += 1
            reason = "lost (a failover to a replica that lacked it, or deleted)"
        else:
            reason = "trimmed by maxlen (or lost with the entries before it)"
        self.stream.lost(position)
        self.channel.report_gap(f"the stream no longer holds {position}: {reason}")

    def on_new_loop(self) -> None:
        """The connection of a previous event loop cannot be awaited from this one."""
        self._client = None
        self.state = "stopped"

    async def close(self) -> None:
        """Close the reader's connection, if an attempt left one open."""
        client, self._client = self._client, None
        if client is not None:
            await close_quietly(client)
        self.state = "stopped"
