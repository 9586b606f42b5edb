"""Waiting on a subscription without sleeping: every wait is bounded by a timeout."""

from __future__ import annotations

import asyncio

from tbone.dispatch.events import Event
from tbone_asgi.client import Subscription

__all__ = ["ready", "take"]


async def take(sub: Subscription, count: int, timeout: float = 10.0) -> list[Event]:
    """The next ``count`` events of ``sub``, failing after ``timeout`` seconds."""

    async def collect() -> list[Event]:
        got: list[Event] = []
        async for event in sub:
            got.append(event)
            if len(got) == count:
                break
        return got

    return await asyncio.wait_for(collect(), timeout)


async def ready(sub: Subscription, timeout: float = 10.0) -> None:
    """Wait until ``sub`` is connected and subscribed.

    The server answers a ping only after the connect-time subscriptions are on (its answers
    keep their place in order), so once the pong is back an event published is received.
    """
    await sub.wait_connected(timeout)
    await sub.ping(timeout)
