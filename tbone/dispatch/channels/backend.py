"""The backend contract: the hooks a subclass of ``Channel`` implements or may override.

``docs/channels.md`` ("A custom backend") states the contract and runs an example backend in
the test suite. Required: :meth:`BackendHooks.store`, :meth:`BackendHooks.listen`,
:meth:`BackendHooks.read_history`. Optional: :meth:`BackendHooks.history_page`,
:meth:`BackendHooks.order_key`, :meth:`BackendHooks.fatal_error`,
:meth:`BackendHooks.on_new_loop`, :meth:`BackendHooks.close_backend`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from typing import Any

from tbone.dispatch.events import Event, History

__all__ = ["BackendHooks", "page_of"]


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
