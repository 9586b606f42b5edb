"""channels_lifespan: start channels with the app and close them when it stops.

Starlette 1.x (and FastAPI) take a ``lifespan`` instead of startup/shutdown hooks::

    app = Starlette(routes=[channel_route("/ws", "pubsub")], lifespan=channels_lifespan("pubsub"))

At startup every channel named is created (a name: the registered channel, else a
MemoryChannel) and its consumer started, so a backend that is down shows in ``stats()`` from
the first moment; at shutdown they are closed (subscribers get 1001, tasks are awaited). With
no channel named, shutdown closes every channel of the process. An existing lifespan is kept:
``channels_lifespan("pubsub", lifespan=my_lifespan)`` runs ``my_lifespan`` inside, and its
state is the app's state.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from tbone.dispatch.channels import Channel, close_all_channels
from tbone.dispatch.serving import resolve_channel

__all__ = ["channels_lifespan"]

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def channels_lifespan(
    *channels: Channel | str, lifespan: Lifespan | None = None
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """A Starlette/FastAPI ``lifespan`` that starts ``channels`` and closes them at shutdown.

    Channels given by name are resolved at startup, after anything that runs before the
    server starts (so a RedisChannel created at import is the one started). The wrapped
    ``lifespan`` starts after the channels and ends before they close.
    """

    @contextlib.asynccontextmanager
    async def channel_lifespan(app: Any) -> AsyncIterator[Any]:
        started = [resolve_channel(channel) for channel in channels]
        for channel in started:
            channel.kickoff()
        try:
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            if channels:
                for channel in started:
                    await channel.close()
            else:
                await close_all_channels()

    return channel_lifespan
