"""Helpers for testing code that uses channels or carriers, with no server.

``RecordingCarrier`` can be made slow (``delay``), stuck (``block()``) or broken
(``fail_after``), and lets a test wait for frames without sleeping::

    carrier = RecordingCarrier()
    channel.subscribe("resource_create", carrier)
    await channel.publish("resource_create", {"pk": 1})
    frames = await carrier.wait_for(1)

``RecordingLink`` stands in for a channel on the carrier's side of the contract
(``docs/carriers.md#what-channels-call``): bound with ``carrier.bind(link)``, it records the
carrier's callbacks (``refills``, ``closed_how``) and hands over frames it holds when asked to
refill, so a carrier's outbox, flow control, slow rule and close paths are tested without a
channel or a server (``tests/dispatch/delivery/``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from tbone.dispatch import jsonenc
from tbone.dispatch.carriers import Carrier, Closed
from tbone.dispatch.timeouts import wait_at_most

__all__ = ["RecordingCarrier", "RecordingLink"]


class _Connection:
    """Stands in for a websocket: a fresh object per carrier, so each carrier is distinct."""

    def __repr__(self) -> str:
        return f"<test connection {id(self):#x}>"


class RecordingCarrier(Carrier):
    """A carrier that keeps every frame it is sent (``texts``, decoded in ``frames``).

    ``connection``: share one to make two carriers equal (one connection). ``delay``: seconds
    each send takes. ``fail_after``: sends that succeed before every later one raises
    ``ConnectionResetError`` (the peer went away).
    """

    def __init__(
        self,
        connection: Any = None,
        *,
        delay: float = 0.0,
        fail_after: int | None = None,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        slow_timeout: float | None = None,
    ) -> None:
        super().__init__(
            connection if connection is not None else _Connection(),
            max_messages=max_messages,
            max_bytes=max_bytes,
            slow_timeout=slow_timeout,
        )
        self.texts: list[str] = []
        self.delay = delay
        self.fail_after = fail_after
        self.closed_with: tuple[int, str] | None = None
        self._gate: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None

    @property
    def frames(self) -> list[Any]:
        """The frames received so far, decoded from JSON."""
        return [jsonenc.loads(t) for t in self.texts]

    def block(self) -> None:
        """Make sends hang until :meth:`unblock` (a client that stopped reading)."""
        self._gate = asyncio.Event()

    def unblock(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    async def send_text(self, text: str) -> None:
        if self.fail_after is not None and len(self.texts) >= self.fail_after:
            raise ConnectionResetError("test connection reset")
        if self._gate is not None:
            await self._gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.texts.append(text)
        self._notify()

    async def close_connection(self, code: int, reason: str) -> None:
        if self.closed_with is None:
            self.closed_with = (code, reason)
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Any]:
        """Wait until at least ``count`` frames arrived; return them decoded.

        Raises ``TimeoutError`` (with what did arrive) after ``timeout`` seconds.
        """
        try:
            await wait_at_most(self._until(lambda: len(self.texts) >= count), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{self!r}: waited {timeout}s for {count} frames, got {len(self.texts)}"
            ) from None
        return self.frames

    async def wait_closed(self, timeout: float = 5.0) -> tuple[int, str]:
        """Wait until the connection was closed; return ``(code, reason)``."""
        try:
            await wait_at_most(self._until(lambda: self.closed_with is not None), timeout)
        except TimeoutError:
            raise TimeoutError(f"{self!r}: not closed within {timeout}s") from None
        assert self.closed_with is not None
        return self.closed_with

    async def _until(self, done: Any) -> None:
        while not done():
            self._changed = asyncio.Event()
            await self._changed.wait()


class RecordingLink:
    """A channel's side of the carrier contract, for tests: it records what the carrier calls.

    ``held``: frames (texts) a lagging connection takes when the carrier asks for a refill,
    offered while the carrier is not ``behind``, as a channel's window would. ``refills`` counts
    the carrier's ``refill()`` calls; ``closed_how`` is what ``carrier_closed(how)`` said.
    """

    def __init__(self, carrier: Carrier, held: list[str] | None = None) -> None:
        self.carrier = carrier
        self.held = list(held or ())
        self.refills = 0
        self.closed_how: Closed | None = None

    def refill(self) -> None:
        self.refills += 1
        while self.held and not self.carrier.behind:
            if not self.carrier.offer(self.held.pop(0), now=False):
                return
        if not self.held:
            self.carrier.unlag(self)

    def carrier_closed(self, how: Closed) -> None:
        self.closed_how = how
