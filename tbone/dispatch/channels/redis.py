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
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

try:
    import redis
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import (
        AuthenticationError,
        MovedError,
        NoPermissionError,
        ResponseError,
        SlotNotCoveredError,
    )
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "RedisChannel needs redis-py >= 5.0.1: pip install 'tbone-asgi[redis]'"
    ) from exc

from tbone.dispatch import jsonenc
from tbone.dispatch.channels import Channel, ChannelOptions
from tbone.dispatch.checks import whole_number
from tbone.dispatch.events import Event, History, MessageTooLarge

# 5.0.1 brought Redis.aclose() and Redis.from_pool(), both used here.
if tuple(int(n) for n in re.findall(r"\d+", redis.__version__)[:3]) < (5, 0, 1):  # pragma: no cover
    raise ImportError(
        f"RedisChannel needs redis-py >= 5.0.1 (found {redis.__version__}): "
        "pip install 'tbone-asgi[redis]'"
    )

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["MessageTooLarge", "RedisChannel"]

logger = logging.getLogger("tbone.dispatch.channels.redis")

# RESP2: every Redis >= 5 speaks it (RESP3 needs 6.0), and with it redis-py 8 checks a pooled
# connection before reuse, so the first publish after a Redis restart does not fail on a
# connection the server closed (with RESP3 it skips that check).
_URL_CLIENT_OPTIONS: dict[str, Any] = {"protocol": 2}
_STREAM_ID = re.compile(r"(\d+)-(\d+)")
_NAME_FIELD = b"n"  # the event name, UTF-8
_DATA_FIELD = b"d"  # the JSON text of the event data
# "1": ``d`` is tbone.dispatch.jsonenc's text, written by store(), spliced into frames as it is
# (never decoded on the way). An entry without it was written by something else: its ``d`` is
# parsed first, so text that is not JSON never reaches a client.
_FORMAT_FIELD = b"v"
_FORMAT = "1"
_START = "0-0"  # the position before any entry: an empty stream, or none at all
#: How long a reader may hold a batch for its process's publish loop (``gather_ms``).
GATHER_MS = 2.0


# One history page, or one checked read of a reader that is behind: the entries after ARGV[1]
# ("-": from the start), at most ARGV[2] of them and ARGV[3] bytes of field values (the first
# one whatever its size). Answers {found, more, entries}: found is 1 when the entry ARGV[1] is
# still in the stream (so nothing after it was trimmed), more is 1 when entries were left out.
# Bounding the bytes here keeps what a reader holds bounded (XRANGE alone bounds the count);
# reading 16 entries at a time keeps Redis from copying far more than the page needs.
_PAGE_SCRIPT = """
local count = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local out, total, found = {}, 0, 0
local start, skip = ARGV[1], ARGV[1]
while true do
  local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 16)
  local first = 1
  if entries[1] ~= nil and skip ~= '-' and entries[1][1] == skip then
    first = 2
    if skip == ARGV[1] then found = 1 end
  end
  for i = first, #entries do
    local size = 0
    local fields = entries[i][2]
    for j = 2, #fields, 2 do size = size + #fields[j] end
    if #out >= count or (#out > 0 and total + size > budget) then
      return {found, 1, out}
    end
    total = total + size
    out[#out + 1] = entries[i]
  end
  if #entries < 16 then
    return {found, 0, out}
  end
  start = entries[#entries][1]
  skip = start
end
"""


