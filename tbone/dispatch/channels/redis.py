"""RedisChannel: a channel on a Redis stream, shared by every process and host that uses it.

``RedisChannel(name="pubsub", url="redis://127.0.0.1:6379/0")`` keeps its events in the stream
``<prefix><name>`` (default ``tbone:channel:pubsub``). The rules (``docs/redis.md`` has the
long form):

* ``publish`` is one ``XADD ... MAXLEN ~ <maxlen>``; it returns once Redis stored the event,
  and the Event's id is the stream id Redis gave it (``"<ms>-<seq>"``, ordered in the stream).
* Each process runs ONE reader per channel (a blocking ``XREAD`` on its own connection), however
  many subscribers it has, and delivers every event once to each subscriber, in stream order.
* While a publish loop of this process (``for ...: await channel.publish(...)``) has its next
  publish on its way to Redis, the reader holds the entries it read, at most ``gather_ms``
  (2 ms), and adds the ones the loop stores: the loop then runs ahead of its own process's
  fan-out, which carries its events in batches instead of one at a time (see
  ``RedisChannel._gather``). Otherwise (other processes' events, a publish now and then) the
  reader hands events over at once.
* The reader survives Redis going away: it reconnects with backoff and reads again after the
  last id it delivered, so events stored meanwhile arrive late but in order, if the stream
  still holds them (``maxlen`` trims the oldest).
* A dead link is detected even when the socket stays open: the reader's socket timeout is
  ``probe_interval``, longer than the ``XREAD BLOCK`` time, so a Redis that stops answering
  (paused, partitioned, hung) fails the read within ``probe_interval`` and the reader
  reconnects.
* History and resume come from the stream (``XRANGE``). History after an id is complete only if
  the stream still holds that id; otherwise it is reported incomplete (trimmed, deleted, or the
  stream was lost in a Redis restart without persistence).
* A stream that went back below the reader (a Sentinel failover to a replica that lacked the
  last entries, a restart without persistence, the key deleted and written again) is a gap:
  the reader reports it (subscribers are closed with 1013 and resume), counts it, and reads on
  from the stream's new end. History is then incomplete after any id below what was lost.
* ``client=`` takes a ``redis.asyncio.Redis`` (one server, or ``Sentinel.master_for()``) or a
  ``redis.asyncio.RedisCluster``: the channel uses one key, so it lives in one slot, and the
  reader reads from the master that serves it.
* ``publish`` refuses an event whose encoded data is larger than ``max_message_bytes`` with
  :class:`MessageTooLarge`, before anything reaches Redis.
* ``url`` is checked when the channel is made (``ValueError``, one line with the rule): a
  scheme redis-py knows, a host, a port, a database number as the path, options redis-py
  takes. Errors retrying cannot fix (a bad password, an ACL that forbids the commands, a
  database number above the server's ``databases``) make ``ready()`` fail at once
  (:meth:`RedisChannel.fatal_error`).

Needs redis-py >= 5.0.1 (its ``redis.asyncio`` API) and Redis >= 5.0 (streams, ``XADD MAXLEN ~``).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any

try:
    import redis
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster
    from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "RedisChannel needs redis-py >= 5.0.1: pip install 'tbone-asgi[redis]'"
    ) from exc

from tbone.dispatch import jsonenc
from tbone.dispatch.channels import Channel, ChannelOptions
from tbone.dispatch.channels.redis_clients import URL_RULE, Clients, check_options, check_url
from tbone.dispatch.channels.redis_reader import Landings, StreamReader
from tbone.dispatch.channels.redis_stream import Stream, id_key, text
from tbone.dispatch.events import Event, History, MessageTooLarge

# 5.0.1 brought Redis.aclose() and Redis.from_pool(), both used here.
if tuple(int(n) for n in re.findall(r"\d+", redis.__version__)[:3]) < (5, 0, 1):  # pragma: no cover
    raise ImportError(
        f"RedisChannel needs redis-py >= 5.0.1 (found {redis.__version__}): "
        "pip install 'tbone-asgi[redis]'"
    )

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from typing_extensions import Unpack

__all__ = ["GATHER_MS", "URL_RULE", "MessageTooLarge", "RedisChannel", "check_url"]

#: How long a reader may hold a batch for its process's publish loop (``gather_ms``).
GATHER_MS = 2.0


class RedisChannel(Channel):
    """A channel on the Redis stream ``<prefix><name>``. See the module docstring for the rules.

    Give either ``url`` (the channel makes and closes its own clients) or ``client``, a
    ``redis.asyncio.Redis`` (``Sentinel(...).master_for(service)`` included) or
    ``redis.asyncio.RedisCluster`` that you own and close; the reader then uses its own
    connection made with the same settings (a blocking read must not hold one of yours), to
    the master Sentinel names or, in a cluster, to the master that serves the stream's slot.

    * ``maxlen``: history kept in the stream (``XADD MAXLEN ~``: Redis trims whole nodes, so
      it may keep a little more).
    * ``block_ms``: how long one ``XREAD BLOCK`` waits for new entries before asking again.
    * ``probe_interval``: seconds without any answer from Redis after which the reader treats
      the link as dead and reconnects; must be longer than ``block_ms``.
    * ``read_count``: most entries one ``XREAD`` returns (and one batch holds).
    * ``gather_ms``: how long the reader may hold a batch for the next publish of a publish
      loop of this process, on its way to Redis (0: never).
    * ``socket_timeout``: seconds a ``publish`` or history read waits for Redis (clients made
      from ``url`` only).
    * ``max_message_bytes``, ``window``, ``window_bytes``, ``queue_size``, ``queue_bytes``,
      ``publish_timeout``, ``backoff``: as for every :class:`Channel` (``maxlen`` is its
      ``history``).

    Connections belong to the event loop that opened them: ``await channel.close()`` before
    that loop ends (``tbone_asgi.channels_lifespan`` does); the channel then runs again on the
    next loop with new connections.
    """

    backend = "redis"
    checks_size = True

    def __init__(
        self,
        name: str,
        *,
        url: str | None = None,
        client: aioredis.Redis | RedisCluster | None = None,
        maxlen: int = 10_000,
        prefix: str = "tbone:channel:",
        block_ms: int = 2_000,
        probe_interval: float = 5.0,
        read_count: int = 100,
        gather_ms: float = GATHER_MS,
        socket_timeout: float = 5.0,
        **options: Unpack[ChannelOptions],
    ) -> None:
        check_options(
            url=url,
            client=client,
            maxlen=maxlen,
            block_ms=block_ms,
            read_count=read_count,
            gather_ms=gather_ms,
            probe_interval=probe_interval,
        )
        super().__init__(name, history=maxlen, **options)
        self.url = url
        self.key = prefix + name
        self.maxlen = maxlen
        self.block_ms = block_ms
        self.probe_interval = probe_interval
        self.read_count = read_count
        self.gather_ms = gather_ms
        self.socket_timeout = socket_timeout
        # The parts: the clients, the stream's reads and losses, this process's publishes on
        # their way, and the reader loop.
        self._clients = Clients(
            self.key,
            url=url,
            client=client,
            socket_timeout=socket_timeout,
            probe_interval=probe_interval,
        )
        self._stream = Stream(self.key, name)
        self._landings = Landings()
        self._reader = StreamReader(
            self,
            self._stream,
            self._clients,
            self._landings,
            read_count=read_count,
            block_ms=block_ms,
            gather_ms=gather_ms,
            catch_up_bytes=self.window_bytes // 4,
        )

    @property
    def _client(self) -> aioredis.Redis | RedisCluster | None:
        # The user's client, or the one made from the URL on this event loop (tests read it).
        return self._clients.client

    def _publisher(self) -> aioredis.Redis | RedisCluster:
        # The client for publishes and history reads (a seam: tests answer late through it).
        return self._clients.publisher()

    # -- backend hooks -----------------------------------------------------------------------

    async def store(self, name: str, data: Any) -> Event:
        """``XADD`` the event (name and JSON data) with ``MAXLEN ~ maxlen``; return it.

        Raises TypeError for data :mod:`tbone.dispatch.jsonenc` cannot encode and
        :class:`MessageTooLarge` over ``max_message_bytes``, both before contacting Redis;
        redis-py's ConnectionError or TimeoutError when Redis cannot be reached (the event may
        then have been stored or not: if it was, subscribers receive it). With ``url``, a
        connection found dead is replaced and the XADD sent once more; if the first one was
        stored but its answer lost, the event is stored twice (two ids).
        """
        payload = jsonenc.dumps_bytes(data)
        self.check_size(name, payload)
        publisher = self._publisher()
        loop = asyncio.get_running_loop()
        landings = self._landings
        landings.leaving()
        try:
            reply = await publisher.xadd(
                self.key, self._stream.entry(name, payload), maxlen=self.maxlen, approximate=True
            )
            stream_id = text(reply)
            landings.stored(stream_id)
        finally:
            landings.came_back(loop)
        return Event.from_json(name, payload, stream_id, self.name, data=data)

    def listen(self, after: str | None) -> AsyncIterator[list[Event]]:
        """Read the stream after ``after`` (None: after its newest entry) with ``XREAD BLOCK``.

        Each read's entries are yielded as one batch (at most ``read_count``).

        One connection per attempt, closed when the attempt ends. Every read is bounded by
        ``probe_interval``: a silent Redis raises TimeoutError here, and the consumer loop
        reconnects with backoff and calls this again after the last delivered id. While the
        reader is behind (a full batch, or back after a fault), it reads with a check that
        the last entry it read is still in the stream: if ``maxlen`` trimmed it, entries were
        lost unread, and :meth:`Channel.report_gap` says so. A stream that ends below the
        reader's position (found on connecting, and after each ``block_ms`` without entries)
        lost entries too: the gap is reported and reading goes on from the stream's new end.
        """
        return self._reader.read(after)

    async def read_history(self, since: str | None) -> History:
        """``XRANGE`` from ``since``; complete when the stream still holds ``since`` itself.

        Raises ValueError for an id that is not a stream id.
        """
        return await self._stream.history(self._publisher(), since)

    async def history_page(self, since: str | None, *, limit: int, max_bytes: int) -> History:
        """One page of history, bounded in entries and bytes inside Redis (a Lua script).

        A page whose entries are all foreign (skipped) is read past: a page that says ``more``
        holds an event, or a reader paging on from its last event would read it forever.
        """
        return await self._stream.history_page(self._publisher(), since, limit, max_bytes)

    def order_key(self, id: str) -> Any:
        """Stream ids order as (milliseconds, sequence)."""
        return id_key(id)

    def fatal_error(self, exc: Exception) -> str | None:
        """The fix for errors retrying cannot fix: a bad password or user, an ACL that forbids
        the channel's commands, a database number the server does not have, a server without
        the commands (Redis before 5.0, or renamed ones), settings redis-py refuses."""
        if isinstance(exc, AuthenticationError):
            return "check the user name and password (in the URL: redis://user:password@host)"
        if isinstance(exc, NoPermissionError):
            return (
                f"let the user run EVAL and the stream commands on the key {self.key!r} "
                "(ACL SETUSER ... +@stream +eval ~<key>)"
            )
        if isinstance(exc, ResponseError):
            text = str(exc)
            if "DB index is out of range" in text:
                return "use a database number below the server's 'databases' (16 by default)"
            if text.lower().startswith("unknown command"):
                return "use Redis 5.0 or newer, with EVAL and the stream commands not renamed"
        if isinstance(exc, (ValueError, TypeError)):
            return "fix the client's settings (the URL, or the options of the client given)"
        return None

    # -- running -----------------------------------------------------------------------------

    async def close(self, *, forget: bool = False, timeout: float | None = None) -> None:
        """Stop the reader, close the subscribers (see :meth:`Channel.close`) and the clients."""
        self._reader.stopping = True
        try:
            await super().close(forget=forget, timeout=timeout)
        finally:
            self._reader.stopping = False

    def on_new_loop(self) -> None:
        # Clients of a previous loop cannot be awaited from this one: drop them.
        self._reader.on_new_loop()
        self._landings.on_new_loop()
        self._clients.on_new_loop()

    async def close_backend(self) -> None:
        """Close the reader connection and, when made from ``url``, the publishing client."""
        await self._reader.close()
        await self._clients.close()

    # -- observability -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The base counters (see :meth:`Channel.stats`) plus the reader's view of Redis.

        ``stream``: the key; ``reader``: stopped, connecting, waiting (blocked in XREAD),
        delivering or down; ``last_answer_s``: seconds since Redis last answered the reader
        (None before the first answer); ``lag_ms``: age of the newest entry of the last batch
        when it arrived (this host's clock against the id's, so clock skew counts);
        ``behind``: the last read was a full batch, so more entries were waiting;
        ``bad_entries``: foreign stream entries skipped;
        ``stream_resets``: times the stream lost entries the reader had reached: it ended
        below the reader's position, or no longer held the position while holding older
        entries (a failover to a replica that lacked them, a restart without persistence).
        """
        stats = super().stats()
        reader = self._reader
        last = reader.last_answer
        stats.update(
            stream=self.key,
            reader=reader.state,
            last_answer_s=None if last is None else round(time.monotonic() - last, 3),
            lag_ms=reader.lag_ms,
            behind=reader.behind,
            maxlen=self.maxlen,
            block_ms=self.block_ms,
            gather_ms=self.gather_ms,
            probe_interval=self.probe_interval,
            **self._stream.counts,
        )
        return stats
