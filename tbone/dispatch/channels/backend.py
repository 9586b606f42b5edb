"""The backend contract: the hooks a subclass of ``Channel`` implements or may override
(:class:`BackendHooks`), and the calls it makes on its channel (:class:`BackendCalls`).

``docs/channels.md`` ("A custom backend") states the contract and runs an example backend in
the test suite. Required: :meth:`BackendHooks.store`, :meth:`BackendHooks.listen`,
:meth:`BackendHooks.read_history`. Optional: :meth:`BackendHooks.history_page`,
:meth:`BackendHooks.order_key`, :meth:`BackendHooks.fatal_error`,
:meth:`BackendHooks.on_new_loop`, :meth:`BackendHooks.close_backend`. A backend calls
:meth:`BackendCalls.mark_ready` in ``listen``, and may call the others of
:class:`BackendCalls`; nothing else of ``Channel``'s internals.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from tbone.dispatch.events import Event, History

if TYPE_CHECKING:
    from tbone.dispatch.channels.consumer import Consumer
    from tbone.dispatch.channels.counters import Counters
    from tbone.dispatch.channels.fanout import Fanout
    from tbone.dispatch.channels.gate import PublishGate

__all__ = ["BackendCalls", "BackendHooks", "page_of"]

logger = logging.getLogger("tbone.dispatch.channels")


class BackendCalls:
    """What a backend may call on its channel (the parts are set by ``Channel.__init__``)."""

    name: str
    _counters: Counters
    _gate: PublishGate
    _fanout: Fanout
    _run: Consumer

    def check_size(self, name: str, payload: bytes) -> None:
        """Raise MessageTooLarge if ``name`` plus the JSON ``payload`` is over the limit."""
        self._gate.check_size(name, payload)

    def expect(self, event: Event) -> None:
        """Count ``event`` as published here and not yet delivered, before it is stored.

        For backends whose ids carry no order (MongoDB): their consumer may deliver an event
        before the write returns. :meth:`publish` does it after the write for the others.
        """
        self._gate.expect(event)

    def unexpect(self, event: Event) -> None:
        """The write of an :meth:`expect`-ed event failed: it will not be delivered."""
        self._gate.unexpect(event)

    def deliver(self, event: Event, *, now: bool = True) -> None:
        """Hand ``event`` to its subscribers (:meth:`Fanout.deliver
        <tbone.dispatch.channels.fanout.Fanout.deliver>`). Never blocks or raises.

        Called by the consumer loop; backends that have no loop of their own may call it (and
        should then await :meth:`make_room` when :attr:`blocked` is True).
        """
        self._fanout.deliver(event, now)
        self._run.last_id = event.id

    @property
    def blocked(self) -> bool:
        """True while the window is full and a connection behind still needs its oldest event."""
        return self._fanout.blocked

    async def make_room(self) -> None:
        """Wait until the window may drop its oldest event (``docs/channels.md``, "Flow
        control": holding the window)."""
        await self._fanout.make_room()

    def mark_ready(self) -> None:
        """Say that :meth:`listen` reads from a fixed position: :meth:`ready` returns now.

        Backends call it in ``listen`` before waiting for the first event; the consumer calls
        it at the first event of a backend that does not. It also resets the backoff.
        """
        self._run.mark_ready()

    def report_gap(self, reason: str) -> None:
        """The consumer skipped events it could not read (trimmed, rolled out): say so.

        Counted, logged, and every subscribed connection closed with 1013 so that its client
        resumes and learns that history is incomplete (``docs/channels.md``, "Gaps").
        """
        self._counters.gaps += 1
        self._gate.drop()
        logger.warning(
            "channel %r: events were lost before the consumer read them (%s); closing %d "
            "connections with 1013 so that their clients resume",
            self.name,
            reason,
            len(self._fanout.members),
        )
        self._fanout.close_all("events lost; resume")

    @property
    def last_id(self) -> str | None:
        """The id of the last event the consumer delivered (None before the first one).

        Where the consumer resumes: it calls ``listen(last_id)`` after a backend fault.
        """
        return self._run.last_id

    def _count(self, key: str, n: int = 1) -> None:
        self._counters.add(key, n)


class BackendHooks(abc.ABC):
    """The hooks of a backend; ``Channel`` calls them, a backend implements them."""

    @abc.abstractmethod
    async def store(self, name: str, data: Any) -> Event:
        """Write one event to the backend and return it with its backend-given id.

        Called by ``publish``, which has checked the size (unless the backend sets
        ``checks_size`` and calls ``check_size`` here itself, with the data it encodes
        anyway). Raise to fail this publish only (nothing stored, or the backend's error when
        it cannot tell). A backend that keeps JSON text returns
        ``Event.from_json(name, payload, id, self.name, data=data)``.
        """

    @abc.abstractmethod
    def listen(self, after: str | None) -> AsyncIterator[Event | Sequence[Event]]:
        """Yield the backend's events in order, starting after id ``after`` (None: from now).

        Yield single events, or batches (a sequence of events at hand together, such as one
        read's answer): the consumer delivers a batch's events one after the other and tells
        writers that more follow at once, so each sends them as one batch. Every event is
        yielded once, in the channel's order.

        Call ``mark_ready`` once the read position is fixed (for "from now", once the
        backend has answered where "now" is), so that ``ready`` can tell callers when an
        event they publish is sure to be seen; a backend that does not is taken as ready at
        its first yield. Raising or returning ends this attempt: the consumer waits (with
        backoff) and calls ``listen`` again with ``last_id``, the last event it delivered.
        The consumer may pause at a yield (flow control, or to let other tasks run): the
        backend then simply reads on later, so hold no lock or transaction across a yield.
        It asks for the next item only once it delivered every event of the previous one,
        and stops in the middle of a batch only when the channel closes.
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

    def order_key(self, id: str) -> Any:
        """A sort key for event ids of this channel, or None when ids carry no order.

        Resume uses it to skip live events that history already gave; without it, it skips
        by id until the first event that history did not hold.
        """
        return None

    def fatal_error(self, exc: Exception) -> str | None:
        """What to do about ``exc`` when retrying cannot fix it; None for a fault that may pass.

        The consumer asks this about each error of :meth:`listen`. A backend that is down, a
        timeout, a dropped link: None (the default), and the consumer retries with backoff. A
        bad password, a database that does not exist, an address the client library refuses:
        the fix, in a few words ("check the password in the URL"). The consumer still retries
        (the server's settings may change), but ``ready`` fails at once with
        :class:`~tbone.dispatch.errors.ChannelUnavailable` instead of waiting, and the
        error is logged at ERROR with the fix.
        """
        return None

    def on_new_loop(self) -> None:
        """Drop backend state bound to a previous event loop: clients, tasks, futures, queues.

        A channel outlives event loops (tests, reloads): ``kickoff`` calls this when it
        starts the consumer on a loop other than the one the last consumer ran on, after the
        channel dropped its own such state. The default does nothing.
        """
        return

    async def close_backend(self) -> None:
        """Release backend resources (connections, cursors). Called by ``close``."""
        return


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
