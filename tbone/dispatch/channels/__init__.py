"""Channels: named, per-process singletons that fan events out to subscribed carriers.

``MemoryChannel(name="pubsub")`` (or any subclass) returns the one channel of that name in the
process, created on first use. The flow of one event::

    publish(name, data) -> backend store -> consumer loop -> Event frame encoded ONCE
        -> each subscribed carrier's bounded outbox -> its writer task -> websocket
                          (or, for a connection behind: the catch-up window -> its outbox)

Rules (``docs/channels.md`` has the long form):

* ``publish`` returns once the backend has stored the event. It waits only when this
  process's publishers are ``queue_size`` events ahead of its consumer, and at most
  ``publish_timeout``; never for a subscriber directly.
* Each subscriber receives a channel's events in the order the backend gives them (publish
  order for one publisher), none lost: a connection whose outbox is half full reads from the
  channel's window until it has caught up (:mod:`tbone.dispatch.channels.window`).
* A connection that stays behind without sending for ``slow_timeout``, or that holds a full
  window that long, is closed with 1013; one whose send fails is dropped.
* Events over ``max_message_bytes`` are refused at publish with MessageTooLarge.
* The consumer starts when the first carrier subscribes (or on :meth:`Channel.kickoff`) and
  survives backend faults: it logs, counts, backs off, and resumes after the last event it
  delivered. :meth:`Channel.ready` waits for it, within a timeout if given, and fails at once
  on an error that retrying cannot fix.

Writing a backend: subclass :class:`Channel` and implement :meth:`Channel.store`,
:meth:`Channel.listen` and :meth:`Channel.read_history`; the optional hooks are
:meth:`Channel.history_page`, :meth:`Channel.order_key`, :meth:`Channel.on_new_loop`,
:meth:`Channel.close_backend` and :meth:`Channel.fatal_error`. ``docs/channels.md`` ("A custom
backend") has the contract and a complete example.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict, TypeVar, cast

from tbone.dispatch import jsonenc
from tbone.dispatch.carriers import Carrier, wait_closing
from tbone.dispatch.channels import registry
from tbone.dispatch.channels.fanout import Fanout
from tbone.dispatch.channels.resume import REPLAY_BYTES, REPLAY_EVENTS, replay, warn_replay_cap
from tbone.dispatch.channels.stream import EventStream, StreamOptions, SubscriptionClosed
from tbone.dispatch.errors import (
    CLOSE_GOING_AWAY,
    ChannelNameConflict,
    ChannelUnavailable,
    MessageTooLarge,
)
from tbone.dispatch.events import EVENT_NAME_RULE, Event, History, valid_event_name
from tbone.dispatch.timeouts import wait_at_most

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "MAX_MESSAGE_BYTES",
    "WINDOW_BYTES",
    "Channel",
    "ChannelNameConflict",
    "ChannelOptions",
    "ChannelUnavailable",
    "EventStream",
    "MessageTooLarge",
    "SubscriptionClosed",
    "clear_registry",
    "close_all_channels",
    "get_channel",
    "page_of",
    "registered_channels",
]

logger = logging.getLogger("tbone.dispatch.channels")

C = TypeVar("C", bound="Channel")


#: The consumer lets other tasks run after this many events in a row.
YIELD_EVERY = 64

#: Defaults of the options every channel takes (see :class:`Channel`).
MAX_MESSAGE_BYTES = 512 * 1024
WINDOW_BYTES = 16 * 1024 * 1024


class ChannelOptions(TypedDict, total=False):
    """The options every backend takes besides its own: ``**options: Unpack[ChannelOptions]``
    keeps them typed in each backend's signature without writing them out again."""

    max_message_bytes: int
    window: int | None
    window_bytes: int
    queue_size: int
    queue_bytes: int
    publish_timeout: float
    backoff: tuple[float, float]


