"""In-process subscriptions: a channel's events as an async iterator, bounded like a websocket.

::

    async with channel.subscription("item_created", "item_deleted") as events:
        async for event in events:
            print(event.name, event.data)

An :class:`EventStream` is a carrier whose "connection" is the code iterating it, so every rule
of a websocket subscriber holds (``docs/channels.md``): events arrive in the channel's order,
none lost; the stream holds at most ``max_messages`` events and ``max_bytes`` bytes (once it is
behind, the channel keeps its place in the catch-up window instead); a reader that stays behind for
``slow_timeout`` seconds without taking an event is closed, and its iteration raises
:class:`SubscriptionClosed` with the id of the last event it took, to resume from.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection, Iterable
from typing import Protocol, TypedDict

from tbone.dispatch.carriers import Carrier
from tbone.dispatch.errors import CLOSE_TRY_AGAIN_LATER, TBoneError
from tbone.dispatch.events import Event

__all__ = ["EventStream", "StreamOptions", "SubscriptionClosed"]


class SubscriptionClosed(TBoneError):
    """An in-process subscription was closed while events may have been missed.

    ``code`` is 1013 (too slow, or the channel lost events) and ``last_id`` the id of the last
    event taken: ``channel.subscription(..., since=exc.last_id)`` resumes after it.
    """

    channel: str
    code: int
    last_id: str | None

    def __init__(self, channel: str, code: int, last_id: str | None) -> None:
        super().__init__(
            f"the subscription to channel {channel!r} was closed with {code}: the reader did "
            f"not keep up for slow_timeout, or the channel lost events; resume with "
            f"since={last_id!r}",
            channel=channel,
            code=code,
            last_id=last_id,
        )


class _Channel(Protocol):
    name: str

    def subscribe(self, event: str, carrier: Carrier) -> None: ...

    def unsubscribe_all(self, carrier: Carrier) -> None: ...

    async def ready(self) -> None: ...

    async def resume(
        self, carrier: Carrier, events: Iterable[str], since: str | None, *, history: bool = ...
    ) -> bool: ...


class StreamOptions(TypedDict, total=False):
    """The options of :meth:`Channel.subscription` (see :class:`EventStream`)."""

    since: str | None
    history: bool
    max_messages: int | None
    max_bytes: int | None
    slow_timeout: float | None


class EventStream(Carrier):
    """The events named ``events`` of ``channel``, for ``async with`` and ``async for``.

    Made by :meth:`Channel.subscription`. Entering subscribes: without ``since`` (and without
    ``history``) every event delivered after entering is received (the channel's consumer is
    ready first). With ``since``, every event held after it comes first, however many, then
    live ones, none lost or repeated; ``history=True`` starts from the oldest event held.
    :attr:`complete` is then False only if events were lost, history not reaching back that
    far (None until the replay is out).
    Leaving unsubscribes. Iteration ends when the channel closes; it raises
    :class:`SubscriptionClosed` when the stream was closed as too slow (or the channel lost
    events), and re-raises what made a resume fail (ValueError for an id the channel cannot
    read, the backend's error when it is down).
    """

    def __init__(
        self,
        channel: _Channel,
        events: Collection[str],
        *,
        since: str | None = None,
        history: bool = False,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        slow_timeout: float | None = None,
    ) -> None:
        if isinstance(events, str) or not events:
            raise TypeError("name at least one event: channel.subscription('a', 'b')")
        super().__init__(
            object(), max_messages=max_messages, max_bytes=max_bytes, slow_timeout=slow_timeout
        )
        self.channel = channel
        self.names = tuple(dict.fromkeys(events))
        self.since = since
        self.history = history
        self._complete: bool | None = None if since is not None or history else True
        #: The id of the last event taken from the stream.
        self.last_id: str | None = None
        self._events: deque[Event] = deque()
        self._replay: asyncio.Task[bool] | None = None
        self._waiter: asyncio.Future[None] | None = None  # the reader waiting in __anext__

    @property
    def complete(self) -> bool | None:
        """False when a resume found events lost (history incomplete); None until its replay
        is out."""
        replay = self._replay
        done = replay is not None and replay.done() and not replay.cancelled()
        if done and replay is not None and replay.exception() is None:
            return replay.result()
        return self._complete

    async def recovered(self) -> bool | None:
        """Wait until the replay of a resume is in the stream; return :attr:`complete`.

        Returns at once without a resume. Raises what made the resume fail.
        """
        replay = self._replay
        if replay is not None:
            await asyncio.wait([replay])
            if not replay.cancelled():
                return replay.result()
        return self._complete

    # -- async with --------------------------------------------------------------------------

    async def __aenter__(self) -> EventStream:
        if self.since is None and not self.history:
            for name in self.names:
                self.channel.subscribe(name, self)
            await self.channel.ready()
        else:
            # In a task: the replay waits for room in this stream, which the caller makes by
            # iterating once this returns.
            self._replay = asyncio.get_running_loop().create_task(
                self.channel.resume(self, self.names, self.since, history=self.history)
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Unsubscribe and stop a replay in progress. Safe to call more than once."""
        replay, self._replay = self._replay, None
        if replay is not None and not replay.done():
            replay.cancel()
            await asyncio.wait([replay])
        self.channel.unsubscribe_all(self)
        await self.close()

    # -- async for ---------------------------------------------------------------------------

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        events = self._events
        while not events:
            self._check_replay()
            if self.closed:
                if self.close_code == CLOSE_TRY_AGAIN_LATER:
                    raise SubscriptionClosed(self.channel.name, self.close_code, self.last_id)
                raise StopAsyncIteration
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            wait = [waiter] if self._replay is None else [waiter, self._replay]
            await asyncio.wait(wait, return_when=asyncio.FIRST_COMPLETED)
        event = events.popleft()
        self.queued_bytes -= event.size
        self._progress()  # for the slow rule; with room again the channel hands over the rest
        self.last_id = event.id
        return event

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check_replay(self) -> None:
        replay = self._replay
        if replay is not None and replay.done():
            self._replay = None
            if not replay.cancelled():
                self._complete = replay.result()  # raises what made the resume fail

    # -- Carrier -----------------------------------------------------------------------------

    def offer_event(self, event: Event, *, now: bool = True) -> bool:
        if self.closed:
            return False
        self._events.append(event)
        self.queued_bytes += event.size
        self._wake()
        return True

    # The stream is its outbox: the marks of docs/channels.md#flow-control, on its events.
    @property
    def behind(self) -> bool:
        return len(self._events) * 2 >= self.max_messages or self.queued_bytes * 2 >= self.max_bytes

    def _below_low_water(self) -> bool:
        return (
            len(self._events) * 4 <= self.max_messages and self.queued_bytes * 4 <= self.max_bytes
        )

    @property
    def queued(self) -> int:
        return len(self._events)

    async def send_text(self, text: str) -> None:
        """Frames other than events (``recovered``) are not for in-process readers."""

    def _on_close(self, code: int | None) -> None:
        super()._on_close(code)
        self._events.clear()
        self._wake()

    def _on_unbound(self) -> None:
        self._wake()  # a reader waiting for events looks at the stream again

    def __repr__(self) -> str:
        return f"<EventStream {self.channel.name!r} {list(self.names)} queued={len(self._events)}>"
