"""The slow rule's check of one connection that is behind (``docs/channels.md#flow-control``).

A :class:`SlowWatch` starts when a connection falls behind (a channel lags on it, or a replay
waits for room). It looks at the connection every quarter of its ``slow_timeout``: progress is
a completed send; one that made none for ``slow_timeout`` is closed with 1013. It ends by
itself once the connection caught up, and the next fall behind starts another.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

__all__ = ["SlowWatch", "Watched"]

logger = logging.getLogger("tbone.dispatch.carriers")


class Watched(Protocol):
    """What the watch reads of a carrier."""

    slow_timeout: float
    _sends: int  # completed sends: the progress the rule looks for

    @property
    def closed(self) -> bool: ...

    def _still_behind(self) -> bool: ...

    def _watch_ended(self) -> None: ...

    def close_soon(self, reason: str, *, slow: bool = True) -> None: ...


class SlowWatch:
    """The check of ``carrier``: the sends it had, since when, and the timer of the next look."""

    __slots__ = ("carrier", "handle", "sends", "since")

    def __init__(self, carrier: Watched) -> None:
        loop = asyncio.get_running_loop()
        self.carrier = carrier
        self.sends = carrier._sends
        self.since = loop.time()
        self.handle: asyncio.TimerHandle | None = loop.call_later(
            carrier.slow_timeout / 4, self.check
        )

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def check(self) -> None:
        carrier = self.carrier
        self.handle = None
        if carrier.closed:
            return
        if not carrier._still_behind():
            carrier._watch_ended()
            return  # caught up: watching again starts with the next fall behind
        loop = asyncio.get_running_loop()
        now = loop.time()
        if carrier._sends != self.sends:
            self.sends, self.since = carrier._sends, now
        elif now - self.since >= carrier.slow_timeout:
            logger.info(
                "%r: behind and no frame sent for %.1fs (slow_timeout); closing with 1013",
                carrier,
                now - self.since,
            )
            carrier._watch_ended()
            carrier.close_soon("subscriber too slow")
            return
        self.handle = loop.call_later(carrier.slow_timeout / 4, self.check)