class Channel(metaclass=registry.ChannelMeta):
    """Base class of channels. See the module docstring for the rules.

    Options common to every backend (``docs/channels.md`` has the long form):

    * ``history``: how many recent events the channel keeps for resume (backends with their
      own store keep theirs; see each backend).
    * ``max_message_bytes``: the largest event ``publish`` accepts (its name plus its JSON
      data, in bytes; 512 KiB, half of a connection's default outbox). Bigger raises
      :class:`~tbone.dispatch.events.MessageTooLarge` before anything is stored.
    * ``window``, ``window_bytes``: the catch-up window, where connections that fall behind
      read from (4,096 events, at most half of ``history``, and 16 MiB). When it is full and a
      connection still needs its oldest event, the consumer waits for that connection.
    * ``queue_size``, ``queue_bytes``: how far this process's publishers may run ahead of its
      consumer (1,000 events, at most half of ``history``, and 8 MiB); beyond that
      ``publish`` waits, so they cannot push unread events out of a backend's history.
    * ``publish_timeout``: the longest one ``publish`` waits for that (5 s); then it stores
      the event anyway.
    * ``backoff``: (first, max) seconds between attempts when the backend fails.

    A second ``SomeChannel(name=...)`` call returns the first channel; its options are ignored.
    """

    #: Short backend name shown by :meth:`stats`.
    backend: ClassVar[str] = "custom"
    #: True for backends that call :meth:`expect` in ``store`` themselves.
    expects_in_store: ClassVar[bool] = False
    #: The longest :meth:`close` takes by default (seconds), whatever the backend does.
    close_timeout: ClassVar[float] = 10.0
    #: True for backends whose ``store`` calls :meth:`check_size` with the data it encodes;
    #: for the others :meth:`publish` encodes the data once more to check it first.
    checks_size: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        *,
        history: int = 10_000,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        window: int | None = None,
        window_bytes: int = WINDOW_BYTES,
        queue_size: int = 1000,
        queue_bytes: int = 8 * 1024 * 1024,
        publish_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        if window is None:
            window = max(1, min(4096, history // 2))
        for option, value in (
            ("history", history),
            ("max_message_bytes", max_message_bytes),
            ("window", window),
            ("window_bytes", window_bytes),
            ("queue_size", queue_size),
            ("queue_bytes", queue_bytes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{option} must be a positive int, got {value!r}")
        if window_bytes < max_message_bytes:
            raise ValueError(
                f"window_bytes ({window_bytes}) must hold at least one event of "
                f"max_message_bytes ({max_message_bytes})"
            )
        if not publish_timeout >= 0:
            raise ValueError(f"publish_timeout must be seconds >= 0, got {publish_timeout!r}")
        self.name = name
        self.history_size = history
        self.max_message_bytes = max_message_bytes
        self.queue_size = max(1, min(queue_size, history // 2))
        self.queue_bytes = queue_bytes
        self.publish_timeout = publish_timeout
        self.backoff = backoff
        self.window_size = window
        self.window_bytes = window_bytes
        self._resume_locks: dict[Carrier, asyncio.Lock] = {}
        # Events this process published that its consumer has not delivered yet (id -> size).
        self._pending: OrderedDict[str, int] = OrderedDict()
        self._pending_bytes = 0
        self._publishers: asyncio.Future[None] | None = None  # publishers waiting for room
        self._consumer: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        # Set while the consumer's last error is one retrying cannot fix; _fatal says what to do.
        self._refused: asyncio.Event | None = None
        self._fatal: str | None = None
        self._delay = backoff[0]
        self._state = "idle"
        self._last_id: str | None = None
        self._last_error: str | None = None
        self._counts = dict.fromkeys(
            (
                "published",
                "delivered",
                "dropped",
                "closed_slow",
                "reconnects",
                "errors",
                "refused",
                "lagged",
                "waits",
                "publish_waits",
                "gaps",
            ),
            0,
        )
        self._fanout = Fanout(name, self._counts, window, window_bytes)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self._state}>"

    # -- backend hooks (subclasses) ----------------------------------------------------------

    @abc.abstractmethod
    async def store(self, name: str, data: Any) -> Event:
        """Write one event to the backend and return it with its backend-given id.

        Called by :meth:`publish`, which has checked the size (unless the backend sets
        :attr:`checks_size` and calls :meth:`check_size` here itself, with the data it
        encodes anyway). Raise to fail this publish only (nothing stored, or the backend's
        error when it cannot tell). A backend that keeps JSON text returns
        ``Event.from_json(name, payload, id, self.name, data=data)``.
        """

    @abc.abstractmethod
    def listen(self, after: str | None) -> AsyncIterator[Event | Sequence[Event]]:
        """Yield the backend's events in order, starting after id ``after`` (None: from now).

        Yield single events, or batches (a sequence of events at hand together, such as one
        read's answer): the consumer delivers a batch's events one after the other and tells
        writers that more follow at once, so each sends them as one batch. Every event is
        yielded once, in the channel's order.

        Call :meth:`mark_ready` once the read position is fixed (for "from now", once the
        backend has answered where "now" is), so that :meth:`ready` can tell callers when an
        event they publish is sure to be seen; a backend that does not is taken as ready at
        its first yield. Raising or returning ends this attempt: the consumer waits (with
        backoff) and calls ``listen`` again with :attr:`last_id`, the last event it
        delivered. The consumer may pause at a yield (flow control, or to let other tasks
        run): the backend then simply reads on later, so hold no lock or transaction across
        a yield. It asks for the next item only once it delivered every event of the
        previous one, and stops in the middle of a batch only when the channel closes.
        """

    @abc.abstractmethod
    async def read_history(self, since: str | None) -> History:
        """The stored events after ``since`` (all of them when None), oldest first.

        ``complete`` is False when the store no longer reaches back to ``since`` (trimmed,
        or an id of an earlier life of the channel). Raise ValueError for an id this channel
        cannot read.
        """

    async def history_page(self, since: str | None, *, limit: int, max_bytes: int) -> History:
        """At most ``limit`` stored events after ``since``, of at most ``max_bytes`` in all.

        The first event is returned whatever its size. ``more`` is True when events follow
        the page, and then the page holds at least one event (a backend that skips stored
        entries reads on past them); ``complete`` is as for :meth:`read_history`. Resume
        reads history with this, page by page, so a connection never makes the server hold
        more than a page at once.
        This default reads the whole history and cuts it: backends override it to read only
        the page (``XRANGE ... COUNT``, a bounded ``find``).
        """
        return page_of(await self.read_history(since), limit, max_bytes)

    def check_size(self, name: str, payload: bytes) -> None:
        """Raise MessageTooLarge if ``name`` plus the JSON ``payload`` is over the limit."""
        size = len(payload) + len(name.encode())
        if size > self.max_message_bytes:
            self._counts["refused"] += 1
            raise MessageTooLarge(self.name, name, size, self.max_message_bytes)

    def fatal_error(self, exc: Exception) -> str | None:
        """What to do about ``exc`` when retrying cannot fix it; None for a fault that may pass.

        The consumer asks this about each error of :meth:`listen`. A backend that is down, a
        timeout, a dropped link: None (the default), and the consumer retries with backoff. A
        bad password, a database that does not exist, an address the client library refuses:
        the fix, in a few words ("check the password in the URL"). The consumer still retries
        (the server's settings may change), but :meth:`ready` fails at once with
        :class:`~tbone.dispatch.errors.ChannelUnavailable` instead of waiting, and the
        error is logged at ERROR with the fix.
        """
        return None

    # -- subscribing -------------------------------------------------------------------------

    def subscribe(self, event: str, carrier: Carrier) -> None:
        """Send ``event`` events to ``carrier`` from now on; starts the consumer if needed.

        Subscribing the same connection twice to an event is one subscription. The first
        carrier subscribed for a connection is kept, so a later carrier object for the same
        connection works for :meth:`unsubscribe`. "From now on" is the channel's stream: a
        connection that is behind gets the events delivered after this call, when it gets there.
        Raises ValueError when ``carrier`` is closed.
        """
        self._fanout.subscribe(event, carrier)
        self.kickoff()

    def unsubscribe(self, event: str, carrier: Carrier) -> bool:
        """Stop sending ``event`` events to the connection of ``carrier``. True if it was on.

        Events delivered before this call still reach a connection that is behind.
        """
        return self._fanout.unsubscribe(event, carrier)

    def unsubscribe_all(self, carrier: Carrier) -> None:
        """Remove every subscription of the connection of ``carrier`` on this channel."""
        sub = self._fanout.subscription(carrier)
        if sub is not None:
            for event in list(sub.events):
                self._fanout.unsubscribe(event, carrier)

    def subscribers(self, event: str) -> list[Carrier]:
        """The carriers subscribed to ``event``, in subscription order."""
        return [sub.carrier for sub in self._fanout.by_event.get(event, ())]

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, event: str, data: Any = None) -> Event:
        """Store an event in the backend and return it (with its id).

        Awaits the backend write and, when this process's publishers are more than
        ``queue_size`` events (or ``queue_bytes``) ahead of its consumer, the consumer's
        progress, at most ``publish_timeout`` seconds (then it stores regardless). It never
        waits for a subscriber directly: the consumer lags only while a connection that fell
        behind holds a full window, which the slow rule ends within ``slow_timeout``.

        Raises ValueError for an event name the protocol cannot carry (see
        :func:`~tbone.dispatch.events.valid_event_name`), TypeError (or ValueError) for ``data``
        that :mod:`tbone.dispatch.jsonenc` cannot encode and
        :class:`~tbone.dispatch.events.MessageTooLarge` over
        ``max_message_bytes``, both before anything is stored, so no subscriber ever sees a
        broken or oversized frame; and the backend's error when the write fails.
        """
        if not isinstance(event, str) or not event:
            raise TypeError(f"event name must be a non-empty str, got {event!r}")
        if not valid_event_name(event):  # no client could ever subscribe to it
            raise ValueError(f"cannot publish {event!r}: event names are {EVENT_NAME_RULE}")
        if not self.checks_size:
            self.check_size(event, jsonenc.dumps_bytes(data))
        if self._pending and (
            len(self._pending) >= self.queue_size or self._pending_bytes >= self.queue_bytes
        ):
            await self._wait_to_publish()
        stored = await self.store(event, data)
        self._counts["published"] += 1
        self._track(stored)
        return stored

    def _consuming(self) -> bool:
        consumer = self._consumer
        return (
            consumer is not None
            and not consumer.done()
            and consumer.get_loop() is asyncio.get_running_loop()
        )

    def expect(self, event: Event) -> None:
        """Count ``event`` as published here and not yet delivered, before it is stored.

        For backends whose ids carry no order (MongoDB): their consumer may deliver an event
        before the write returns. :meth:`publish` does it after the write for the others.
        """
        if self._consuming() and self._state == "running" and event.id not in self._pending:
            self._pending[event.id] = event.size
            self._pending_bytes += event.size

    def unexpect(self, event: Event) -> None:
        """The write of an :meth:`expect`-ed event failed: it will not be delivered."""
        size = self._pending.pop(event.id, None)
        if size is not None:
            self._pending_bytes -= size

    def _track(self, event: Event) -> None:
        # Remember what this process published until its consumer delivers it, so publishers
        # cannot run further ahead than queue_size (the backend's history could trim what the
        # consumer has not read yet). An event the consumer already delivered is not tracked.
        if self.expects_in_store or not self._consuming() or self._state != "running":
            return
        if self._last_id is not None:
            key = self.order_key(event.id)
            last = self.order_key(self._last_id)
            if key is not None and last is not None and key <= last:
                return
        self._pending[event.id] = event.size
        self._pending_bytes += event.size

    def _seen_pending(self, id: str) -> None:
        # The consumer delivered a local event: it and every older local one are done.
        pending = self._pending
        while pending:
            key, size = pending.popitem(last=False)
            self._pending_bytes -= size
            if key == id:
                break
        if not pending:
            self._pending_bytes = 0
        waiting = self._publishers
        if waiting is not None and (
            len(pending) < self.queue_size and self._pending_bytes < self.queue_bytes
        ):
            self._publishers = None
            if not waiting.done():
                waiting.set_result(None)

    def _drop_pending(self) -> None:
        # The consumer will not see those events (gap, close): nobody may wait for them.
        self._pending.clear()
        self._pending_bytes = 0
        waiting, self._publishers = self._publishers, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def _wait_to_publish(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        self._counts["publish_waits"] += 1
        while (
            len(self._pending) >= self.queue_size or self._pending_bytes >= self.queue_bytes
        ) and self._consuming():
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.warning(
                    "channel %r: publishing although the consumer is %d events behind "
                    "(waited publish_timeout=%.1fs)",
                    self.name,
                    len(self._pending),
                    self.publish_timeout,
                )
                return
            waiting = self._publishers
            if waiting is None or waiting.done():
                waiting = self._publishers = loop.create_future()
            await _wait_at_most(waiting, remaining)

    # -- delivering --------------------------------------------------------------------------

    def deliver(self, event: Event, *, now: bool = True) -> None:
        """Hand ``event`` to its subscribers (encoded once). Never blocks or raises.

        ``now`` False: more events follow at once (writers then send them in one go). A
        connection that is behind does not get the frame now: it reads it from the window
        later, in order. Called by the consumer loop; backends that have no loop of their own
        may call it (and should then await :meth:`make_room` when :attr:`blocked` is True).
        """
        self._fanout.deliver(event, now)
        self._last_id = event.id

    @property
    def blocked(self) -> bool:
        """True while the window is full and a connection behind still needs its oldest event."""
        return self._fanout.blocked

    async def make_room(self) -> None:
        """Wait until the window may drop its oldest event (see ``docs/channels.md``).

        The connections that hold it back are waited for at most ``slow_timeout`` in all
        since each of them fell behind (their own setting); one that has not moved on by then
        is closed with 1013 and the others go on. The consumer loop awaits this after an event
        that left the window blocked, so publishers slow down meanwhile.
        """
        await self._fanout.make_room()

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

    async def resume(
        self,
        carrier: Carrier,
        events: Iterable[str],
        since: str | None,
        *,
        history: bool = False,
        max_events: int = REPLAY_EVENTS,
        max_bytes: int = REPLAY_BYTES,
    ) -> bool:
        """Subscribe ``carrier`` to ``events`` and first send what it missed after ``since``.

        The carrier receives, for the names in ``events``: every held event after ``since``,
        then a ``recovered`` frame, then live events, none lost or repeated in between. Events
        of its other subscriptions go on as usual meanwhile: a resume touches only the events
        it names. History is read in pages and sent at the pace the connection reads, however
        long it is (the channel's history bounds it). Returns ``complete``: False only when
        events were lost, because history no longer reached back to ``since`` (see
        :meth:`history`) or was trimmed past the replay while it was sent (a connection that
        reads slower than the channel's events come). With ``since=None`` this is a plain
        subscribe and no ``recovered`` frame is sent, unless ``history`` is True: then the
        replay starts at the oldest event held. Resumes of one connection on one channel run
        one after the other.

        ``max_events`` and ``max_bytes`` are deprecated and have no effect: a replay is no
        longer capped (bound it with the channel's history instead).
        """
        if max_events != REPLAY_EVENTS or max_bytes != REPLAY_BYTES:
            warn_replay_cap("Channel.resume(max_events=, max_bytes=)", stacklevel=2)
        names = set(events)
        if since is None and not history:
            for name in names:
                self.subscribe(name, carrier)
            return True
        live = carrier.live() or carrier
        lock = self._resume_locks.setdefault(live, asyncio.Lock())
        try:
            async with lock:
                return await replay(self, self._fanout, live, names, since)
        finally:
            if not lock.locked() and self._resume_locks.get(live) is lock:
                del self._resume_locks[live]

    def subscription(self, *events: str, **options: Unpack[StreamOptions]) -> EventStream:
        """The events named ``events``, for code in this process::

            async with channel.subscription("a", "b") as events:
                async for event in events:
                    ...

        Bounded like a websocket subscriber (``max_messages``, ``max_bytes``,
        ``slow_timeout``, with a connection's defaults); ``since`` and ``history`` resume as
        :meth:`resume` does. See :class:`~tbone.dispatch.channels.stream.EventStream`.
        """
        return EventStream(self, events, **options)

    # -- running -----------------------------------------------------------------------------

    def kickoff(self) -> None:
        """Start the consumer loop if it is not running. Needs a running event loop."""
        consumer = self._consumer
        if consumer is not None:
            if consumer.get_loop() is not asyncio.get_running_loop():
                # A channel outlives event loops in tests and reloads: start afresh on this
                # one, also when the old loop cancelled its consumer as it shut down.
                self._reset_loop_state()
            elif not consumer.done():
                return
        self._state = "starting"
        self._ready = asyncio.Event()
        self._refused = asyncio.Event()
        self._fatal = None
        self._consumer = asyncio.get_running_loop().create_task(
            self._consume(), name=f"tbone channel {self.name!r}"
        )

    def mark_ready(self) -> None:
        """Say that :meth:`listen` reads from a fixed position: :meth:`ready` returns now.

        Backends call it in ``listen`` once the read position is fixed, before waiting for
        the first event (MemoryChannel, whose queue is the position, already in
        :meth:`kickoff`). The consumer calls it at the first event of a backend that does
        not. It also resets the backoff: the backend answers again.
        """
        self._state = "running"
        self._delay = self.backoff[0]  # the backend answers again: the next fault starts afresh
        self._fatal = None
        if self._refused is not None:
            self._refused.clear()
        if self._ready is not None:
            self._ready.set()

    async def ready(self, timeout: float | None = None) -> None:
        """Start the consumer if needed and wait until it reads the backend.

        Once this returns, every event published (from any process) reaches the current
        subscribers. Backends that start reading "from now" need a round trip for that; a
        subscriber that must not miss the first event after subscribing awaits this first.

        Raises :class:`~tbone.dispatch.errors.ChannelUnavailable`, naming the channel, the
        backend's last error and what to do: after ``timeout`` seconds without an answer
        (None: no bound; the consumer goes on retrying either way), at once when the
        consumer's last error is one that retrying cannot fix (:meth:`fatal_error`), and when
        the channel closes meanwhile.
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be seconds >= 0 or None, got {timeout!r}")
        self.kickoff()
        ready, refused, consumer = self._ready, self._refused, self._consumer
        assert ready is not None
        assert refused is not None
        assert consumer is not None
        if ready.is_set():
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        if not refused.is_set():
            waits = [loop.create_task(ready.wait()), loop.create_task(refused.wait())]
            try:
                # asyncio.wait: a timeout cancels nothing and a cancellation is never lost.
                await asyncio.wait(
                    [*waits, consumer], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiting in waits:
                    waiting.cancel()
            if ready.is_set():
                return
        waited = loop.time() - started
        if self._fatal is not None:
            reason, fix = "refused", self._fatal
        elif consumer.done():
            reason, fix = "closed", "start it again (subscribe, kickoff or ready)"
        else:
            reason = "timeout"
            fix = (
                "check that the backend runs and that the channel's address is right, or wait "
                "longer (the ready timeout)"
            )
        raise ChannelUnavailable(
            self.name,
            self.backend,
            reason,
            last_error=self._last_error,
            waited=timeout if reason == "timeout" and timeout is not None else waited,
            fix=fix,
        )

    def report_gap(self, reason: str) -> None:
        """The consumer skipped events it could not read (trimmed, rolled out): say so.

        Counted in ``stats()["gaps"]``, logged, and every subscribed connection is closed
        with 1013 so that its client resumes with ``since`` and learns from the ``recovered``
        frame that history is incomplete: never a silent gap.
        """
        self._counts["gaps"] += 1
        self._drop_pending()
        logger.warning(
            "channel %r: events were lost before the consumer read them (%s); closing %d "
            "connections with 1013 so that their clients resume",
            self.name,
            reason,
            len(self._fanout.subs),
        )
        self._fanout.close_all("events lost; resume")

    @property
    def last_id(self) -> str | None:
        """The id of the last event the consumer delivered (None before the first one).

        Where the consumer resumes: it calls ``listen(last_id)`` after a backend fault.
        """
        return self._last_id

    def on_new_loop(self) -> None:
        """Drop backend state bound to a previous event loop: clients, tasks, futures, queues.

        A channel outlives event loops (tests, reloads): :meth:`kickoff` calls this when it
        starts the consumer on a loop other than the one the last consumer ran on, after the
        channel dropped its own such state. The default does nothing.
        """

    def _reset_loop_state(self) -> None:
        self._consumer = None
        self._publishers = None
        self._pending.clear()
        self._pending_bytes = 0
        self._fanout.on_new_loop()
        self.on_new_loop()

    async def _consume(self) -> None:
        self._delay = self.backoff[0]
        handed = 0
        # An override of deliver(event) written for TBone gets no batching hint; one that
        # takes now= (as Channel.deliver does) gets it.
        hinted = "now" in inspect.signature(self.deliver).parameters
        while True:
            try:
                async for item in self.listen(self._last_id):
                    if self._state != "running":
                        self.mark_ready()  # for backends that never call it themselves
                    batch = (item,) if isinstance(item, Event) else item
                    last = len(batch) - 1
                    for index, event in enumerate(batch):
                        if hinted:
                            # Before a batch's last event, more follow at once: writers batch.
                            self.deliver(event, now=index == last)
                        else:
                            self.deliver(event)
                        # deliver() records it too; the position must not depend on an override.
                        self._last_id = event.id
                        if self._pending and event.id in self._pending:
                            self._seen_pending(event.id)
                        if self._fanout.blocked:
                            await self._fanout.make_room()
                        handed += 1
                        if handed % YIELD_EVERY == 0:
                            # A backlog of events is handed out in one go otherwise: let
                            # writers send and timers (the slow rule) run between slices of it.
                            await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._state = "reconnecting"
                self._last_error = f"{type(exc).__name__}: {exc}"
                self._counts["errors"] += 1
                self._fatal = self._fix_for(exc)
                refused = self._refused
                if self._fatal is None:
                    if refused is not None:
                        refused.clear()
                    logger.warning(
                        "channel %r: backend failed (%s); retrying in %.2fs",
                        self.name,
                        self._last_error,
                        self._delay,
                    )
                else:
                    if refused is not None:
                        refused.set()  # ready() fails now instead of waiting
                    logger.error(
                        "channel %r: backend refused (%s); retrying cannot fix this: %s "
                        "(retrying in %.2fs)",
                        self.name,
                        self._last_error,
                        self._fatal,
                        self._delay,
                    )
            self._counts["reconnects"] += 1
            # Full jitter: many processes that lost the same server do not return in step.
            delay = self._delay
            self._delay = min(delay * 2, self.backoff[1])
            await asyncio.sleep(random.uniform(delay / 2, delay))

    def _fix_for(self, exc: Exception) -> str | None:
        try:
            return self.fatal_error(exc)
        except Exception:  # a faulty hook must not stop the consumer: retry as usual
            logger.exception("channel %r: fatal_error() failed on %r", self.name, exc)
            return None

    async def close(self, *, forget: bool = False, timeout: float | None = None) -> None:
        """Stop the consumer and close every subscribed carrier with 1001 (going away).

        Awaits the consumer's end, the carriers' close handshakes and :meth:`close_backend`,
        leaving no task behind, and ends within ``timeout`` seconds (default
        :attr:`close_timeout`) whatever the backend or the peers do: a step that overruns (a
        server that stops answering, a peer that never reads) is logged at WARNING and left
        behind, and the next step goes on; :meth:`close_backend` gets at least a second. The
        channel stays registered and starts again on the next subscribe; with
        ``forget=True`` it is also removed from the registry, so its name can be reused.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.close_timeout if timeout is None else timeout)
        consumer, self._consumer = self._consumer, None
        if consumer is not None and not consumer.done():
            if consumer.get_loop() is loop:
                await self._stop_consumer(consumer, deadline)
            else:
                consumer.cancel()
        self._drop_pending()
        closing = asyncio.gather(
            *(c.close(CLOSE_GOING_AWAY, "channel closed") for c in list(self._fanout.subs)),
            return_exceptions=True,
        )
        await self._within(closing, deadline - loop.time(), "closing its subscribers")
        self._fanout.forget_all()  # in case a carrier's close failed early
        await self._within(wait_closing(), deadline - loop.time(), "closing slow subscribers")
        await self._within(
            self.close_backend(), max(1.0, deadline - loop.time()), "closing the backend"
        )
        self._state = "closed"
        if forget:
            registry.forget(self)

    async def _stop_consumer(self, consumer: asyncio.Task[None], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while not consumer.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.warning(
                    "channel %r: the consumer did not stop within the close timeout; "
                    "leaving it behind",
                    self.name,
                )
                return
            # Cancelled again each second: library code we await may lose a cancellation
            # (asyncio.wait_for before Python 3.12; see tbone.dispatch.timeouts).
            consumer.cancel()
            await asyncio.wait((consumer,), timeout=min(remaining, 1.0))

    async def _within(self, step: Awaitable[Any], timeout: float, what: str) -> None:
        try:
            await wait_at_most(step, max(timeout, 0.0))
        except TimeoutError:
            logger.warning(
                "channel %r: %s did not finish within the close timeout; going on", self.name, what
            )

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
        ``closed_slow``: connections closed with 1013; ``refused``: publishes over
        ``max_message_bytes``; ``lagging``: connections reading from the window now;
        ``lagged``: times a connection fell behind; ``window``: events the window holds;
        ``waits`` and ``waited_s``: times and seconds the consumer waited for a full window;
        ``pending``: events this process published that its consumer has not delivered;
        ``publish_waits``: publishes that waited for the consumer; ``gaps``: times the
        consumer found events lost before it read them; ``reconnects``: consumer restarts;
        ``errors``: backend failures; ``consumer``: idle, starting, running, reconnecting or
        closed; ``last_error`` and ``last_id``.
        """
        return {
            "name": self.name,
            "backend": self.backend,
            "subscribers": len(self._fanout.subs),
            "subscriptions": sum(len(s) for s in self._fanout.by_event.values()),
            **self._counts,
            "lagging": len(self._fanout.lagging),
            "window": len(self._fanout.window),
            "waited_s": round(self._fanout.waited, 3),
            "pending": len(self._pending),
            "consumer": self._state,
            "last_error": self._last_error,
            "last_id": self._last_id,
        }


def page_of(history: History, limit: int, max_bytes: int) -> History:
    """The first page of ``history``: at most ``limit`` events and ``max_bytes`` (one at least)."""
    events: list[Event] = []
    total = 0
    for event in history.events:
        if len(events) >= limit or (events and total + event.size > max_bytes):
            return History(events, history.complete, more=True)
        events.append(event)
        total += event.size
    return History(events, history.complete)


async def _wait_at_most(future: asyncio.Future[None], timeout: float) -> None:
    # asyncio.wait neither cancels the shared future on timeout nor raises.
    await asyncio.wait((future,), timeout=timeout)


def get_channel(name: str) -> Channel | None:
    """The channel registered under ``name`` in this process, or None."""
    return cast("Channel | None", registry.lookup(name))


def registered_channels() -> list[Channel]:
    """Every channel registered in this process, in creation order (metrics, health checks)."""
    return cast("list[Channel]", registry.every())


def clear_registry() -> None:
    """Forget every channel without closing them (tests; prefer :func:`close_all_channels`)."""
    registry.clear()


async def close_all_channels(*, timeout: float | None = None) -> None:
    """Close every registered channel and empty the registry (app shutdown, test teardown).

    The channels close one after the other, each within ``timeout`` (see :meth:`Channel.close`).
    """
    channels = registered_channels()
    registry.clear()
    for channel in channels:
        await channel.close(timeout=timeout)
