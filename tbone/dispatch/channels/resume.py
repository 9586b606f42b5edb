"""Resume: send a connection what it missed after an id, then hand it over to live events.

For the event names ``X`` of one resume, in order: every event of ``X`` that history holds
after ``since``, a ``recovered`` frame, then live events of ``X``, none lost or repeated at the
seam. Events of the connection's other subscriptions are never held, filtered or delayed: the
resume touches only ``X``.

How (``docs/channels.md``, "Ids, history and resume"):

1. A :class:`Hold` is put on the connection for ``X``: from now on the live events of ``X``
   that the consumer hands to it are kept aside (at most its outbox's low-water mark,
   ``docs/channels.md#flow-control``; past that they are dropped, and step 2 reads them from
   history again).
2. History is read in pages after ``since`` (:meth:`Channel.history_page`), each at most half
   of the connection's ``max_bytes``, and sent at the pace the connection reads
   (:meth:`Carrier.room`). Pages go on while history has more, or while live events were
   dropped in step 1 since the page was read: there is no cap on one replay, whose length is
   bounded by the channel's history. It ends in one of three ways: it caught up; a page finds
   that history was trimmed past its cursor (the connection reads slower than events come:
   what was trimmed is lost, and ``complete`` says so); or the connection is closed by the
   slow rule (1013) while it waits for room.
3. The ``recovered`` frame goes out, then the held events that history did not already give.
   Live events that history gave (a consumer behind the backend delivers them late) are
   skipped until the first new one.

``complete`` is False only when events were lost: history no longer reached back to
``since``, or was trimmed past the replay's cursor as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection
from typing import TYPE_CHECKING, Any, Protocol

from tbone.dispatch.events import Event, History, recovered_frame

if TYPE_CHECKING:
    from tbone.dispatch.carriers import Carrier
    from tbone.dispatch.channels.fanout import Fanout, Membership

__all__ = [
    "PAGE_EVENTS",
    "REPLAY_BYTES",
    "REPLAY_EVENTS",
    "Hold",
    "ResumeLocks",
    "Source",
    "replay",
    "warn_replay_cap",
]

#: The most events one history page holds (its bytes are bounded by the connection's outbox).
PAGE_EVENTS = 1000

#: The defaults of the deprecated replay caps (``Limits.max_replay_events`` and
#: ``max_replay_bytes``, ``Channel.resume(max_events=, max_bytes=)``), which have no effect.
REPLAY_EVENTS = 10_000
REPLAY_BYTES = 16 * 1024 * 1024


def warn_replay_cap(what: str, stacklevel: int = 1) -> None:
    """Warn that ``what``, a replay cap, is deprecated; ``stacklevel`` as for warnings.warn
    called where this is called."""
    warnings.warn(
        f"{what} is deprecated and has no effect: a resume sends every event the channel's "
        "history holds after since, page by page at the pace the client reads. Bound a "
        "resume's work with the channel's history instead: MemoryChannel(history=, "
        "history_bytes=), RedisChannel(maxlen=), MongoChannel(capacity=, size=)",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )


class ResumeLocks:
    """One lock per connection: the resumes of one connection on a channel run one at a time."""

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[Carrier, asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def held(self, carrier: Carrier) -> AsyncIterator[None]:
        """Hold the lock of ``carrier``'s connection; it is forgotten once nobody wants it."""
        lock = self._locks.setdefault(carrier, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(carrier) is lock:
                del self._locks[carrier]


class Source(Protocol):
    """What a resume needs of its channel."""

    name: str
    history_size: int

    def subscribe(self, event: str, carrier: Carrier) -> None: ...

    async def ready(self) -> None: ...

    async def history_page(self, since: str | None, *, limit: int, max_bytes: int) -> History: ...

    def order_key(self, id: str) -> Any: ...


class Hold:
    """Live events of the names being resumed, kept aside until the replay is out."""

    __slots__ = (
        "buffer",
        "buffered_bytes",
        "dropped",
        "filtering",
        "last_key",
        "max_bytes",
        "max_events",
        "names",
        "order_key",
        "seen",
        "sub",
    )

    def __init__(self, sub: Membership, names: set[str], order_key: Callable[[str], Any]) -> None:
        self.sub = sub
        self.order_key = order_key
        self.names = names
        carrier = sub.carrier
        self.buffer: list[Event] | None = []  # None once released
        self.buffered_bytes = 0
        self.max_events = max(1, carrier.max_messages // 4)
        self.max_bytes = max(1, carrier.max_bytes // 4)
        self.dropped = 0  # times the buffer overflowed and was emptied
        self.filtering = False
        self.last_key: Any = None
        self.seen: set[str] = set()

    def intercept(self, event: Event) -> bool:
        """True when ``event`` must not be offered now (held, or already sent by the replay)."""
        if event.name not in self.names:
            return False
        buffer = self.buffer
        if buffer is not None:
            buffer.append(event)
            self.buffered_bytes += event.size
            if len(buffer) > self.max_events or self.buffered_bytes > self.max_bytes:
                # History holds them too: the replay reads them again instead.
                buffer.clear()
                self.buffered_bytes = 0
                self.dropped += 1
            return True
        if self.filtering:
            if self._duplicate(event):
                return True
            self.filtering = False  # past the end of what was replayed: everything is new
        self._done()
        return False

    def release(self, last_id: str | None, replayed: Collection[str]) -> list[Event]:
        """The replay is out (``last_id`` the newest event it read): the held events to send.

        From here on live events that the replay already covered are skipped, up to the
        first new one. ``replayed``: the ids of the newest events it sent (and ``since``), for
        ids that carry no order.
        """
        key = None if last_id is None else self.order_key(last_id)
        if key is not None:
            self.last_key = key
        else:
            self.seen = set(replayed)
        self.filtering = key is not None or bool(self.seen)
        waiting, self.buffer = self.buffer or [], None
        fresh: list[Event] = []
        for event in waiting:
            if self.filtering and self._duplicate(event):
                continue
            self.filtering = False
            fresh.append(event)
        if not self.filtering:
            self._done()
        return fresh

    def _duplicate(self, event: Event) -> bool:
        if self.last_key is not None:
            key = self.order_key(event.id)
            return key is not None and key <= self.last_key
        return event.id in self.seen

    def _done(self) -> None:
        if self.sub.hold is self:
            self.sub.hold = None


async def replay(
    channel: Source,
    fanout: Fanout,
    carrier: Carrier,
    names: set[str],
    since: str | None,
) -> bool:
    """Resume ``carrier`` on ``names`` (at least one) of ``channel`` after ``since``.

    ``since`` None: from the oldest event held.

    See the module docstring. Returns ``complete``. Raises ValueError (before anything is
    sent, with the subscriptions it made left in place for the caller to undo) when the
    channel cannot read ``since``.
    """
    for name in names:
        channel.subscribe(name, carrier)
    sub = fanout.membership(carrier)
    if sub is None:  # nothing to resume, or the carrier closed
        return True
    # Set before any await: no live event of `names` can pass before the hold is on.
    hold = sub.hold = Hold(sub, names, channel.order_key)
    carrier = sub.carrier
    # Ids of the events sent, for a backend whose ids carry no order (MongoDB): Hold.release
    # skips the live events among them. Only the newest are kept. The live events the replay
    # may repeat are those the consumer hands over after the hold last overflowed, and they
    # follow the channel's order as the replay does, so they are the end of the replay: the
    # ones held then (at most the hold's bound) and the ones stored before history was last
    # read that the consumer had not read yet. Those are fewer than history holds: a consumer
    # that far behind finds its position trimmed, a gap that closes every connection.
    # (`since` too: the consumer may not have delivered it yet.)
    recent: deque[str] | None = deque(
        () if since is None else (since,), maxlen=channel.history_size + hold.max_events + 1
    )
    try:
        # Live events are read from "now" once the consumer is ready: history must be read
        # after that point, or an event published in between would fall in the gap.
        await channel.ready()
        complete = True
        cursor: str | None = since
        last_read: str | None = None
        first = True
        while True:
            dropped = hold.dropped
            page = await channel.history_page(
                cursor, limit=PAGE_EVENTS, max_bytes=max(1, carrier.max_bytes // 2)
            )
            if sub.hold is not hold:
                return complete and page.complete  # closed or unsubscribed meanwhile
            # History trimmed past the cursor: this connection reads slower than the channel's
            # events come. What was trimmed is lost and `recovered` says so; chasing the
            # trimming would never end, so live events follow from here.
            trimmed = not page.complete and not first
            complete = complete and page.complete
            first = False
            if not trimmed:
                for event in page.events:
                    if event.name in names:
                        if carrier.behind and not await carrier.room():
                            return complete  # closed as too slow, or gone
                        if sub.hold is not hold:
                            return complete
                        carrier.offer_event(event, now=False)
                        if recent is not None:
                            if channel.order_key(event.id) is None:
                                recent.append(event.id)
                            else:
                                recent = None  # ordered ids: release compares keys instead
                    last_read = event.id
                if page.events:
                    cursor = page.events[-1].id
                elif page.more:
                    # The next page would start at the same place: it would be read forever.
                    raise RuntimeError(
                        f"channel {fanout.name!r}: history_page() said more events follow but "
                        "gave none; a page that says more must hold one (read on past the "
                        "entries that are not events)"
                    )
                if page.more:
                    continue
            # The `recovered` frame and the held events (at most the low-water mark) are
            # offered at once, with no wait between them: while it is not behind, the outbox
            # has room for them. (The last page may have left it nearly full: an event of up to
            # max_message_bytes offered at just under half.) Live events held meanwhile may
            # overflow the hold: then history is read on.
            if carrier.behind and not await carrier.room():
                return complete
            if sub.hold is not hold:
                return complete
            if trimmed or hold.dropped == dropped:
                break
    except BaseException:
        if sub.hold is hold:
            sub.hold = None
        raise
    if sub.hold is not hold:
        return complete
    carrier.offer(recovered_frame(fanout.name, complete))
    for event in hold.release(last_read or since, recent or ()):
        carrier.offer_event(event)
    return complete
