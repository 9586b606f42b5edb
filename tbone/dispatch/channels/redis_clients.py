"""RedisChannel's URL and clients: the URL checked when the channel is made, the publishing
client (the user's, or one made from the URL per event loop) and the reader's own connection.

The reader connects with the publishing client's settings but its own pool and timeouts (a
blocked ``XREAD`` must not hold one of the user's connections): to the master Sentinel names,
or, in a cluster, to the master that serves the stream's slot (:meth:`Clients.redirect`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from tbone.dispatch.checks import whole_number
from tbone.dispatch.extras import requires

with requires(__name__, "redis-py >= 5.0.1", extra="redis"):
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import MovedError, SlotNotCoveredError

__all__ = [
    "URL_CLIENT_OPTIONS",
    "URL_RULE",
    "Clients",
    "check_options",
    "check_url",
    "close_quietly",
]

logger = logging.getLogger("tbone.dispatch.channels.redis")

# RESP2: every Redis >= 5 speaks it (RESP3 needs 6.0), and with it redis-py 8 checks a pooled
# connection before reuse, so the first publish after a Redis restart does not fail on a
# connection the server closed (with RESP3 it skips that check).
URL_CLIENT_OPTIONS: dict[str, Any] = {"protocol": 2}


def check_options(
    *,
    url: str | None,
    client: object,
    maxlen: object,
    block_ms: int,
    read_count: object,
    gather_ms: object,
    probe_interval: float,
) -> None:
    """Raise (TypeError for a wrong type, ValueError for a wrong value) for RedisChannel's
    own options, each error naming the option and the rule."""
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
    whole_number("maxlen", maxlen)
    whole_number("block_ms", block_ms)
    whole_number("read_count", read_count)
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


class Clients:
    """The clients of the channel whose stream is ``key``: give ``url`` or ``client``."""

    def __init__(
        self,
        key: str,
        *,
        url: str | None,
        client: aioredis.Redis | RedisCluster | None,
        socket_timeout: float,
        probe_interval: float,
    ) -> None:
        self.key = key
        self.url = url
        self.socket_timeout = socket_timeout
        self.probe_interval = probe_interval
        #: The user's client, or ours (made per event loop) when ``url`` is given.
        self.client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        # In a cluster: the master the reader reads from, when not the one the cluster client
        # names (it followed a MOVED, or looks elsewhere after a failure).
        self._master: tuple[str, int] | None = None

    def publisher(self) -> aioredis.Redis | RedisCluster:
        """The client for commands other than the reader's: publishes and history reads."""
        if self.url is None:
            assert self.client is not None
            return self.client
        loop = asyncio.get_running_loop()
        if self.client is None or self._loop is not loop:
            # Connections belong to the loop that opened them: a new loop gets a new client.
            self.client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.socket_timeout,
                # One immediate retry on a new connection when the pooled one turns out dead
                # (Redis restarted while it sat idle; older redis-py do not check before reuse).
                # Not on timeouts: a command that timed out may still run.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                retry_on_error=[RedisConnectionError],  # redis-py < 6 retries only these
                **URL_CLIENT_OPTIONS,
            )
            self._loop = loop
        return self.client

    async def prepare(self) -> None:
        """Before a reader connects: a cluster client reads the slots (once; then a no-op)."""
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()

    def open_reader(self) -> aioredis.Redis:
        """A new connection for the reader, which the caller closes."""
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
            pool = aioredis.ConnectionPool.from_url(self.url, **URL_CLIENT_OPTIONS, **overrides)
            return aioredis.Redis.from_pool(pool)
        client = self.client
        kind: type[aioredis.connection.AbstractConnection]
        if isinstance(client, RedisCluster):
            # The master serving the stream's slot as the cluster client last saw it, unless
            # the reader learnt better since (see redirect); every node takes the same
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

    def redirect(self, reader: aioredis.Redis | None, exc: Exception) -> None:
        """Where a cluster reader connects next, after ``exc`` (nothing to do elsewhere).

        MOVED names the master that serves the slot now: there. A master that cannot be
        reached (down, or failed over) is left for another known node, which answers with
        MOVED to the slot's master. The reader finds its way alone: commands through a
        shared cluster client that fail make it re-read the topology, and while it cannot
        (redis-py asks one master, which may be the one down), its other commands fail too.
        """
        client = self.client
        if not isinstance(client, RedisCluster):
            return
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

    def on_new_loop(self) -> None:
        """Drop a client made from the URL on a previous event loop."""
        if self.url is not None:
            self.client = None
            self._loop = None

    async def close(self) -> None:
        """Close the publishing client when made from the URL (the user closes theirs)."""
        if self.url is not None and self.client is not None:
            client, self.client = self.client, None
            if self._loop is asyncio.get_running_loop():
                await close_quietly(client)
            self._loop = None


async def close_quietly(client: aioredis.Redis | RedisCluster) -> None:
    """Close ``client``, logging (at DEBUG) what closing a dead link raises."""
    try:
        await client.aclose()
    except Exception as exc:  # a dead link may fail to close; it is being dropped anyway
        logger.debug("closing a redis client failed: %s", exc)


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
            pool = aioredis.ConnectionPool.from_url(url, **URL_CLIENT_OPTIONS)
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
