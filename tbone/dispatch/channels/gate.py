"""The publish gate: what a publish is checked against, and how far publishers may run ahead.

Rules (``docs/channels.md``, "Flow control"):

* An event name must be a non-empty str (TypeError); an event over ``max_message_bytes``
  (its name plus its JSON data) is refused with
  :class:`~tbone.dispatch.errors.MessageTooLarge` before anything is stored.
* The gate remembers the events this process published that its consumer has not delivered
  yet. While they are ``queue_size`` events or ``queue_bytes`` bytes, a publish waits for the
  consumer's progress, at most ``publish_timeout`` seconds, then stores regardless: publishers
  cannot push unread events out of a backend's history, and never wait for a subscriber
  directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from tbone.dispatch.channels.counters import Counters
from tbone.dispatch.channels.state import Lifecycle
from tbone.dispatch.errors import MessageTooLarge
from tbone.dispatch.events import EVENT_NAME_RULE, Event, valid_event_name

__all__ = ["PublishGate"]

logger = logging.getLogger("tbone.dispatch.channels")


class PublishGate:
    """The checks and the pacing of one channel's publishers (see the module docstring)."""

    __slots__ = (
        "_waiting",
        "counters",
        "life",
        "max_message_bytes",
        "name",
        "pending",
        "pending_bytes",
        "publish_timeout",
        "queue_bytes",
        "queue_size",
    )

    def __init__(
        self,
        name: str,
        counters: Counters,
        life: Lifecycle,
        *,
        max_message_bytes: int,
        queue_size: int,
        queue_bytes: int,
        publish_timeout: float,
    ) -> None:
        self.name = name
        self.counters = counters
        self.life = life
        self.max_message_bytes = max_message_bytes
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.publish_timeout = publish_timeout
        # Events this process published that its consumer has not delivered yet (id -> size).
        self.pending: OrderedDict[str, int] = OrderedDict()
        self.pending_bytes = 0
        self._waiting: asyncio.Future[None] | None = None  # publishers waiting for room

    # -- checks ------------------------------------------------------------------------------

    @staticmethod
    def check_name(event: object) -> None:
        """TypeError unless ``event`` is a non-empty str; ValueError for a name the protocol
        cannot carry (no client could ever subscribe to it), with the rule in the message."""
        if not isinstance(event, str) or not event:
            raise TypeError(f"event name must be a non-empty str, got {event!r}")
        if not valid_event_name(event):
            raise ValueError(f"cannot publish {event!r}: event names are {EVENT_NAME_RULE}")

    def check_size(self, name: str, payload: bytes) -> None:
        """Raise MessageTooLarge if ``name`` plus the JSON ``payload`` is over the limit."""
        size = len(payload) + len(name.encode())
        if size > self.max_message_bytes:
            self.counters.refused += 1
            raise MessageTooLarge(self.name, name, size, self.max_message_bytes)

    # -- pacing ------------------------------------------------------------------------------

    def full(self) -> bool:
        """Publishers are as far ahead of the consumer as they may be."""
        return bool(self.pending) and (
            len(self.pending) >= self.queue_size or self.pending_bytes >= self.queue_bytes
        )

    async def wait(self) -> None:
        """Wait while :meth:`full`, at most ``publish_timeout``, and only while consuming."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        self.counters.publish_waits += 1
        while (
            len(self.pending) >= self.queue_size or self.pending_bytes >= self.queue_bytes
        ) and self.life.live():
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.warning(
                    "channel %r: publishing although the consumer is %d events behind "
                    "(waited publish_timeout=%.1fs)",
                    self.name,
                    len(self.pending),
                    self.publish_timeout,
                )
                return
            waiting = self._waiting
            if waiting is None or waiting.done():
                waiting = self._waiting = loop.create_future()
            # asyncio.wait neither cancels the shared future on timeout nor raises.
            await asyncio.wait((waiting,), timeout=remaining)

    def expect(self, event: Event) -> None:
        """Count ``event`` as published here and not yet delivered (before it is stored)."""
        if self.life.reading() and event.id not in self.pending:
            self.pending[event.id] = event.size
            self.pending_bytes += event.size

    def unexpect(self, event: Event) -> None:
        """The write of an :meth:`expect`-ed event failed: it will not be delivered."""
        size = self.pending.pop(event.id, None)
        if size is not None:
            self.pending_bytes -= size

    def track(self, event: Event, last_id: str | None, order_key: Callable[[str], Any]) -> None:
        """Remember ``event``, stored, until the consumer delivers it (unless it did already:
        its key is not above the key of ``last_id``, the consumer's position)."""
        if not self.life.reading():
            return
        if last_id is not None:
            key = order_key(event.id)
            last = order_key(last_id)
            if key is not None and last is not None and key <= last:
                return
        self.pending[event.id] = event.size
        self.pending_bytes += event.size

    def delivered(self, id: str) -> None:
        """The consumer delivered the local event ``id``: it and every older local one are
        done; publishers waiting for room go on."""
        pending = self.pending
        while pending:
            key, size = pending.popitem(last=False)
            self.pending_bytes -= size
            if key == id:
                break
        if not pending:
            self.pending_bytes = 0
        waiting = self._waiting
        if waiting is not None and (
            len(pending) < self.queue_size and self.pending_bytes < self.queue_bytes
        ):
            self._waiting = None
            if not waiting.done():
                waiting.set_result(None)

    def drop(self) -> None:
        """The consumer will not see the pending events (a gap, a close): nobody waits."""
        self.pending.clear()
        self.pending_bytes = 0
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def on_new_loop(self) -> None:
        """Forget what a previous event loop left: its pending events and waiting publishers."""
        self._waiting = None
        self.pending.clear()
        self.pending_bytes = 0
