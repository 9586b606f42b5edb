"""The catch-up window: recent events kept for connections that fell behind.

A connection that is behind (``Carrier.behind``; the thresholds are stated in
``docs/channels.md``, "Flow control") stops receiving frames at delivery time; it *lags*: the
channel remembers where it stopped (a cursor into this window) and its writer task takes the
following events from the window once it has room again (``Link.refill``). The
window is shared by every lagging connection of a channel, so a burst costs one reference per
event, not one queued frame per event per connection. It is only kept while some connection
lags.

Rules (``docs/channels.md``, "Flow control"):

* Events enter in delivery order and are numbered (``seq``) consecutively.
* The window holds at most ``max_events`` events and ``max_bytes`` bytes of frames; beyond
  that the oldest goes, unless a lagging connection still needs it. Then the consumer waits
  (and so do publishers) until that connection has moved past it, or is closed as too slow.
* A lagging connection receives, in order, exactly the events it would have received live:
  subscriptions changed while it lags take effect at the point of the stream where they were
  made (:meth:`Lag.toggle`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tbone.dispatch.events import Event

__all__ = ["Lag", "Window"]


class Window:
    """Events in delivery order, numbered from :attr:`first` to :attr:`end` (exclusive)."""

    __slots__ = ("_events", "_head", "base", "bytes", "max_bytes", "max_events")

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        # A list with a moving head: O(1) access by seq, O(1) eviction, compacted now and then.
        self._events: list[Event | None] = []
        self._head = 0
        self.base = 0  # seq of _events[0]
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._events) - self._head

    @property
    def first(self) -> int:
        """The seq of the oldest event held."""
        return self.base + self._head

    @property
    def end(self) -> int:
        """The seq the next event will get."""
        return self.base + len(self._events)

    def append(self, event: Event) -> int:
        """Add ``event``; return its seq."""
        seq = self.end
        self._events.append(event)
        self.bytes += event.size
        return seq

    def get(self, seq: int) -> Event:
        assert seq >= self.first, "read below the window"
        event = self._events[seq - self.base]
        assert event is not None
        return event

    def over(self) -> bool:
        """True while the window holds more than its bounds allow."""
        return len(self) > self.max_events or (self.bytes > self.max_bytes and len(self) > 1)

    def evict_before(self, seq: int) -> None:
        """Drop the oldest events while over the bounds, never ``seq`` or later."""
        events = self._events
        while self.over() and self.first < seq:
            event = events[self._head]
            assert event is not None
            self.bytes -= event.size
            events[self._head] = None
            self._head += 1
        if self._head > 1024 and self._head * 2 > len(events):
            del events[: self._head]
            self.base += self._head
            self._head = 0

    def clear(self) -> None:
        """Forget every event (nobody lags any more); numbering goes on."""
        self.base = self.end
        self._events = []
        self._head = 0
        self.bytes = 0


class Lag:
    """Where a lagging connection is in the window, and what it wants from there on.

    ``names``: its subscriptions when it started lagging. A later subscribe or unsubscribe is
    recorded with the seq it happened at, so events before it are judged by the old state and
    events after it by the new one. ``held``: seconds the consumer has waited for this
    connection to free the window since it started lagging (see ``Fanout.make_room``).
    """

    __slots__ = ("cursor", "held", "names", "toggles")

    def __init__(self, cursor: int, names: set[str]) -> None:
        self.cursor = cursor
        self.held = 0.0
        self.names = frozenset(names)
        self.toggles: dict[str, list[int]] | None = None

    def wants(self, name: str, seq: int) -> bool:
        """Whether the event ``name`` at ``seq`` is for this connection."""
        on = name in self.names
        if self.toggles is not None:
            for at in self.toggles.get(name, ()):
                if at > seq:
                    break
                on = not on
        return on

    def toggle(self, name: str, subscribed: bool, at: int) -> None:
        """The subscription to ``name`` became ``subscribed`` from seq ``at`` on."""
        if self.wants(name, at) == subscribed:
            return
        if self.toggles is None:
            self.toggles = {}
        self.toggles.setdefault(name, []).append(at)
