"""MemoryChannel: an in-process channel on an ``asyncio.Queue``, for one process.

Event ids are ``"<epoch>-<seq>"``: the channel's creation time in milliseconds and a counter,
ordered within the channel. A restarted process has a new epoch, so a client resuming with an
id from the previous process is told that history is incomplete instead of silently missing
events.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from tbone.dispatch.channels import Channel
from tbone.dispatch.events import Event, History

__all__ = ["MemoryChannel"]


class MemoryChannel(Channel):
    """A channel whose events live in this process only.

    ``publish`` stores the event in the history (the last ``history`` events) and, when a
    consumer runs, in a queue of at most ``queue_size`` events; it awaits only when that queue
    is full, which happens only if publishers outpace the fan-out itself.
    """

    backend = "memory"

    def __init__(
        self,
        name: str,
        *,
        history: int = 1000,
        queue_size: int = 10_000,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        super().__init__(name, history=history, backoff=backoff)
        self.queue_size = queue_size
        self.epoch = str(int(time.time() * 1000))
        self._seq = 0
        self._kept: deque[Event] = deque(maxlen=history)
        self._queue: asyncio.Queue[Event] | None = None

    async def store(self, name: str, data: Any) -> Event:
        self._seq += 1
        event = Event(name, data, f"{self.epoch}-{self._seq}", self.name)
        event.frame  # noqa: B018 - encode now: bad data fails here, not in a subscriber
        self._kept.append(event)
        queue = self._queue
        if queue is not None:  # nobody listens otherwise: the history is enough
            if queue.full():
                await queue.put(event)
            else:
                queue.put_nowait(event)
        return event

    def kickoff(self) -> None:
        super().kickoff()
        # Made here, not in listen(): events published before the consumer task first runs
        # must already be queued for it.
        if self._queue is None:
            self._queue = asyncio.Queue(self.queue_size)

    async def listen(self, after: str | None) -> AsyncIterator[Event]:
        # The queue outlives a restart of the consumer, so nothing is lost or repeated.
        queue = self._queue
        if queue is None:
            queue = self._queue = asyncio.Queue(self.queue_size)
        self.mark_ready()
        while True:
            event = await queue.get()
            self.more_ready = not queue.empty()
            yield event
            while not queue.empty():
                event = queue.get_nowait()
                self.more_ready = not queue.empty()
                yield event

    async def read_history(self, since: str | None) -> History:
        kept = list(self._kept)
        if since is None:
            return History(kept, complete=True)
        epoch, _, seq_text = since.partition("-")
        if not seq_text.isdigit() or not epoch.isdigit():
            raise ValueError(f"{since!r} is not an event id of channel {self.name!r}")
        if epoch != self.epoch:  # an id from an earlier life of this channel
            return History(kept, complete=False)
        seq = int(seq_text)
        # Ids are consecutive: history is complete if it still holds the event after ``since``.
        oldest = self._seq - len(kept) + 1
        return History(kept[max(0, seq - oldest + 1) :], complete=seq + 1 >= oldest)

    def order_key(self, id: str) -> Any:
        epoch, _, seq = id.partition("-")
        return (int(epoch), int(seq)) if epoch.isdigit() and seq.isdigit() else None

    def _reset_loop_state(self) -> None:
        super()._reset_loop_state()
        self._queue = None

    async def close_backend(self) -> None:
        self._queue = None
