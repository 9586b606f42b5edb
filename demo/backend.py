"""Choose the demo's channel from ``TBONE_CHANNEL_URL``.

* unset, empty or ``memory://``: a :class:`~tbone.dispatch.MemoryChannel` (one process, no
  other service needed);
* ``redis://host:port/db`` (or ``rediss://``): a ``RedisChannel`` (Redis Streams), so several
  workers or hosts share events: ``uvicorn demo:app --workers 2``;
* ``mongodb://host/db`` (or ``mongodb+srv://``): a ``MongoChannel`` (capped collection).

The Redis and MongoDB backends are imported only when asked for, so the default needs neither
library.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from tbone.dispatch import Channel, MemoryChannel

__all__ = ["CHANNEL_NAME", "channel_from_env", "make_channel"]

#: The name of the demo's channel (the Redis stream / Mongo collection is named after it).
CHANNEL_NAME = "demo"


def make_channel(url: str | None, name: str = CHANNEL_NAME) -> Channel:
    """The channel for ``url`` (see the module docstring).

    Raises ``ValueError`` for a scheme the demo does not know, and ``ImportError`` naming the
    extra to install when the backend's library is missing.
    """
    if not url or url == "memory://":
        return MemoryChannel(name=name)
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        from tbone.dispatch.channels.redis import RedisChannel

        return RedisChannel(name=name, url=url)
    if scheme in ("mongodb", "mongodb+srv"):
        # First: without pymongo it raises an ImportError that names the extra to install.
        from tbone.dispatch.channels.mongo import MongoChannel

        # isort: split
        from pymongo import AsyncMongoClient

        # The client connects on first use; the database is the URL's path ("tbone" if none).
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
        db = client.get_default_database(default="tbone")
        return MongoChannel(name=name, db=db)
    raise ValueError(
        f"TBONE_CHANNEL_URL={url!r}: unknown scheme {scheme!r}; use memory:// (the default), "
        "redis://host:6379/0 or mongodb://host:27017/tbone"
    )


def channel_from_env() -> Channel:
    """The channel named by ``TBONE_CHANNEL_URL`` (a MemoryChannel when it is unset)."""
    return make_channel(os.environ.get("TBONE_CHANNEL_URL", "").strip() or None)
