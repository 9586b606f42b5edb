"""Choose the demo's channel from ``TBONE_CHANNEL_URL``.

* unset, empty or ``memory://``: a :class:`~tbone.dispatch.MemoryChannel` (one process, no
  other service needed);
* ``redis://host:port/db`` (or ``rediss://``): a ``RedisChannel`` (Redis Streams), so several
  workers or hosts share events: ``uvicorn demo:app --workers 2``;
* ``redis+sentinel://[user:password@]host:26379,host:26379/service[/db]``: the same on the
  master that Redis Sentinel names for ``service``, followed through failovers (the user and
  password are the master's; the Sentinels are reached without);
* ``redis+cluster://[user:password@]host:7000,host:7001``: the same on a Redis Cluster (the
  hosts are where to discover it; the channel's stream lives on the master of its slot);
* ``mongodb://host/db`` (or ``mongodb+srv://``): a ``MongoChannel`` (capped collection).

The Redis and MongoDB backends are imported only when asked for, so the default needs neither
library.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

from tbone.dispatch import Channel, MemoryChannel

__all__ = ["CHANNEL_NAME", "channel_from_env", "make_channel"]

#: The name of the demo's channel (the Redis stream / Mongo collection is named after it).
CHANNEL_NAME = "demo"


def make_channel(url: str | None, name: str = CHANNEL_NAME) -> Channel:
    """The channel for ``url`` (see the module docstring).

    Raises ``ValueError`` for a scheme the demo does not know or a URL its backend refuses
    (one line with the rule), and ``ImportError`` naming the extra to install when the
    backend's library is missing.
    """
    if not url or url == "memory://":
        return MemoryChannel(name=name)
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        from tbone.dispatch.channels.redis import RedisChannel

        try:
            return RedisChannel(name=name, url=url)
        except ValueError as exc:  # the URL's rule, in one line
            raise ValueError(f"TBONE_CHANNEL_URL: {exc}") from None
    if scheme in ("redis+sentinel", "redis+cluster"):
        from tbone.dispatch.channels.redis import RedisChannel

        return RedisChannel(name=name, client=_redis_client(url))
    if scheme in ("mongodb", "mongodb+srv"):
        # First: without pymongo it raises an ImportError that names the extra to install.
        from tbone.dispatch.channels.mongo import MongoChannel

        # isort: split
        from pymongo import AsyncMongoClient
        from pymongo.errors import ConfigurationError

        # The client connects on first use; the database is the URL's path ("tbone" if none).
        # A server that cannot be reached fails an operation after serverSelectionTimeoutMS:
        # 5 s unless the URL says otherwise (the driver's 30 s would outlast the startup wait,
        # which could then not say why the backend did not answer).
        options = {} if "serverselectiontimeoutms" in url.lower() else _MONGO_OPTIONS
        try:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, **options)
        except (ConfigurationError, ValueError) as exc:
            raise ValueError(
                f"TBONE_CHANNEL_URL is not a MongoDB URI the driver takes ({exc}); use "
                "mongodb://[user:password@]host[:port][/db][?options]"
            ) from None
        db = client.get_default_database(default="tbone")
        return MongoChannel(name=name, db=db)
    raise ValueError(
        f"TBONE_CHANNEL_URL={url!r}: unknown scheme {scheme!r}; use memory:// (the default), "
        "redis://host:6379/0, redis+sentinel://host:26379,host:26379/mymaster/0, "
        "redis+cluster://host:7000,host:7001 or mongodb://host:27017/tbone"
    )


_MONGO_OPTIONS = {"serverSelectionTimeoutMS": 5000}


def _redis_client(url: str) -> Any:
    """The redis-py client of a ``redis+sentinel://`` or ``redis+cluster://`` URL."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    user, _, password = credentials.partition(":")
    auth = {"username": unquote(user) or None, "password": unquote(password) or None}
    path = [segment for segment in parts.path.split("/") if segment]
    if parts.scheme == "redis+cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        if path:
            raise ValueError(f"TBONE_CHANNEL_URL={url!r}: a cluster URL has no path (no db)")
        nodes = [ClusterNode(host, port) for host, port in _addresses(url, hosts, 6379)]
        return RedisCluster(startup_nodes=nodes, **auth)
    from redis.asyncio.sentinel import Sentinel

    service, *db = path or [""]
    if not service or len(db) > 1 or not all(n.isdigit() for n in db):
        raise ValueError(
            f"TBONE_CHANNEL_URL={url!r}: name the service Sentinel watches, and the db if not "
            "0: redis+sentinel://host:26379,host:26379/mymaster/0"
        )
    sentinel = Sentinel(_addresses(url, hosts, 26379))
    return sentinel.master_for(service, db=int(db[0]) if db else 0, **auth)


def _addresses(url: str, hosts: str, default_port: int) -> list[tuple[str, int]]:
    """``host:port,host:port`` (``[::1]:port`` for IPv6) as pairs."""
    addresses = []
    for item in hosts.split(","):
        host, colon, port = item.rpartition(":")
        if not colon or host.endswith(":"):  # no port, or a bare IPv6 address
            host, port = item, ""
        host = host.strip("[]")
        if not host or not (port or str(default_port)).isdigit():
            raise ValueError(f"TBONE_CHANNEL_URL={url!r}: {item!r} is not host:port")
        addresses.append((host, int(port or default_port)))
    return addresses


def channel_from_env() -> Channel:
    """The channel named by ``TBONE_CHANNEL_URL`` (a MemoryChannel when it is unset)."""
    return make_channel(os.environ.get("TBONE_CHANNEL_URL", "").strip() or None)
