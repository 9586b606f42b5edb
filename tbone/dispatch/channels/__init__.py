"""Channels: named, per-process singletons that fan events out to subscribed carriers.

``MemoryChannel(name="pubsub")`` (or any subclass) returns the one channel of that name in the
process, created on first use. The flow of one event::

    publish(name, data) -> backend store -> consumer loop -> Event frame encoded ONCE
        -> each subscribed carrier's bounded outbox -> its writer task -> websocket

Rules (``docs/channels.md`` has the long form):

* ``publish`` returns once the backend has stored the event; it never waits for subscribers.
* Each subscriber receives a channel's events in the order the backend gives them (publish
  order for one publisher).
* A slow subscriber is closed with 1013 and a failing one is dropped; neither delays others.
* The consumer starts when the first carrier subscribes (or on :meth:`Channel.kickoff`) and
  survives backend faults: it logs, counts, backs off, and resumes after the last event it
  delivered.

Writing a backend: subclass :class:`Channel` and implement :meth:`Channel.store`,
:meth:`Channel.listen` and :meth:`Channel.read_history` (see ``docs/channels.md``).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar, TypeVar

from tbone.dispatch.carriers import CLOSE_GOING_AWAY, Carrier, wait_closing
from tbone.dispatch.events import Event, History, recovered_frame

__all__ = [
    "Channel",
    "ChannelClosed",
    "ChannelNameConflict",
    "clear_registry",
    "close_all_channels",
    "get_channel",
    "registered_channels",
]

logger = logging.getLogger("tbone.dispatch.channels")

C = TypeVar("C", bound="Channel")

_registry: dict[str, Channel] = {}


class ChannelNameConflict(TypeError):
    """A channel name is already bound to a channel of another class."""

    def __init__(self, name: str, existing: type[Channel], wanted: type[Channel]) -> None:
        self.name = name
        self.existing = existing
        self.wanted = wanted
        super().__init__(
            f"channel {name!r} is already a {existing.__name__} in this process; "
            f"cannot make it a {wanted.__name__}. Use another name, or close the first one "
            "(await channel.close(forget=True)) before creating the new one."
        )


class ChannelClosed(RuntimeError):
    """The channel was closed and cannot take this call."""


class _ChannelMeta(abc.ABCMeta):
    """Makes ``SomeChannel(name=...)`` return the process's one channel of that name."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        name = kwargs.get("name", args[0] if args else None)
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"{cls.__name__} needs a name: {cls.__name__}(name='pubsub'). Channels are "
                "per-process singletons looked up by name."
            )
        existing = _registry.get(name)
        if existing is not None:
            if type(existing) is not cls:
                raise ChannelNameConflict(name, type(existing), cls)  # type: ignore[arg-type]
            return existing
        channel = super().__call__(*args, **kwargs)
        _registry[name] = channel
        return channel


