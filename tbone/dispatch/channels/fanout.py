"""Fan-out: a channel's subscriptions, and how one event reaches each subscribed connection.

A :class:`Fanout` belongs to one channel. It keeps one :class:`Membership` per connection
(the event names it wants, where it is in the catch-up window when it is behind, a resume in
progress), and hands each event to the connections subscribed to its name, in order.

Rules (stated in ``docs/channels.md``, "Flow control"):

* An event's frame is encoded once and offered to every subscribed connection's outbox; a
  connection that is *behind* (``Carrier.behind``) gets it later from the catch-up window
  (:mod:`tbone.dispatch.channels.window`), in order, when its writer has room again.
* When the window is full and a connection still needs its oldest event, :attr:`Fanout.blocked`
  is True and the consumer awaits :meth:`Fanout.make_room`, which waits for that connection
  at most its ``slow_timeout`` in all and then closes it with 1013.
* :class:`Membership` is the channel's side of the carrier contract
  (:class:`tbone.dispatch.carriers.Link`): the carrier calls ``refill()`` when it has room
  and ``carrier_closed(how)`` when it closed. Looking a connection up is one dict access (carriers
  hash by connection), so ``unsubscribe`` is O(1).

Two switches, both explicit:

* The fast path. For a carrier whose class overrides none of :data:`FAST_PATH_BYPASSES`,
  :meth:`Fanout.deliver` tests the outbox inline (``Carrier.behind``'s test, without the
  property call) and calls ``offer`` directly (``Carrier.offer_event``'s body). A class
  that overrides either (an in-process subscriber, a carrier with its own idea of behind)
  gets its own methods called, whatever else it overrides (:func:`takes_frames`).
* :attr:`Fanout.flow_control`. False offers every frame at once, with no behind test, lag
  or window: a connection that stops reading fills its outbox until it overflows and is
  closed with 1013, as before flow control existed. Only for measuring what flow control
  costs (the ``tbone (no flow control)`` row of ``python -m bench fanout``); never in a
  server.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, ClassVar, Protocol

from tbone.dispatch.carriers import Carrier
from tbone.dispatch.channels.window import Lag, Window

if TYPE_CHECKING:
    from tbone.dispatch.carriers import Closed
    from tbone.dispatch.channels.counters import Counters
    from tbone.dispatch.events import Event

__all__ = [
    "FAST_PATH_BYPASSES",
    "Fanout",
    "Interceptor",
    "Membership",
    "takes_frames",
]

logger = logging.getLogger("tbone.dispatch.channels")


#: The Carrier members the fast path of :meth:`Fanout.deliver` inlines (``behind``) or
#: goes around (``offer_event``, for ``offer``).
FAST_PATH_BYPASSES = ("behind", "offer_event")


def takes_frames(cls: type[Carrier]) -> bool:
    """True when carriers of ``cls`` may take the fast path: it overrides none of
    :data:`FAST_PATH_BYPASSES` (see the module docstring)."""
    return all(getattr(cls, name) is getattr(Carrier, name) for name in FAST_PATH_BYPASSES)


class Interceptor(Protocol):
    """A resume in progress on a connection (:class:`tbone.dispatch.channels.resume.Hold`)."""

    def intercept(self, event: Event) -> bool:
        """True when ``event`` must not be offered now (kept aside, or already replayed)."""


class Membership:
    """One connection's subscriptions on one channel (a :class:`~tbone.dispatch.carriers.Link`).

    ``carrier`` is the connection's live carrier, ``events`` the names it is subscribed to,
    ``lag`` its place in the window while it is behind (else None), ``hold`` a resume in
    progress (else None).
    """

    __slots__ = ("carrier", "events", "fanout", "frames", "hold", "lag")

    def __init__(self, fanout: Fanout, carrier: Carrier) -> None:
        self.fanout = fanout
        self.carrier = carrier
        self.events: set[str] = set()
        self.lag: Lag | None = None
        self.hold: Interceptor | None = None
        #: The carrier's class takes the fast path (:func:`takes_frames`).
        self.frames = True

    def __repr__(self) -> str:
        return f"<Membership {self.fanout.name!r} {self.carrier!r} {sorted(self.events)}>"

    def refill(self) -> None:
        """The carrier has room again: queue the events it lags on."""
        self.fanout.refill(self)

    def carrier_closed(self, how: Closed) -> None:
        """The carrier closed and left every channel."""
        self.fanout.closed(self, how)

    closed = carrier_closed  # the name before Link's callback was told from Carrier.closed


class Fanout:
    """The subscriptions of channel ``name`` and the delivery of its events to them.

    ``counts`` is the channel's :class:`~tbone.dispatch.channels.counters.Counters` (this
    adds to ``delivered``, ``lagged``, ``closed_slow``, ``dropped``, ``waits``); ``window``
    and ``window_bytes`` bound the catch-up window.
    """

    #: False: no flow control in :meth:`deliver` (see the module docstring; benchmarks only).
    flow_control: ClassVar[bool] = True

    def __init__(self, name: str, counts: Counters, window: int, window_bytes: int) -> None:
        self.name = name
        self.counts = counts
        self.window = Window(window, window_bytes)
        self.members: dict[Carrier, Membership] = {}  # by connection
        self.by_event: dict[str, dict[Membership, None]] = {}  # in subscription order
        self.lagging: dict[Membership, None] = {}  # connections reading from the window
        self.blocked = False  # the window is full and a lagging connection needs its oldest
        self.waited = 0.0  # seconds make_room() waited in all
        self._room: asyncio.Future[None] | None = None  # make_room() waiting for the window

    # -- subscribing -------------------------------------------------------------------------

    def subscribe(self, event: str, carrier: Carrier) -> Membership:
        """Send ``event`` events to the connection of ``carrier`` from now on (idempotent)."""
        sub = self.members.get(carrier)
        if sub is None:
            sub = Membership(self, carrier)
            sub.carrier = carrier.bind(sub)  # raises ValueError when the carrier is closed
            sub.frames = takes_frames(type(sub.carrier))
            self.members[sub.carrier] = sub
        if event not in sub.events:
            sub.events.add(event)
            self.by_event.setdefault(event, {})[sub] = None
            if sub.lag is not None:
                sub.lag.toggle(event, True, self.window.end)
        return sub

    def unsubscribe(self, event: str, carrier: Carrier) -> bool:
        """Stop sending ``event`` events to the connection of ``carrier``. True if it was on."""
        sub = self.members.get(carrier)
        if sub is None or event not in sub.events:
            return False
        sub.events.discard(event)
        subs = self.by_event[event]
        del subs[sub]
        if not subs:
            del self.by_event[event]
        if sub.lag is not None:
            # Events delivered before this call still reach it from the window.
            sub.lag.toggle(event, False, self.window.end)
        elif not sub.events:
            self._leave(sub)
        return True

    def membership(self, carrier: Carrier) -> Membership | None:
        """The membership of the connection of ``carrier``, or None."""
        return self.members.get(carrier)

    def _leave(self, sub: Membership) -> None:
        # Nothing subscribed and nothing held back: the connection leaves this channel.
        if self.members.get(sub.carrier) is sub:
            del self.members[sub.carrier]
        sub.hold = None
        sub.carrier.unbind(sub)

    def closed(self, sub: Membership, how: Closed) -> None:
        """The carrier of ``sub`` closed (and left every channel): drop its entries."""
        if how == "slow":
            self.counts.closed_slow += 1
        elif how == "failed":
            self.counts.dropped += 1
        if self.members.get(sub.carrier) is sub:
            del self.members[sub.carrier]
        for event in sub.events:
            subs = self.by_event.get(event)
            if subs is not None:
                subs.pop(sub, None)
                if not subs:
                    del self.by_event[event]
        sub.events = set()
        sub.hold = None
        if sub.lag is not None:
            sub.lag = None
            del self.lagging[sub]
            self._lag_changed()

    def close_all(self, reason: str) -> None:
        """Close every connection with 1013 without waiting (the channel lost events)."""
        for sub in list(self.members.values()):
            sub.carrier.close_soon(reason, slow=False)

    # -- delivering --------------------------------------------------------------------------

    def deliver(self, event: Event, now: bool = True) -> None:
        """Offer ``event`` to its subscribers. Never blocks or raises.

        ``now`` False: more events follow at once, so frames queue and each writer sends them
        in one go. A connection that is behind does not get the frame now: it reads it from
        the window later, in order. With :attr:`flow_control` False, every frame is offered.
        """
        if not self.flow_control:
            self._offer_all(event, now)
            return
        lagging = self.lagging
        seq = self.window.append(event) if lagging else -1
        subs = self.by_event.get(event.name)
        if subs:
            size = event.size  # (encodes the frame, once)
            delivered = 0
            for sub in tuple(subs):
                if sub.lag is not None:
                    continue  # it takes this event from the window when it gets there
                hold = sub.hold
                if hold is not None and hold.intercept(event):
                    continue
                carrier = sub.carrier
                if sub.frames:
                    # Carrier.behind, inline: this runs per delivery, and a burst keeps
                    # outboxes non-empty (a property call here costs ~10% of a delivery).
                    outbox = carrier.outbox
                    if not outbox or (
                        len(outbox) * 2 < carrier.max_messages
                        and carrier.queued_bytes * 2 < carrier.max_bytes
                    ):
                        if carrier.offer(event, size, now=now):
                            delivered += 1
                        continue
                elif not carrier.behind:
                    if carrier.offer_event(event, now=now):
                        delivered += 1
                    continue
                if seq < 0:
                    seq = self.window.append(event)
                self._start_lag(sub, seq)
            self.counts.delivered += delivered
        if seq >= 0 and self.window.over():
            self._evict()

    def _offer_all(self, event: Event, now: bool) -> None:
        # deliver() with flow control off: no lag, no behind test, no window.
        subs = self.by_event.get(event.name)
        if subs:
            size = event.size
            delivered = 0
            for sub in tuple(subs):
                hold = sub.hold
                if hold is not None and hold.intercept(event):
                    continue
                if sub.frames:
                    if sub.carrier.offer(event, size, now=now):
                        delivered += 1
                elif sub.carrier.offer_event(event, now=now):
                    delivered += 1
            self.counts.delivered += delivered

    def _start_lag(self, sub: Membership, seq: int) -> None:
        sub.lag = Lag(seq, sub.events)
        self.lagging[sub] = None
        self.counts.lagged += 1
        sub.carrier.lag(sub)

    def refill(self, sub: Membership) -> None:
        """Called by a lagging connection's writer with room again: queue what follows."""
        carrier = sub.carrier
        lag = sub.lag
        if lag is None:
            carrier.unlag(sub)
            return
        window = self.window
        at_tail = lag.cursor <= window.first
        seq, end = lag.cursor, window.end
        delivered = 0
        while seq < end and not carrier.behind:
            event = window.get(seq)
            seq += 1
            if not lag.wants(event.name, seq - 1):
                continue
            hold = sub.hold
            if hold is not None and hold.intercept(event):
                continue
            if not carrier.offer_event(event, now=False):
                return  # closed: it left every channel
            delivered += 1
        lag.cursor = seq
        self.counts.delivered += delivered
        if seq >= end:  # caught up: live again
            sub.lag = None
            del self.lagging[sub]
            carrier.unlag(sub)
            if not sub.events:  # unsubscribed from all while behind
                self._leave(sub)
            self._lag_changed()
        elif at_tail and self._room is not None:
            _resolve(self._room)

    def _lag_changed(self) -> None:
        if not self.lagging:
            self.window.clear()
            self.blocked = False
        if self._room is not None:
            _resolve(self._room)

    def _evict(self) -> None:
        window = self.window
        if not self.lagging:
            window.clear()
            self.blocked = False
            return
        window.evict_before(min(sub.lag.cursor for sub in self.lagging if sub.lag is not None))
        self.blocked = window.over()

    async def make_room(self) -> None:
        """Wait until the window may drop its oldest event (see the module docstring).

        The connections that hold it back are waited for at most ``slow_timeout`` in all
        since each of them fell behind (their own setting); one that has not moved on by then
        is closed with 1013 and the others go on.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.counts.waits += 1
        try:
            while True:
                self._evict()
                if not self.blocked:
                    return
                first = self.window.first
                holding = [
                    (sub, sub.lag)
                    for sub in self.lagging
                    if sub.lag is not None and sub.lag.cursor <= first
                ]
                budget = min(sub.carrier.slow_timeout - lag.held for sub, lag in holding)
                begun = loop.time()
                if budget > 0:
                    room = self._room = loop.create_future()
                    try:
                        await asyncio.wait((room,), timeout=budget)  # never cancels `room`
                    finally:
                        self._room = None
                waited = loop.time() - begun
                for sub, lag in holding:
                    if sub.lag is not lag:
                        continue  # moved on or left
                    if sub.carrier.closed:  # closed without leaving (a subclass's close)
                        self.closed(sub, "closed")
                        continue
                    lag.held += waited
                    if lag.held >= sub.carrier.slow_timeout and lag.cursor <= self.window.first:
                        logger.info(
                            "channel %r: %r held the window full for %.1fs (slow_timeout); "
                            "closing it with 1013",
                            self.name,
                            sub.carrier,
                            lag.held,
                        )
                        sub.carrier.close_soon("subscriber too slow")
        finally:
            self.waited += loop.time() - started

    def on_new_loop(self) -> None:
        """Drop a wait of :meth:`make_room` left by an event loop that ended."""
        self._room = None

    def forget_all(self) -> None:
        """Drop every entry (the channel closed its carriers; some may not have left)."""
        for sub in list(self.members.values()):
            self.closed(sub, "closed")
        self.lagging.clear()
        self._lag_changed()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