# {first, last}: the id of the stream's oldest entry and its last-generated id ('' for none).
# Every new entry's id is above the last-generated one: when that is below the reader's
# position, the stream lost entries the reader had read or was about to read, and XREAD after
# the position would wait until new ids pass it. (XINFO, not the newest entry: deleting the
# newest entry leaves the last-generated id where it was.)
_ENDS_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'', ''} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local first, last = '', ''
for i = 1, #info, 2 do
  if info[i] == 'first-entry' and info[i + 1] then first = info[i + 1][1] end
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end
return {first, last}
"""


def _text(value: bytes | str | None) -> str:
    # Clients made with decode_responses=True answer str; ours answer bytes.
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


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
      ``publish_timeout``, ``backoff``: as for every :class:`Channel`. The window is at most
      half of ``maxlen``.

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
        if (url is None) == (client is None):
            raise TypeError(
                "RedisChannel needs exactly one of url= or client=: "
                "RedisChannel(name='pubsub', url='redis://127.0.0.1:6379/0')"
            )
        if url is not None:
            check_url(url)
        if client is not None and not isinstance(client, (aioredis.Redis, RedisCluster)):
            raise TypeError(
                f"client must be a redis.asyncio.Redis or RedisCluster, got "
                f"{type(client).__name__}; make one with redis.asyncio.Redis.from_url(url) "
                "(the sync redis.Redis and redis.RedisCluster cannot be used)"
            )
        for option, value in (
            ("maxlen", maxlen),
            ("block_ms", block_ms),
            ("read_count", read_count),
        ):
            whole_number(option, value)
        if isinstance(gather_ms, bool) or not isinstance(gather_ms, (int, float)):
            raise TypeError(f"gather_ms must be a number of milliseconds, got {gather_ms!r}")
        if not 0 <= gather_ms <= 1000:
            raise ValueError(f"gather_ms must be between 0 and 1000 ms, got {gather_ms!r}")
        if not probe_interval > block_ms / 1000:
            raise ValueError(
                f"probe_interval ({probe_interval}s) must be longer than block_ms ({block_ms}ms):"
                " Redis answers an idle blocked XREAD only after block_ms, so a shorter probe "
                "would call a healthy link dead. Lower block_ms or raise probe_interval."
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
        self._client = client  # the user's, or ours (made per event loop) when url is given
        # In a cluster: the master the reader reads from, when not the one the cluster client
        # names (it followed a MOVED, or looks elsewhere after a failure).
        self._master: tuple[str, int] | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._reader: aioredis.Redis | None = None
        self._reader_state = "stopped"
        self._last_answer: float | None = None
        self._lag_ms: int | None = None
        self._behind = False
        self._extra = dict.fromkeys(("bad_entries", "stream_resets"), 0)
        # The newest position the stream lost (went back below, or no longer holds): history
        # after an older id misses events. Per process: a process started later cannot know.
        self._lost_upto: str | None = None
        # (lost position, where reading went on): a listen() after the old position reads on
        # from the new one instead of reporting the same loss twice.
        self._rebased: tuple[str, str] | None = None
        self._stopping = False
        # This process's publishes: how many are on their way to Redis, how many came back,
        # the highest id they stored, and a future the next one to come back resolves.
        self._storing = 0
        self._landed = 0
        self._stored_upto = (0, 0)
        self._landing: asyncio.Future[None] | None = None
        # A publish just came back and the step it came back in has not ended: one started
        # now is a loop's next (``for ...: await publish(...)``); ``_looping`` says whether
        # the last one started was.
        self._just_landed = False
        self._looping = False

    # -- clients -----------------------------------------------------------------------------

    def _publisher(self) -> aioredis.Redis | RedisCluster:
        if self.url is None:
            assert self._client is not None
            return self._client
        loop = _running_loop()
        if self._client is None or self._client_loop is not loop:
            # Connections belong to the loop that opened them: a new loop gets a new client.
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.socket_timeout,
                # One immediate retry on a new connection when the pooled one turns out dead
                # (Redis restarted while it sat idle; older redis-py do not check before reuse).
                # Not on timeouts: a command that timed out may still run.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                retry_on_error=[RedisConnectionError],  # redis-py < 6 retries only these
                **_URL_CLIENT_OPTIONS,
            )
            self._client_loop = loop
        return self._client

    def _open_reader(self) -> aioredis.Redis:
        # Its own pool: the blocked XREAD holds a connection, and its timeouts differ from
        # the publisher's. No retries inside redis-py: the consumer loop retries with backoff
        # and resumes after the last id, and the probe must fail within probe_interval.
        overrides: dict[str, Any] = {
            "socket_timeout": self.probe_interval,
            "socket_connect_timeout": self.probe_interval,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        if self.url is not None:
            pool = aioredis.ConnectionPool.from_url(self.url, **_URL_CLIENT_OPTIONS, **overrides)
            return aioredis.Redis.from_pool(pool)
        client = self._client
        kind: type[aioredis.connection.AbstractConnection]
        if isinstance(client, RedisCluster):
            # The master serving the stream's slot as the cluster client last saw it, unless
            # the reader learnt better since (see _redirect); every node takes the same
            # settings (auth, TLS), only the address differs.
            node = client.get_node_from_key(self.key)
            if node is None:  # pragma: no cover - redis-py raises this itself
                raise SlotNotCoveredError(f"no cluster node serves the slot of {self.key!r}")
            host, port = self._master or (node.host, int(node.port))
            kind = node.connection_class
            settings = {**node.connection_kwargs, "host": host, "port": port}
        else:
            assert client is not None
            # With Sentinel, the connection class asks the Sentinels for the master on connect.
            kind = client.connection_pool.connection_class
            settings = client.connection_pool.connection_kwargs
        pool = aioredis.ConnectionPool(connection_class=kind, **{**settings, **overrides})
        return aioredis.Redis.from_pool(pool)

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
        loop = _running_loop()
        self._looping = self._just_landed
        self._storing += 1
        try:
            stream_id = _text(
                await publisher.xadd(
                    self.key,
                    {_NAME_FIELD: name.encode(), _DATA_FIELD: payload, _FORMAT_FIELD: _FORMAT},
                    maxlen=self.maxlen,
                    approximate=True,
                )
            )
            self._stored_upto = max(self._stored_upto, _id_key(stream_id))
        finally:
            self._storing = max(0, self._storing - 1)  # reset by on_new_loop meanwhile: 0
            self._landed += 1
            landing, self._landing = self._landing, None
            if landing is not None and not landing.done() and landing.get_loop() is loop:
                landing.set_result(None)
            if not self._just_landed:
                self._just_landed = True
                loop.call_soon(self._step_ended)
        return Event.from_json(name, payload, stream_id, self.name, data=data)

    def _step_ended(self) -> None:
        self._just_landed = False

    async def listen(self, after: str | None) -> AsyncIterator[list[Event]]:
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
        if after is not None and self._rebased is not None and after == self._rebased[0]:
            after = self._rebased[1]  # that loss was reported; the position moved on since
        self._reader_state = "connecting"
        reader: aioredis.Redis | None = None
        try:
            if isinstance(self._client, RedisCluster):
                await self._client.initialize()  # reads the slots once; a no-op after that
            reader = self._reader = self._open_reader()
            _, tail = await self._ends(reader)
            self._answered()
            self._check_stopping()
            checked = False
            if after is None:
                position = tail
            elif _id_key(tail) < _id_key(after):
                position = self._regressed(after, tail)
            else:
                position = after
                checked = True  # what was stored meanwhile may have been trimmed
            self.mark_ready()
            while True:
                if checked:
                    self._reader_state = "catching up"
                    found, more, entries = await self._page(
                        reader, position, self.read_count, self.window_bytes // 4
                    )
                    self._answered()
                    self._check_stopping()
                    checked = self._behind = more
                    if not found and position != _START:
                        first, tail = await self._ends(reader)
                        self._answered()
                        if _id_key(tail) < _id_key(position):
                            position = self._regressed(position, tail)
                            checked = False
                            continue
                        self._missing(position, first)
                else:
                    self._reader_state = "waiting"
                    reply = await reader.xread(
                        {self.key: position}, count=self.read_count, block=self.block_ms
                    )
                    self._answered()
                    self._check_stopping()
                    entries = _entries(reply) if reply else []
                    if entries and self._storing and self.gather_ms:
                        await self._gather(reader, entries)
                    checked = self._behind = len(entries) >= self.read_count
                    if not entries:
                        # block_ms without an entry: make sure the stream did not go back
                        # below us while this connection lived (XREAD would wait for ids
                        # above the position, which may take long to come).
                        _, tail = await self._ends(reader)
                        self._answered()
                        self._check_stopping()
                        if _id_key(tail) < _id_key(position):
                            position = self._regressed(position, tail)
                if not entries:
                    continue
                self._reader_state = "delivering"
                position = _text(entries[-1][0])
                self._lag_ms = max(0, int(time.time() * 1000) - _id_key(position)[0])
                events = self._events(entries)
                if events:
                    yield events
        except (MovedError, RedisConnectionError, RedisTimeoutError) as exc:
            if isinstance(self._client, RedisCluster):
                self._redirect(self._client, reader, exc)
            raise
        finally:
            self._reader_state = "down"
            self._reader = None
            if reader is not None:
                await _close_quietly(reader)

    async def _gather(self, reader: aioredis.Redis, entries: list[Any]) -> None:
        """Add to ``entries`` the entries this process's publishes on their way store next.

        A loop that awaits each ``publish`` shares its event loop with this process's fan-out:
        each ``XADD`` answer is read only once the fan-out in progress is done, so the loop
        publishes one event per fan-out and every fan-out carries one event, its most
        expensive way (one wake-up of every connection per event, here and in the clients).
        Holding the batch while the loop's next publish is on its way, and reading what it
        stored, lets the loop run ahead and one fan-out carry many events. At most
        ``gather_ms`` and ``read_count`` entries. A publish counts as a loop's next when it
        starts in the step in which the previous one came back (``_just_landed``); any other
        publish on its way is waited for only when the batch's last entry has come back
        already (so it is a newer entry): a publish now and then is never held behind its
        own answer.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gather_ms / 1000
        seen = self._landed
        while len(entries) < self.read_count:
            last = _text(entries[-1][0])
            if self._landed == seen:
                remaining = deadline - loop.time()
                if not self._storing or remaining <= 0:
                    return
                if not self._looping and self._stored_upto < _id_key(last):
                    # What is on its way may be what the batch ends with, and no loop follows
                    # it (a publish now and then): waiting for it would only delay the batch.
                    return
                landing = self._landing
                if landing is None or landing.done():
                    landing = self._landing = loop.create_future()
                await asyncio.wait((landing,), timeout=remaining)  # never cancels `landing`
                continue
            seen = self._landed
            if self._stored_upto <= _id_key(last):
                continue  # what came back is in the batch already
            if loop.time() >= deadline:
                return
            reply = await reader.xread({self.key: last}, count=self.read_count - len(entries))
            self._answered()
            self._check_stopping()
            if reply:
                entries.extend(_entries(reply))

    def _redirect(
        self, client: RedisCluster, reader: aioredis.Redis | None, exc: Exception
    ) -> None:
        """Where a cluster reader connects next, after ``exc``.

        MOVED names the master that serves the slot now: there. A master that cannot be
        reached (down, or failed over) is left for another known node, which answers with
        MOVED to the slot's master. The reader finds its way alone: commands through a
        shared cluster client that fail make it re-read the topology, and while it cannot
        (redis-py asks one master, which may be the one down), its other commands fail too.
        """
        if isinstance(exc, MovedError):
            self._master = (exc.host, int(exc.port))
            return
        failed = None
        if reader is not None:
            settings = reader.connection_pool.connection_kwargs
            failed = (str(settings["host"]), int(settings["port"]))
        others = sorted({(str(n.host), int(n.port)) for n in client.get_nodes()} - {failed})
        if others:
            # The next one after the failed address, so that attempts go round the nodes.
            later = [address for address in others if failed is None or address > failed]
            self._master = (later or others)[0]

    async def _ends(self, client: aioredis.Redis) -> tuple[str, str]:
        """The stream's oldest entry id and its last-generated id (:data:`_START` for none)."""
        first, last = await self._script(client, _ENDS_SCRIPT)
        return _text(first) or _START, _text(last) or _START

    async def _script(self, client: aioredis.Redis | RedisCluster, script: str, *args: Any) -> Any:
        """Run ``script`` on the channel's key (its one KEYS entry), with ``args`` as ARGV.

        EVAL, not EVALSHA: a server without the script cached (restarted, promoted, a cluster
        master that never ran it) then needs no SCRIPT LOAD, which a cluster client sends to
        every master, and which fails while one of them is down.
        """
        return await client.execute_command("EVAL", script, 1, self.key, *args)

    def _regressed(self, position: str, tail: str) -> str:
        """The stream went back below ``position``: report the gap; where to read on."""
        self._extra["stream_resets"] += 1
        self._lost(position)
        self._rebased = (position, tail)
        self._stored_upto = (0, 0)  # ids the stream lost: none of them comes back
        self.report_gap(
            f"the stream {self.key!r} is behind the last id delivered ({position}; it now ends "
            f"at {tail}): Redis lost entries (a failover to a replica that lacked them, a "
            "restart without persistence, or the key was deleted)"
        )
        return tail

    def _missing(self, position: str, first: str) -> None:
        """The stream no longer holds ``position`` (but does not end below it): report it."""
        if _id_key(first) < _id_key(position):
            # Older entries are still there: not trimmed, lost (a failover to a replica that
            # lacked it, newer entries written since; or deleted with XDEL).
            self._extra["stream_resets"] += 1
            reason = "lost (a failover to a replica that lacked it, or deleted)"
        else:
            reason = "trimmed by maxlen (or lost with the entries before it)"
        self._lost(position)
        self.report_gap(f"the stream no longer holds {position}: {reason}")

    def _lost(self, position: str) -> None:
        if self._lost_upto is None or _id_key(position) > _id_key(self._lost_upto):
            self._lost_upto = position

    def _complete(self, since: str | None, found: bool) -> bool:
        """Whether history after ``since`` misses nothing: the stream holds ``since``, and no
        entry after it was lost in a gap this process saw."""
        if since is None:
            return True
        lost = self._lost_upto
        return found and (lost is None or _id_key(since) >= _id_key(lost))

    async def _page(
        self, client: aioredis.Redis | RedisCluster, since: str, count: int, max_bytes: int
    ) -> tuple[bool, bool, list[Any]]:
        """(found, more, entries) of :data:`_PAGE_SCRIPT` after ``since``."""
        found, more, raw = await self._script(client, _PAGE_SCRIPT, since, count, max_bytes)
        entries = [(entry_id, _fields(fields)) for entry_id, fields in raw]
        return bool(found), bool(more), entries

    def _check_id(self, since: str) -> None:
        if _STREAM_ID.fullmatch(since) is None:
            raise ValueError(
                f"{since!r} is not an event id of channel {self.name!r}: Redis stream ids look "
                "like '1700000000000-0'"
            )

    async def read_history(self, since: str | None) -> History:
        """``XRANGE`` from ``since``; complete when the stream still holds ``since`` itself.

        Raises ValueError for an id that is not a stream id.
        """
        if since is not None:
            self._check_id(since)
        entries = await self._publisher().xrange(self.key, since or "-", "+")
        events = self._events(entries or ())
        if since is None:
            return History(events, complete=True)
        if entries and _text(entries[0][0]) == since:
            events = events[1:] if events and events[0].id == since else events
            return History(events, self._complete(since, True))
        # The stream lost ``since``: trimmed, deleted, or recreated after a restart.
        return History(events, complete=False)

    async def history_page(self, since: str | None, *, limit: int, max_bytes: int) -> History:
        """One page of history, bounded in entries and bytes inside Redis (a Lua script).

        A page whose entries are all foreign (skipped) is read past: a page that says ``more``
        holds an event, or a reader paging on from its last event would read it forever.
        """
        if since is not None:
            self._check_id(since)
        client = self._publisher()
        found, more, entries = await self._page(client, since or "-", limit, max_bytes)
        events = self._events(entries)
        while more and not events and entries:
            _, more, entries = await self._page(client, _text(entries[-1][0]), limit, max_bytes)
            events = self._events(entries)
        return History(events, complete=self._complete(since, found), more=more)

    def order_key(self, id: str) -> Any:
        """Stream ids order as (milliseconds, sequence)."""
        return _id_key(id)

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

    # -- decoding ----------------------------------------------------------------------------

    def _events(self, entries: Iterable[Any]) -> list[Event]:
        """The events of stream entries ``(id, fields)``, foreign entries left out."""
        return [e for e in (self._decode(i, f) for i, f in entries) if e is not None]

    def _decode(self, entry_id: bytes | str | None, fields: Any) -> Event | None:
        stream_id = _text(entry_id)
        try:
            if not stream_id or not isinstance(fields, dict):
                raise TypeError("entry without fields")
            name = _text(fields.get(_NAME_FIELD) or fields[_NAME_FIELD.decode()])
            payload = _raw(fields.get(_DATA_FIELD) or fields[_DATA_FIELD.decode()])
            # The frame splices the stored JSON in; data is decoded only if someone reads it.
            event = Event.from_json(name, payload, stream_id, self.name)
            if _text(fields.get(_FORMAT_FIELD) or fields.get(_FORMAT_FIELD.decode())) != _FORMAT:
                event.data  # noqa: B018 - not written by store(): check that it is JSON
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            # Written by something else: skip it (raising would stop the reader on it forever).
            self._extra["bad_entries"] += 1
            logger.error(
                "channel %r: skipped stream entry %s of %r, not a tbone event (%s: %s)",
                self.name,
                stream_id,
                self.key,
                type(exc).__name__,
                exc,
            )
            return None
        return event

    # -- running -----------------------------------------------------------------------------

    def _answered(self) -> None:
        self._last_answer = time.monotonic()

    def _check_stopping(self) -> None:
        # Python < 3.12's asyncio.wait_for, which redis-py uses to bound socket writes, can
        # swallow a cancellation that lands as the write completes (CPython gh-86296). The
        # reader then checks this flag at each answer, so close() ends it within block_ms.
        if self._stopping:
            raise asyncio.CancelledError()

    async def close(self, *, forget: bool = False, timeout: float | None = None) -> None:
        """Stop the reader, close the subscribers (see :meth:`Channel.close`) and the clients."""
        self._stopping = True
        try:
            await super().close(forget=forget, timeout=timeout)
        finally:
            self._stopping = False

    def on_new_loop(self) -> None:
        # Clients of a previous loop cannot be awaited from this one: drop them.
        self._reader = None
        self._reader_state = "stopped"
        self._storing = 0  # publishes of that loop never come back
        self._landing = None
        self._just_landed = self._looping = False
        if self.url is not None:
            self._client = None
            self._client_loop = None

    async def close_backend(self) -> None:
        """Close the reader connection and, when made from ``url``, the publishing client."""
        reader, self._reader = self._reader, None
        if reader is not None:
            await _close_quietly(reader)
        self._reader_state = "stopped"
        if self.url is not None and self._client is not None:
            client, self._client = self._client, None
            if self._client_loop is _running_loop():
                await _close_quietly(client)
            self._client_loop = None

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
        last = self._last_answer
        stats.update(
            stream=self.key,
            reader=self._reader_state,
            last_answer_s=None if last is None else round(time.monotonic() - last, 3),
            lag_ms=self._lag_ms,
            behind=self._behind,
            maxlen=self.maxlen,
            block_ms=self.block_ms,
            gather_ms=self.gather_ms,
            probe_interval=self.probe_interval,
            **self._extra,
        )
        return stats