class Channel(metaclass=_ChannelMeta):
    """Base class of channels. See the module docstring for the rules.

    Options common to every backend:

    * ``history``: how many recent events the channel keeps for resume (backends with their
      own store may keep more; see each backend).
    * ``backoff``: (first, max) seconds between attempts when the backend fails.

    A second ``SomeChannel(name=...)`` call returns the first channel; its options are ignored.
    """

    #: Short backend name shown by :meth:`stats`.
    backend: ClassVar[str] = "custom"

    def __init__(
        self,
        name: str,
        *,
        history: int = 1000,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        self.name = name
        self.history_size = history
        self.backoff = backoff
        self._subscribers: dict[str, dict[Carrier, None]] = {}  # event -> carriers, in order
        self._events_of: dict[Carrier, set[str]] = {}  # carrier -> events it is subscribed to
        self._resuming: dict[Carrier, _Resume] = {}  # carriers catching up on history
        self._consumer: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        #: Set by ``listen`` while it holds further events ready to yield (see deliver()).
        self.more_ready = False
        self._delay = backoff[0]
        self._state = "idle"
        self._last_id: str | None = None
        self._last_error: str | None = None
        self._counts = dict.fromkeys(
            ("published", "delivered", "dropped", "closed_slow", "reconnects", "errors"), 0
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self._state}>"

    # -- backend hooks (subclasses) ----------------------------------------------------------

    @abc.abstractmethod
    async def store(self, name: str, data: Any) -> Event:
        """Write one event to the backend and return it with its backend-given id."""

    @abc.abstractmethod
    def listen(self, after: str | None) -> AsyncIterator[Event]:
        """Yield the backend's events in order, starting after id ``after`` (None: from now).

        Call :meth:`mark_ready` once the read position is fixed (for "from now", once the
        backend has answered where "now" is), so that :meth:`ready` can tell callers when an
        event they publish is sure to be seen. Raising or returning ends this attempt: the
        consumer waits (with backoff) and calls ``listen`` again with the id of the last event
        it delivered.
        """

    @abc.abstractmethod
    async def read_history(self, since: str | None) -> History:
        """The stored events after ``since`` (all of them when None), oldest first."""

    # -- subscribing -------------------------------------------------------------------------

    def subscribe(self, event: str, carrier: Carrier) -> None:
        """Send ``event`` events to ``carrier`` from now on; starts the consumer if needed.

        Subscribing the same connection twice to an event is one subscription. The first
        carrier subscribed for a connection is kept, so a later carrier object for the same
        connection works for :meth:`unsubscribe`.
        """
        live = carrier._attach(self)
        self._subscribers.setdefault(event, {})[live] = None
        self._events_of.setdefault(live, set()).add(event)
        self.kickoff()

    def unsubscribe(self, event: str, carrier: Carrier) -> bool:
        """Stop sending ``event`` events to the connection of ``carrier``. True if it was on."""
        carriers = self._subscribers.get(event)
        if not carriers or carrier not in carriers:
            return False
        events = self._events_of.get(carrier, set())
        events.discard(event)
        if not events:
            self._events_of.pop(carrier, None)
            self._resuming.pop(carrier, None)
            for live in carriers:
                if live == carrier:
                    live._detach(self)
                    break
        del carriers[carrier]
        if not carriers:
            del self._subscribers[event]
        return True

    def unsubscribe_all(self, carrier: Carrier) -> None:
        """Remove every subscription of the connection of ``carrier`` on this channel."""
        for event in list(self._events_of.get(carrier, ())):
            self.unsubscribe(event, carrier)

    def subscribers(self, event: str) -> list[Carrier]:
        """The carriers subscribed to ``event``, in subscription order."""
        return list(self._subscribers.get(event, ()))

    def _forget(self, carrier: Carrier) -> None:
        # Called by a carrier that closed or failed: it already left, just drop the entries.
        for event in self._events_of.pop(carrier, ()):
            carriers = self._subscribers.get(event)
            if carriers is not None:
                carriers.pop(carrier, None)
                if not carriers:
                    del self._subscribers[event]
        self._resuming.pop(carrier, None)

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, event: str, data: Any = None) -> Event:
        """Store an event in the backend and return it (with its id).

        Awaits only the backend write, never a subscriber. ``data`` must be encodable by
        :mod:`tbone.dispatch.jsonenc`; it is encoded when delivered (raising TypeError at
        publish for data that cannot be, so no subscriber ever sees a broken frame).
        """
        if not isinstance(event, str) or not event:
            raise TypeError(f"event name must be a non-empty str, got {event!r}")
        stored = await self.store(event, data)
        self._counts["published"] += 1
        return stored

    def deliver(self, event: Event) -> None:
        """Hand ``event`` to its subscribers' outboxes (encoded once). Never blocks or raises.

        Called by the consumer loop; backends that have no loop of their own may call it.
        """
        carriers = self._subscribers.get(event.name)
        if carriers:
            text = event.frame
            size = event.size
            # With more events ready behind this one, frames queue and each writer sends a
            # batch; alone, each is sent at once (no task switch on the way).
            now = not self.more_ready
            delivered = 0
            resuming = self._resuming
            for carrier in tuple(carriers):
                if resuming and carrier in resuming and resuming[carrier].intercept(event):
                    continue
                if carrier.offer(text, size, now=now):
                    delivered += 1
            self._counts["delivered"] += delivered
        self._last_id = event.id

    # -- resume ------------------------------------------------------------------------------

    async def history(self, since: str | None = None) -> History:
        """The events still held after id ``since`` (all held events when None), oldest first.

        ``History.complete`` is False when history does not reach back to ``since``: events
        may have been missed. Raises ValueError for an id this channel cannot read.
        """
        return await self.read_history(since)

    def order_key(self, id: str) -> Any:
        """A sort key for event ids of this channel, or None when ids carry no order.

        Resume uses it to skip live events that history already gave; without it, it skips
        by id until the first event that history did not hold.
        """
        return None

    async def resume(self, carrier: Carrier, events: Iterable[str], since: str | None) -> bool:
        """Subscribe ``carrier`` to ``events`` and first send what it missed after ``since``.

        The carrier receives, in order: every held event after ``since`` whose name is in
        ``events``, then a ``recovered`` frame, then live events, none lost or repeated in
        between. Returns ``complete`` (see :meth:`history`). With ``since=None`` this is a
        plain subscribe and no ``recovered`` frame is sent.
        """
        names = set(events)
        live = carrier._attach(self)
        if since is None:
            for name in names:
                self.subscribe(name, live)
            return True
        state = self._resuming[live] = _Resume(self, live)  # live events wait in it meanwhile
        try:
            for name in names:
                self.subscribe(name, live)
            # Live events are read from "now" once the consumer is ready: history must be read
            # after that point, or an event published in between would fall in the gap.
            await self.ready()
            past = await self.history(since)
        except BaseException:
            self._resuming.pop(live, None)
            raise
        if self._resuming.get(live) is not state:  # closed or unsubscribed meanwhile
            return past.complete
        state.set_history(past.events, since if past.complete else None)
        for ev in past.events:
            if ev.name in names and not await _replay(live, ev):
                self._resuming.pop(live, None)
                return past.complete  # the client stopped reading (closed 1013) or left
        if self._resuming.get(live) is not state:
            return past.complete
        live.offer(recovered_frame(self.name, past.complete))
        for ev in state.release():
            live.offer(ev.frame, ev.size)
        return past.complete

    # -- running -----------------------------------------------------------------------------

    def kickoff(self) -> None:
        """Start the consumer loop if it is not running. Needs a running event loop."""
        consumer = self._consumer
        if consumer is not None and not consumer.done():
            if consumer.get_loop() is asyncio.get_running_loop():
                return
            # A channel outlives event loops in tests and reloads: start afresh on this one.
            self._reset_loop_state()
        self._state = "starting"
        self._ready = asyncio.Event()
        self._consumer = asyncio.get_running_loop().create_task(
            self._consume(), name=f"tbone channel {self.name!r}"
        )

    def mark_ready(self) -> None:
        """Called by :meth:`listen` once it reads from a fixed position (see :meth:`ready`)."""
        self._state = "running"
        self._delay = self.backoff[0]  # the backend answers again: the next fault starts afresh
        if self._ready is not None:
            self._ready.set()

    async def ready(self) -> None:
        """Start the consumer if needed and wait until it reads the backend.

        Once this returns, every event published (from any process) reaches the current
        subscribers. Backends that start reading "from now" need a round trip for that; a
        subscriber that must not miss the first event after subscribing awaits this first.
        """
        self.kickoff()
        assert self._ready is not None
        await self._ready.wait()

    def _reset_loop_state(self) -> None:
        """Drop state bound to a previous event loop (override to reset backend clients)."""
        self._consumer = None

    async def _consume(self) -> None:
        self._delay = self.backoff[0]
        while True:
            try:
                async for event in self.listen(self._last_id):
                    if self._state != "running":
                        self.mark_ready()  # for backends that never call it themselves
                    self.deliver(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._state = "reconnecting"
                self._last_error = f"{type(exc).__name__}: {exc}"
                self._counts["errors"] += 1
                logger.warning(
                    "channel %r: backend failed (%s); retrying in %.2fs",
                    self.name,
                    self._last_error,
                    self._delay,
                )
            self._counts["reconnects"] += 1
            # Full jitter: many processes that lost the same server do not return in step.
            delay = self._delay
            self._delay = min(delay * 2, self.backoff[1])
            await asyncio.sleep(random.uniform(delay / 2, delay))

    async def close(self, *, forget: bool = False) -> None:
        """Stop the consumer and close every subscribed carrier with 1001 (going away).

        Awaits the consumer's end and the carriers' close handshakes, leaving no task behind.
        The channel stays registered and starts again on the next subscribe; with
        ``forget=True`` it is also removed from the registry, so its name can be reused.
        """
        consumer, self._consumer = self._consumer, None
        if consumer is not None and not consumer.done():
            consumer.cancel()
            if consumer.get_loop() is asyncio.get_running_loop():
                await asyncio.wait([consumer])
        carriers = list(self._events_of)
        await asyncio.gather(
            *(c.close(CLOSE_GOING_AWAY, "channel closed") for c in carriers),
            return_exceptions=True,
        )
        for carrier in carriers:  # in case a carrier's close failed early
            self._forget(carrier)
        await wait_closing()
        await self.close_backend()
        self._state = "closed"
        if forget and _registry.get(self.name) is self:
            del _registry[self.name]

    async def close_backend(self) -> None:
        """Release backend resources (connections, cursors). Called by :meth:`close`."""

    async def __aenter__(self: C) -> C:
        self.kickoff()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- observability -----------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        self._counts[key] += n

    def stats(self) -> dict[str, Any]:
        """Counters and state, for logs and metrics. All counts are since the process started.

        ``subscribers``: connections subscribed; ``subscriptions``: (event, connection) pairs;
        ``published``: events this process stored; ``delivered``: frames handed to
        subscribers' outboxes; ``dropped``: connections removed because a send failed;
        ``closed_slow``: connections closed with 1013; ``reconnects``: consumer restarts;
        ``errors``: backend failures; ``consumer``: idle, starting, running, reconnecting or
        closed; ``last_error`` and ``last_id``.
        """
        return {
            "name": self.name,
            "backend": self.backend,
            "subscribers": len(self._events_of),
            "subscriptions": sum(len(c) for c in self._subscribers.values()),
            **self._counts,
            "consumer": self._state,
            "last_error": self._last_error,
            "last_id": self._last_id,
        }


async def _replay(carrier: Carrier, event: Event) -> bool:
    """Offer one history event, letting the writer drain first when the outbox is half full.

    History may hold more than an outbox takes at once (a client back after a long absence):
    offering it all in one go would close every such client with 1013, again at each retry.
    Pacing on the writer sends it all to a client that reads; one that does not read within
    the flush wait is closed as too slow, as it would be live. False once the carrier closed.
    """
    if (
        carrier.queued >= carrier.max_messages // 2
        or carrier._queued_bytes + event.size > carrier.max_bytes // 2
    ):
        await carrier.flush(REPLAY_FLUSH_TIMEOUT)
    return carrier.offer(event.frame, event.size)


#: Seconds a resuming client may take to read half an outbox of history before the replay
#: goes on regardless (and closes it with 1013 if the outbox overflows).
REPLAY_FLUSH_TIMEOUT = 10.0


class _Resume:
    """A resuming carrier's live events, held back until history has been replayed.

    The consumer delivers in backend order, and history is a run of that same order ending at
    its last event: live events up to it were (or will be) sent from history and are dropped;
    later ones wait until the replay and the ``recovered`` frame are out. Phases: reading
    history (every live event waits), replaying (duplicates dropped, new events wait, at most
    ``max_messages`` of them), live (the filter ends at the first new event).
    """

    __slots__ = ("buffer", "carrier", "channel", "filtering", "last_key", "seen")

    def __init__(self, channel: Channel, carrier: Carrier) -> None:
        self.channel = channel
        self.carrier = carrier
        self.buffer: list[Event] | None = []
        self.filtering: bool | None = None  # None until history is known
        self.last_key: Any = None
        self.seen: set[str] = set()

    def set_history(self, past: list[Event], since: str | None) -> None:
        """History was read: from now on, live events it already holds are dropped."""
        last = past[-1].id if past else since
        key = None if last is None else self.channel.order_key(last)
        if key is not None:
            self.last_key = key
        elif past or since is not None:
            # No id order: skip by id. A consumer lagging behind ``since`` delivers it (and
            # history) late: skip those too.
            self.seen = {e.id for e in past}
            if since is not None:
                self.seen.add(since)
        self.filtering = key is not None or bool(self.seen)
        waiting, self.buffer = self.buffer or [], []
        for event in waiting:
            self.intercept(event)

    def release(self) -> list[Event]:
        """The replay is out: return the new events that waited; later ones go out directly."""
        waiting, self.buffer = self.buffer or [], None
        if not self.filtering:
            self._done()
        return waiting

    def intercept(self, event: Event) -> bool:
        """True when ``event`` must not be offered now (waiting, or already sent)."""
        if self.filtering is None:
            assert self.buffer is not None
            self.buffer.append(event)
            return True
        if self.filtering:
            if self.last_key is not None:
                duplicate = self.channel.order_key(event.id) <= self.last_key
            else:
                duplicate = event.id in self.seen
            if duplicate:
                return True
            self.filtering = False  # past the end of history: everything after is new
        if self.buffer is not None:
            self.buffer.append(event)
            if len(self.buffer) > self.carrier.max_messages:
                # New events outran a replay the client reads too slowly: what the outbox
                # would not hold either closes it as too slow.
                self.carrier._overflow()
            return True
        self._done()
        return False

    def _done(self) -> None:
        resuming = self.channel._resuming
        if resuming.get(self.carrier) is self:
            del resuming[self.carrier]


def get_channel(name: str) -> Channel | None:
    """The channel registered under ``name`` in this process, or None."""
    return _registry.get(name)


def registered_channels() -> list[Channel]:
    """Every channel registered in this process, in creation order (metrics, health checks)."""
    return list(_registry.values())


def clear_registry() -> None:
    """Forget every channel without closing them (tests; prefer :func:`close_all_channels`)."""
    _registry.clear()


async def close_all_channels() -> None:
    """Close every registered channel and empty the registry (app shutdown, test teardown)."""
    channels = list(_registry.values())
    _registry.clear()
    for channel in channels:
        await channel.close()
