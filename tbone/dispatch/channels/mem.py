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
from itertools import islice
from typing import TYPE_CHECKING, Any

from tbone.dispatch import jsonenc
from tbone.dispatch.channels import Channel, ChannelOptions, ChannelState
from tbone.dispatch.checks import whole_number
from tbone.dispatch.events import Event, History

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["MemoryChannel"]


class MemoryChannel(Channel):
    """A channel whose events live in this process only.

    ``publish`` encodes the event, keeps it in the history (the last ``history`` events, at
    most ``history_bytes`` of frames: 10,000 and 64 MiB by default) and, when a consumer
    runs, queues it for the consumer. It awaits only when ``queue_size`` events (or
    ``queue_bytes``) wait for the consumer, which happens when publishers outrun the fan-out
    (see :meth:`Channel.publish`). Every option of :class:`Channel` applies.
    """

    backend = "memory"
    checks_size = True
    expects_in_store = True

    def __init__(
        self,
        name: str,
        *,
        history: int = 10_000,
        history_bytes: int = 64 * 1024 * 1024,
        **options: Unpack[ChannelOptions],
    ) -> None:
        super().__init__(name, history=history, **options)
        whole_number("history_bytes", history_bytes)
        if history_bytes < self.window_bytes:
            raise ValueError(
                f"history_bytes ({history_bytes}) must be at least window_bytes "
                f"({self.window_bytes}): a client closed while behind resumes from history"
            )
        self.history_bytes = history_bytes
        self.epoch = str(int(time.time() * 1000))
        self._seq = 0
        self._kept: deque[Event] = deque(maxlen=history)
        self._kept_bytes = 0
        self._queue: asyncio.Queue[Event] | None = None

    async def store(self, name: str, data: Any) -> Event:
        payload = jsonenc.dumps_bytes(data)  # bad data fails here, not in a subscriber
        self.check_size(name, payload)
        self._seq += 1
        event = Event.from_json(name, payload, f"{self.epoch}-{self._seq}", self.name, data=data)
        kept = self._kept
        if len(kept) == kept.maxlen:
            self._kept_bytes -= kept[0].size
        kept.append(event)
        self._kept_bytes += event.size
        while self._kept_bytes > self.history_bytes and len(kept) > 1:
            self._kept_bytes -= kept.popleft().size
        if self._queue is not None:  # nobody listens otherwise: the history is enough
            self._queue.put_nowait(event)  # bounded by Channel.publish (queue_size)
            self.expect(event)
        return event

    def kickoff(self) -> None:
        super().kickoff()
        # Made here, not in listen(): events published before the consumer task first runs
        # must already be queued for it. So the read position is fixed now: ready at once,
        # and a publish loop that never yields is paced from its first event.
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self.consumer_state is not ChannelState.RUNNING:
            self.mark_ready()

    async def listen(self, after: str | None) -> AsyncIterator[list[Event]]:
        """Yield what the queue holds, as one batch, as soon as it holds anything.

        The queue is the read position (``after`` is not needed): it outlives a restart of
        the consumer, so nothing is lost or repeated. Publishers wait while ``queue_size``
        events are queued (see :meth:`Channel.publish`), which keeps batches about that size.
        """
        queue = self._queue
        if queue is None:
            queue = self._queue = asyncio.Queue()
        self.mark_ready()
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            yield batch

    def _start(self, since: str | None) -> tuple[int, bool]:
        """Index in the history of the first event after ``since``, and ``complete``."""
        if since is None:
            return 0, True
        epoch, _, seq_text = since.partition("-")
        if not seq_text.isdigit() or not epoch.isdigit():
            raise ValueError(f"{since!r} is not an event id of channel {self.name!r}")
        if epoch != self.epoch:  # an id from an earlier life of this channel
            return 0, False
        seq = int(seq_text)
        # Ids are consecutive: history is complete if it still holds the event after ``since``.
        oldest = self._seq - len(self._kept) + 1
        return max(0, seq - oldest + 1), seq + 1 >= oldest

    async def read_history(self, since: str | None) -> History:
        start, complete = self._start(since)
        return History(list(islice(self._kept, start, None)), complete)

    async def history_page(self, since: str | None, *, limit: int, max_bytes: int) -> History:
        start, complete = self._start(since)
        events: list[Event] = []
        total = 0
        for event in islice(self._kept, start, None):
            if len(events) >= limit or (events and total + event.size > max_bytes):
                return History(events, complete, more=True)
            events.append(event)
            total += event.size
        return History(events, complete)

    def order_key(self, id: str) -> Any:
        epoch, _, seq = id.partition("-")
        return (int(epoch), int(seq)) if epoch.isdigit() and seq.isdigit() else None

    def on_new_loop(self) -> None:
        self._queue = None  # its waiters belong to the old loop

    async def close_backend(self) -> None:
        self._queue = None