#: The form of a Redis URL, said in every error about one.
URL_RULE = (
    "redis://[[user]:password@]host[:port][/db] (db: a number, 0 when omitted), rediss:// "
    "for TLS, or unix:///path/to/redis.sock[?db=0]"
)


def check_url(url: str) -> None:
    """Raise ValueError, in one line that gives the rule, for a URL that cannot name a server.

    Stricter than redis-py, which reads ``redis://host/abc`` as database 0 and fails on a
    misspelt scheme or option only when it connects: the scheme, the host, the port, the
    database number (the path) and the options (redis-py's own parser and connection) are
    checked here, so a typo fails when the channel is made, not in the consumer's retries.
    A password in the URL is never shown.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}: {URL_RULE}")
    parts = urlsplit(url)
    shown = _redacted(url)
    problem = None
    if parts.scheme not in ("redis", "rediss", "unix"):
        problem = f"the scheme must be redis, rediss or unix, not {parts.scheme or 'none'!r}"
    elif parts.scheme == "unix":
        if not parts.path:
            problem = "it names no socket path"
    elif not url.lower().startswith(f"{parts.scheme}://") or not parts.hostname:
        problem = "it names no host (two slashes after the scheme, then the host)"
    else:
        try:
            port = parts.port  # raises ValueError when not a number in 0-65535
        except ValueError:
            port = 0
        if port == 0:
            problem = "the port must be a number from 1 to 65535"
        db = parts.path[1:]
        if problem is None and db and not db.isdigit():
            problem = f"the path must be the database number, not {parts.path!r}"
    if problem is None:
        try:
            # redis-py's own parser and the connection it would make (not connected): the
            # query's options and their values.
            pool = aioredis.ConnectionPool.from_url(url, **_URL_CLIENT_OPTIONS)
            pool.make_connection()  # type: ignore[no-untyped-call]
        except (TypeError, ValueError) as exc:
            problem = str(exc).replace("AbstractConnection.__init__() got", "redis-py got")
            problem = problem.rstrip(".")
    if problem is not None:
        raise ValueError(f"RedisChannel url {shown!r}: {problem}; use {URL_RULE}")


def _redacted(url: str) -> str:
    # The URL as it may be shown: its password replaced.
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _entries(reply: Any) -> list[Any]:
    # RESP2 answers [[key, entries]]; RESP3 (protocol=3) answers {key: entries}.
    pairs: Iterable[Any] = reply.items() if isinstance(reply, dict) else reply
    entries: list[Any] = []
    for _key, items in pairs:
        entries.extend(items)
    return entries


def _fields(raw: Any) -> Any:
    # A script answers an entry's fields as a flat list [name, value, ...]; XRANGE as a dict.
    if isinstance(raw, list):
        return dict(zip(raw[::2], raw[1::2], strict=True))
    return raw


def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def _close_quietly(client: aioredis.Redis | RedisCluster) -> None:
    try:
        await client.aclose()
    except Exception as exc:  # a dead link may fail to close; it is being dropped anyway
        logger.debug("closing a redis client failed: %s", exc)
