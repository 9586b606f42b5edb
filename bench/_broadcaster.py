"""What the benchmark's broadcaster server reads of broadcaster that broadcaster does not publish.

broadcaster 0.3.1 with redis-py 8: its listener wakes on the first subscribe before the
SUBSCRIBE reply, redis-py's ``listen()`` returns at once (nothing subscribed yet) and the
listener then waits forever. :func:`restart_listener`, called once a subscription is confirmed,
restarts it; that reaches into ``Broadcast._backend`` and the Redis backend's ``_listener``,
``_ready`` and ``_pubsub_listener``. Tested on the broadcaster releases in :data:`TESTED`;
``tests/test_bench_broadcaster.py`` fails when the installed one moves them.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

__all__ = ["SURFACE", "TESTED", "restart_listener", "surface_problem"]

#: The broadcaster releases this module was tested on.
TESTED = ("0.3.1",)
#: What it reads.
SURFACE = ("Broadcast._backend", "RedisBackend._listener", "._ready", "._pubsub_listener()")


def surface_problem(broadcast: Any) -> str | None:
    """What :func:`restart_listener` needs of a Redis ``broadcast`` and it lacks, or None."""
    backend = getattr(broadcast, "_backend", None)
    if backend is None:
        return "Broadcast has no _backend"
    missing = [n for n in ("_listener", "_ready", "_pubsub_listener") if not hasattr(backend, n)]
    if missing:
        return f"its backend has no {', '.join(missing)}"
    if not isinstance(backend._ready, asyncio.Event):
        return "its backend's _ready is not an asyncio.Event"
    listener = backend._pubsub_listener
    if not inspect.iscoroutinefunction(listener) or inspect.signature(listener).parameters:
        return "its backend's _pubsub_listener is not a coroutine function of no argument"
    return None


def restart_listener(broadcast: Any) -> None:
    """Restart the Redis backend's listener of ``broadcast`` (a subscription is confirmed)."""
    backend = broadcast._backend
    backend._listener.cancel()
    backend._ready.set()
    backend._listener = asyncio.create_task(backend._pubsub_listener())
