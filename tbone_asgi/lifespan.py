"""channels_lifespan: start channels with the app and close them when it stops.

Starlette 1.x (and FastAPI) take a ``lifespan`` instead of startup/shutdown hooks::

    app = Starlette(routes=[channel_route("/ws", "pubsub")], lifespan=channels_lifespan("pubsub"))

At startup every channel named is created (a name: the registered channel, else a
MemoryChannel) and its consumer started, so a backend that is down shows in ``stats()`` from
the first moment; at shutdown they are closed (subscribers get 1001, tasks are awaited, each
close within the channel's ``close_timeout``). With no channel named, shutdown closes every
channel of the process. An existing lifespan is kept: ``channels_lifespan("pubsub",
lifespan=my_lifespan)`` runs ``my_lifespan`` inside, and its state is the app's state.

With ``ready_timeout`` the startup also waits until every channel reads its backend, at most
that long, and fails otherwise (:class:`~tbone.dispatch.errors.ChannelUnavailable`: at once
for an error retrying cannot fix, such as a bad password), so the server exits instead of
serving without its backend. While that startup waits (the channels, then the wrapped
lifespan's start), SIGINT and SIGTERM end it at once
(:class:`~tbone.dispatch.errors.StartupStopped`; see :mod:`tbone_asgi.stopping`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from tbone.dispatch.channels import Channel, close_all_channels
from tbone.dispatch.errors import StartupStopped
from tbone.dispatch.serving import resolve_channel
from tbone_asgi.stopping import StopSignals

__all__ = ["channels_lifespan"]

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def channels_lifespan(
    *channels: Channel | str,
    lifespan: Lifespan | None = None,
    ready_timeout: float | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """A Starlette/FastAPI ``lifespan`` that starts ``channels`` and closes them at shutdown.

    Channels given by name are resolved at startup, after anything that runs before the
    server starts (so a RedisChannel created at import is the one started). The wrapped
    ``lifespan`` starts after the channels and ends before they close.

    ``ready_timeout`` (seconds; None, the default: do not wait): wait at startup until every
    channel reads its backend (:meth:`Channel.ready`, all at once, so at most this long),
    before the wrapped lifespan starts; raise
    :class:`~tbone.dispatch.errors.ChannelUnavailable` when one does not (after closing the
    channels), so the server reports a failed startup and exits (uvicorn: status 3). With it,
    SIGINT or SIGTERM during the startup (the channels' wait, then the wrapped lifespan's
    start) ends it at once with :class:`~tbone.dispatch.errors.StartupStopped`.
    """
    if ready_timeout is not None and not ready_timeout > 0:
        raise ValueError(f"ready_timeout must be seconds > 0 or None, got {ready_timeout!r}")

    @contextlib.asynccontextmanager
    async def channel_lifespan(app: Any) -> AsyncIterator[Any]:
        started = [resolve_channel(channel) for channel in channels]
        for channel in started:
            channel.kickoff()
        try:
            async with contextlib.AsyncExitStack() as stack:
                if ready_timeout is not None:
                    state = await _start(app, started, lifespan, stack, ready_timeout)
                elif lifespan is not None:
                    state = await stack.enter_async_context(lifespan(app))
                else:
                    state = None
                yield state
        finally:
            if channels:
                for channel in started:
                    await channel.close()
            else:
                await close_all_channels()

    return channel_lifespan


async def _start(
    app: Any,
    channels: Sequence[Channel],
    lifespan: Lifespan | None,
    stack: contextlib.AsyncExitStack,
    timeout: float,
) -> Any:
    """Wait for ``channels`` (at once, ``timeout`` each), then enter ``lifespan``; a stop
    signal ends either wait."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    begun = loop.time()
    with StopSignals(task) as stop:
        try:
            await _all_ready(channels, timeout)
            return None if lifespan is None else await stack.enter_async_context(lifespan(app))
        except asyncio.CancelledError:
            if stop.received is None:
                raise  # not ours
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()
            what = "the app's lifespan to start"
            for channel in channels:
                stats = channel.stats()
                if stats["consumer"] != "running":
                    what = (
                        f"channel {channel.name!r} ({channel.backend}) to reach its backend "
                        f"(last error: {stats['last_error'] or 'none yet'})"
                    )
                    break
            raise StartupStopped(stop.received, loop.time() - begun, what) from None


async def _all_ready(channels: Sequence[Channel], timeout: float) -> None:
    """Every channel's ``ready(timeout)`` at the same time; the first failure is raised."""
    waits = [asyncio.ensure_future(channel.ready(timeout=timeout)) for channel in channels]
    if not waits:
        return
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for waiting in waits:
            waiting.cancel()
        await asyncio.wait(waits)
    for waiting in waits:
        if not waiting.cancelled() and waiting.exception() is not None:
            waiting.result()  # raises it
