"""Carriers: one connection (usually a websocket) as seen by channels.

A subclass says how to send text and how to close; the base class gives every carrier the same
rules:

* Equality and hash follow the wrapped connection, so a carrier made later for the same
  websocket finds (and unsubscribes) the one made earlier.
* ``await deliver(data)`` / ``await deliver_text(text)`` send now and return True when the
  text was handed to the connection, False when the peer is gone. They never raise for a
  closed peer.
* Channels do not await sends: they :meth:`~Carrier.offer_event` events, whose frames are
  encoded once for every subscriber. A frame with
  nothing ahead of it is sent at once (most sends complete without waiting: the server
  buffers the bytes); the rest wait in an outbox that one writer task per connection drains
  in order, and that task also finishes a send that had to wait.
* Flow control (``docs/channels.md``): once the outbox is half full (``max_messages`` or
  ``max_bytes``), the connection is *behind*: channels stop handing it frames and keep its
  place in their catch-up window instead, and the writer takes the following events from
  there once the outbox is down to a quarter. Bursts therefore never close a connection that
  reads. A connection that is behind and completes no send for ``slow_timeout`` seconds
  (5 s by default) is closed with code 1013 and unsubscribed everywhere; so is one whose send
  fails, and one whose outbox overflows (frames offered directly, beyond both limits).

The contract with channels is one-way: channels call the carrier (:meth:`~Carrier.bind`,
:meth:`~Carrier.unbind`, :meth:`~Carrier.lag`, :meth:`~Carrier.offer_event`,
:meth:`~Carrier.close_soon`), and the carrier calls back only through the :class:`Link` each
channel registers with :meth:`~Carrier.bind`: ``refill()`` when a connection that was behind has
room again, ``closed(how)`` when it closed. This module imports no channel.

A subclass written for TBone, which overrides only ``async def deliver(self, data)`` and may
not call ``super().__init__()``, works with every channel: its ``deliver`` receives each frame
decoded (``{"type": "event", "payload": {...}}``), and the base state is made after its own
``__init__``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from tbone.dispatch import jsonenc
from tbone.dispatch.errors import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_TRY_AGAIN_LATER
from tbone.dispatch.timeouts import wait_at_most

if TYPE_CHECKING:
    from tbone.dispatch.events import Event

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_TRY_AGAIN_LATER",
    "Carrier",
    "Link",
    "live_connections",
    "wait_closing",
]

logger = logging.getLogger("tbone.dispatch.carriers")

#: A writer lets other tasks run after this many sends in a row.
_SLICE = 64

#: How a carrier closed, as told to its links: too slow (1013), its send failed, or closed on
#: purpose (by the application, the glue or a channel).
Closed = Literal["slow", "failed", "closed"]


class Link(Protocol):
    """A channel's record of one connection, registered with :meth:`Carrier.bind`."""

    def refill(self) -> None:
        """The connection has room again: offer the events it lags on (see :meth:`Carrier.lag`)."""

    def closed(self, how: Closed) -> None:
        """The carrier closed and left every channel: forget the connection."""


class Carrier:
    """Base class of carriers. Subclasses implement :meth:`send_text` and :meth:`close_connection`.

    ``connection``: what the carrier wraps; equality and hash follow it. None (the default,
    and TBone's ``class Collect(Carrier): async def deliver(self, data)`` made as
    ``Collect()``): the carrier wraps no connection, is equal only to itself, and closing it
    has no transport to close: it just leaves every channel.

    ``max_messages`` and ``max_bytes`` bound this connection's outbox (defaults: 1,000
    frames, 1 MiB); past half of either it is behind and reads from its channels' windows. A
    frame offered to an empty outbox is always taken, so no single event closes a connection.
    ``slow_timeout``: seconds a connection may stay behind without completing a send before
    it is closed with 1013 (default 5).
    """

    # Slots: a carrier per connection, so no instance dict (hundreds of bytes each, and no
    # limit on attributes before CPython stops sharing dict keys). Subclasses that declare no
    # __slots__ (TBone-style carriers) still get a dict for their own attributes.
    __slots__ = (
        "__weakref__",
        "_buffered",
        "_drained",
        "_inflight",
        "_lagging",
        "_links",
        "_prepared",
        "_prepared_run",
        "_room",
        "_sends",
        "_sizes",
        "_waiter",
        "_watch",
        "_writer",
        "close_code",
        "closed",
        "connection",
        "max_bytes",
        "max_messages",
        "outbox",
        "queued_bytes",
        "slow_timeout",
    )

    #: Exceptions that mean "the peer went away": no traceback is logged for them.
    disconnect_errors: ClassVar[tuple[type[BaseException], ...]] = (ConnectionError, OSError)
    default_max_messages: ClassVar[int] = 1000
    default_max_bytes: ClassVar[int] = 1 << 20
    default_slow_timeout: ClassVar[float] = 5.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            # A subclass written for TBone may not call Carrier.__init__: give it the base
            # state after its own __init__ (equal by identity, default limits). Done here, at
            # construction, so attribute access stays as fast as on any class.
            @functools.wraps(init)
            def __init__(self: Carrier, *args: Any, **kwargs: Any) -> None:
                init(self, *args, **kwargs)
                # Not `self.__dict__`: reading it makes CPython keep the instance's attributes
                # in a real dict, and every attribute access on the carrier gets slower.
                try:
                    self.outbox  # noqa: B018 - set by Carrier.__init__
                except AttributeError:
                    Carrier.__init__(self, getattr(self, "connection", None))

            cls.__init__ = __init__  # type: ignore[method-assign]

    def __new__(cls, *args: Any, **kwargs: Any) -> Carrier:
        if cls.send_text is Carrier.send_text and cls.deliver is Carrier.deliver:
            raise TypeError(
                f"{cls.__name__} sends nothing: implement async send_text(self, text) (and "
                "close_connection), or, as TBone carriers did, async deliver(self, data)"
            )
        return super().__new__(cls)

    def __init__(
        self,
        connection: Any = None,
        *,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        slow_timeout: float | None = None,
    ) -> None:
        # No connection (TBone's `Collect()`): the carrier is its own connection, so it is
        # equal only to itself, and closing it has no transport to close: it just leaves.
        self.connection: Any = self if connection is None else connection
        self.max_messages = max_messages or self.default_max_messages
        self.max_bytes = max_bytes or self.default_max_bytes
        self.slow_timeout = slow_timeout or self.default_slow_timeout
        if self.max_messages < 1 or self.max_bytes < 1 or not self.slow_timeout > 0:
            raise ValueError(
                f"max_messages ({self.max_messages}) and max_bytes ({self.max_bytes}) must be "
                f"at least 1, slow_timeout ({self.slow_timeout}) more than 0"
            )
        self.closed = False
        self.close_code: int | None = None
        # Frames and their sizes in two deques: no tuple per frame, which at thousands of
        # subscribers would be thousands of objects per event for the garbage collector. Both
        # start as the shared empty deque and are made on the first frame that must wait
        # (most connections never queue one, and a deque costs ~760 bytes).
        #: Frames waiting to be sent, oldest first: a frame's text, or an Event (whose frame
        #: is its text; a carrier may write its prepared wire bytes instead). Read it
        #: (channels test it before :attr:`behind`, per delivery); never change it.
        self.outbox: deque[str | Event] = _NO_FRAMES
        self._sizes: deque[int] = _NO_SIZES
        #: Bytes of the frames in :attr:`outbox` and of a send under way. Read it; never change it.
        self.queued_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None  # set by flush(), resolved when idle
        self._buffered = 0  # at most what the server holds for the peer (see _sent)
        # A send started in offer() that had to wait, for the writer task to finish.
        self._inflight: tuple[Coroutine[Any, Any, None], Any, int] | None = None
        self._links: dict[Link, None] = {}  # one per channel this connection is subscribed on
        self._lagging: dict[Link, None] = {}  # channels holding frames back for it
        self._room: asyncio.Future[None] | None = None  # set by room(), resolved at low water
        self._sends = 0  # completed sends: what the slow watch calls progress
        self._watch: _Watch | None = None
        # Set by a carrier whose connection takes an event's prepared frame, built once for
        # every subscriber (tbone.dispatch.wire): write one event, or a run of them, now if
        # the connection takes bytes now; True when written (see _send_now and _write_run).
        self._prepared: Callable[[Event], bool] | None = None
        self._prepared_run: Callable[[Sequence[Event]], bool] | None = None

    # -- what subclasses implement ---------------------------------------------------------

    async def send_text(self, text: str) -> None:
        """Send one text frame. Raise (any of :attr:`disconnect_errors`) if the peer is gone.

        The default, for subclasses that override :meth:`deliver` instead (TBone's API),
        passes the frame to it decoded; a ``deliver`` that returns False means the peer left.
        """
        if await self.deliver(jsonenc.loads(text)) is False:
            raise ConnectionResetError(f"{self!r}: deliver() returned False")

    async def close_connection(self, code: int, reason: str) -> None:
        """Close the underlying connection with ``code``; must not raise if already closed.

        The default does nothing: a carrier that cannot close its connection stops sending.
        """

    def backlog(self) -> int:
        """Bytes the server holds for this connection that our outbox no longer sees.

        Servers that return from ``send`` before the bytes leave (uvicorn, aiohttp) keep them
        in the transport's write buffer; carriers that can reach it report its size here, so a
        client that stops reading is caught. The default is 0.
        """
        return 0

    # -- identity ----------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Carrier):
            return NotImplemented
        return self.connection is other.connection

    def __hash__(self) -> int:
        return hash(id(self.connection))

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"queued={len(self.outbox)}"
        connection = "no connection" if self.connection is self else repr(self.connection)
        return f"<{type(self).__name__} {connection} {state}>"

    # -- sending now -------------------------------------------------------------------------

    async def deliver(self, data: Any) -> bool:
        """Encode ``data`` as JSON and send it now. True when sent, False when the peer is gone."""
        return await self.deliver_text(jsonenc.dumps(data))

    async def deliver_text(self, text: str) -> bool:
        """Send pre-encoded JSON text now. True when sent, False when the peer is gone."""
        if self.closed:
            return False
        try:
            await self.send_text(text)
        except Exception as exc:
            self._send_failed(exc)
            return False
        return True

    # -- the outbox --------------------------------------------------------------------------

    def offer(self, text: str | Event, size: int | None = None, *, now: bool = True) -> bool:
        """Hand a frame to the connection without waiting. Never blocks, never raises.

        ``text`` is the frame's JSON text, or an :class:`~tbone.dispatch.events.Event`, whose
        frame is sent (channels hand events over this way, so that a carrier can write the
        event's prepared wire bytes; see :meth:`_start_send`).

        When nothing else waits for the connection the send starts at once (and the writer
        task finishes it if it must wait); otherwise, or with ``now=False`` (the caller has
        more frames coming: the writer sends them in one go), the frame joins the outbox.
        Returns False when the carrier is closed or the frame overflowed its limits (a frame
        offered to an empty outbox never does), in which case the connection is being closed
        with 1013 and removed from every channel. ``size`` is the frame's size in bytes
        (``len(text)``, or the event's size, when not given). Channels check :attr:`behind`
        before offering; callers that offer directly can await :meth:`room` first.
        """
        if self.closed:
            return False
        if size is None:
            size = len(text) if isinstance(text, str) else text.size
        outbox = self.outbox
        if outbox and (
            len(outbox) >= self.max_messages or self.queued_bytes + size > self.max_bytes
        ):
            self._overflow()
            return False
        if now and self._writer is None and not outbox and self._inflight is None:
            # Nothing waits before this frame and no send is under way: start the send here.
            # Most sends complete without suspending (the server buffers the bytes), so the
            # frame goes out with no task switch and no object left for the collector; one
            # that must wait is finished by the writer task, in order.
            return self._send_now(text, size)
        if outbox is _NO_FRAMES:
            outbox = self.outbox = deque()
            self._sizes = deque()
        outbox.append(text)
        self._sizes.append(size)
        self.queued_bytes += size
        if self._writer is None:  # else the running writer takes it in turn
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        # No slow watch started here (this runs for every frame of a burst): a channel starts
        # it when it finds the connection behind, and room() when a replay waits.
        return True

    def offer_event(self, event: Event, *, now: bool = True) -> bool:
        """:meth:`offer` the frame of ``event`` (what channels call; the frame is shared).

        Subclasses that want the Event itself (an in-process subscriber) override this.
        """
        return self.offer(event, event.size, now=now)

    @property
    def behind(self) -> bool:
        """True while the outbox (with a send under way) is at least half full.

        Channels then stop handing frames to this connection and let it catch up from their
        windows once the outbox is down to a quarter.
        """
        # Behind from half full; back to taking frames (live, or from the window) at a quarter.
        return len(self.outbox) * 2 >= self.max_messages or self.queued_bytes * 2 >= self.max_bytes

    @property
    def lagging(self) -> bool:
        """True while some channel holds frames back for this connection (see :meth:`lag`)."""
        return bool(self._lagging)

    def _below_low_water(self) -> bool:
        return len(self.outbox) * 4 <= self.max_messages and self.queued_bytes * 4 <= self.max_bytes

    async def room(self) -> bool:
        """Wait until the outbox is down to a quarter full (or empty); False if it closed.

        For code that offers many frames itself (a history replay): it offers while
        :attr:`behind` is False and awaits this otherwise. It does not time out: a connection
        that stops reading is closed by the slow rule (``slow_timeout``) and this returns False.
        """
        while not self.closed and self.behind:
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            if self._watch is None:
                self._start_watch()
            await asyncio.shield(self._room)
        return not self.closed

    def _start_send(self, frame: str | Event) -> Coroutine[Any, Any, None]:
        """The coroutine that sends one frame (a hook: a carrier may skip send_text's layer).

        ``frame`` is a frame's text or an Event (see :meth:`offer`).
        """
        return self.send_text(frame if isinstance(frame, str) else frame.frame)

    def _send_now(self, text: str | Event, size: int) -> bool:
        prepared = self._prepared
        if prepared is not None and not isinstance(text, str) and prepared(text):
            return self._sent(size)  # written as it is: no coroutine, no framing per connection
        coro = self._start_send(text)
        try:
            step = coro.send(None)
        except StopIteration:
            return self._sent(size)
        except Exception as exc:
            self._send_failed(exc)
            return False
        self._inflight = (coro, step, size)
        self.queued_bytes += size  # waiting for the peer: it counts against the limit
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())  # it finishes it
        return True

    def _sent(self, size: int) -> bool:
        self._sends += 1
        # What the server holds for this peer is at most what it held when last asked plus
        # what was sent since: only when that bound passes the limit is it asked again (a call
        # into the transport per frame would cost more than the rest of the delivery).
        self._buffered += size
        if self._buffered > self.max_bytes:
            self._buffered = self.backlog()
            if self._buffered > self.max_bytes:
                # A server whose send never waits (every server we know waits once its buffer
                # passes a high-water mark): the peer stopped reading and only the server's
                # buffer grows. It counts against the same limit.
                self._overflow()
                return False
        return True

    @property
    def queued(self) -> int:
        """Frames waiting in the outbox."""
        return len(self.outbox)

    def _wake(self) -> None:
        # For subclasses whose reader parks on _waiter (the in-process EventStream); the writer
        # task never parks: it ends once drained.
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _write_loop(self) -> None:
        send = self._start_send
        while True:
            inflight = self._inflight
            if inflight is not None:
                coro, step, size = inflight
                try:
                    await _Continue(coro, step)
                except Exception as exc:
                    self._send_failed(exc)
                    return
                finally:
                    self._inflight = None
                    self.queued_bytes = max(0, self.queued_bytes - size)  # 0 once closed
                if not self._sent(size):
                    return
            # Read each time round: the first frame that waits replaces the shared empty deques.
            outbox, sizes = self.outbox, self._sizes
            while outbox:
                if (
                    self._prepared_run is not None
                    and not isinstance(outbox[0], str)
                    and self._write_run(outbox, sizes)
                ):
                    # Events in a row went out as prepared frames, in one write.
                    if self.closed:
                        return
                    await asyncio.sleep(0)  # a slice of sends: let other writers run
                    continue
                text = outbox.popleft()
                size = sizes.popleft()
                self.queued_bytes -= size
                try:
                    await send(text)
                except Exception as exc:
                    self._send_failed(exc)
                    return
                if not self._sent(size):
                    return
                if (self._lagging or self._room is not None) and self._below_low_water():
                    self._low_water()
                if not self._sends % _SLICE:
                    # Sends that never wait (the server buffers) would otherwise drain a whole
                    # outbox in one step: with many writers the loop's timers (the slow rule)
                    # and new connections would wait for all of them.
                    await asyncio.sleep(0)
            if self._lagging or self._room is not None:
                self._low_water()
                if self.outbox:  # (not `outbox`: the refill may have made the deque)
                    continue
            if self._drained is not None:
                self._signal_drained()
            # Drained: the task ends, and the next frame that has to wait starts another. A
            # writer parked on a future would keep a task, its frame and the future alive per
            # connection (~1 KiB, and objects every full collection walks) after any burst.
            self._writer = None
            return

    def _write_run(self, outbox: deque[str | Event], sizes: deque[int]) -> bool:
        """Write the events at the head of the outbox (at most a slice) as prepared frames.

        True when they were written and taken off the outbox; False (nothing taken) when
        the connection does not take bytes now: the writer then sends the first one the
        ordinary way, which waits.
        """
        assert self._prepared_run is not None
        run: list[Event] = []
        total = 0
        for frame, size in zip(outbox, sizes, strict=True):
            if isinstance(frame, str) or len(run) >= _SLICE:
                break
            run.append(frame)
            total += size
        if not self._prepared_run(run):
            return False
        for _ in run:
            outbox.popleft()
            sizes.popleft()
        self.queued_bytes -= total
        self._sends += len(run) - 1
        if (
            self._sent(total)
            and (self._lagging or self._room is not None)
            and self._below_low_water()
        ):
            self._low_water()
        return True

    def _low_water(self) -> None:
        # Room again: take the next events from the windows of the channels this connection
        # lags on (the frames go to the outbox), and wake a replay waiting in room().
        for link in tuple(self._lagging):
            link.refill()
            if self.closed:
                return
        room = self._room
        if room is not None and not self.behind:
            self._room = None
            if not room.done():
                room.set_result(None)

    # -- the slow rule -----------------------------------------------------------------------

    def _start_watch(self) -> None:
        """Check, every quarter of ``slow_timeout``, that a connection behind still sends."""
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        self._watch = _Watch(self._sends, loop.time())
        self._watch.handle = loop.call_later(self.slow_timeout / 4, self._check_watch)

    def _check_watch(self) -> None:
        watch = self._watch
        if watch is None or self.closed:
            return
        waiting = self._lagging or self.behind or self._room is not None
        if not waiting:
            self._watch = None
            return  # caught up: watching again starts with the next fall behind
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._sends != watch.sends:
            watch.sends, watch.since = self._sends, now
        elif now - watch.since >= self.slow_timeout:
            logger.info(
                "%r: behind and no frame sent for %.1fs (slow_timeout); closing with 1013",
                self,
                now - watch.since,
            )
            self._watch = None
            self.close_soon("subscriber too slow")
            return
        watch.handle = loop.call_later(self.slow_timeout / 4, self._check_watch)

    async def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty and no send is under way, at most ``timeout`` s.

        True when everything queued was handed to the connection; False on timeout or if the
        carrier closed meanwhile. Used before a deliberate close, so the frames that explain
        it (error frames) are not dropped with the outbox.
        """
        if self.closed or not (self.outbox or self._writer is not None):
            return not self.closed
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()
        try:
            await wait_at_most(asyncio.shield(self._drained), timeout)
        except TimeoutError:
            return False
        return not self.closed

    def _signal_drained(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- channels ----------------------------------------------------------------------------

    def live(self) -> Carrier | None:
        """The carrier channels use for this connection (this one or an equal one), or None."""
        return _live.get(self)

    def bind(self, link: Link) -> Carrier:
        """Register a channel's ``link`` on this connection's live carrier, and return it.

        The first carrier bound for a connection is the live one: every channel shares its
        outbox and writer, so frames of several channels never race on one websocket. Raises
        ValueError when this carrier is closed.
        """
        live = _live.get(self)
        if live is None or live.closed:
            if self.closed:
                raise ValueError(f"{self!r} is closed; it cannot be subscribed")
            live = _live[self] = self
        live._links[link] = None
        return live

    def unbind(self, link: Link) -> None:
        """The channel of ``link`` no longer holds a subscription for this connection."""
        self._links.pop(link, None)
        self._lagging.pop(link, None)
        if not self._links:
            if _live.get(self) is self:
                del _live[self]
            self._wake()  # an in-process reader waiting for events (EventStream) ends

    def lag(self, link: Link) -> None:
        """The channel of ``link`` holds frames back for this connection (it is behind).

        The writer calls ``link.refill()`` whenever the outbox is down to a quarter, until
        :meth:`unlag`; the slow rule watches the connection meanwhile.
        """
        self._lagging[link] = None
        if self._watch is None:
            self._start_watch()

    def unlag(self, link: Link) -> None:
        """The channel of ``link`` has nothing held back for this connection any more."""
        self._lagging.pop(link, None)

    # -- closing -----------------------------------------------------------------------------

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the connection with ``code`` and remove the carrier from every channel.

        Frames still in the outbox are dropped. Safe to call more than once.
        """
        if not self.closed:
            self._mark_closed(code)
            self._detach_all("closed")
        await self._stop_writer()
        try:
            await self.close_connection(code, reason)
        except self.disconnect_errors:
            pass
        except Exception:
            logger.exception("%r: close failed", self)

    def _overflow(self) -> None:
        logger.info("%r: outbox over its limits; closing with 1013", self)
        self.close_soon("subscriber too slow")

    def close_soon(self, reason: str, *, slow: bool = True) -> None:
        """Close with 1013 (try again later) and leave every channel, without waiting.

        ``slow``: the connection is closed for being too slow (counted in the channels'
        ``closed_slow``); False when a channel lost events and asks the client to resume.
        """
        if self.closed:
            return
        self._mark_closed(CLOSE_TRY_AGAIN_LATER)
        self._detach_all("slow" if slow else "closed")
        # The close handshake may block on a peer that does not read, so it runs in a task of
        # its own, which also stops the writer.
        task = asyncio.get_running_loop().create_task(self.close(CLOSE_TRY_AGAIN_LATER, reason))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    def _send_failed(self, exc: Exception) -> None:
        # A peer that went away is ordinary (no traceback); anything else is logged. Either
        # way the connection is dropped from every channel.
        if not isinstance(exc, self.disconnect_errors):
            logger.error("%r: send failed; dropping the connection", self, exc_info=exc)
        self._gone()

    def _gone(self) -> None:
        self._mark_closed(None)
        self._detach_all("failed")

    def _mark_closed(self, code: int | None) -> None:
        self.closed = True
        self.close_code = code
        self.outbox.clear()
        self._sizes.clear()
        self.queued_bytes = 0
        self._signal_drained()
        watch, self._watch = self._watch, None
        if watch is not None and watch.handle is not None:
            watch.handle.cancel()
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)

    def _detach_all(self, how: Closed) -> None:
        links, self._links = list(self._links), {}
        self._lagging = {}
        for link in links:
            link.closed(how)
        if _live.get(self) is self:
            del _live[self]
        self._wake()

    async def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        self._wake()
        if writer is not None and writer is not asyncio.current_task() and not writer.done():
            writer.cancel()
            # asyncio.wait() does not raise the writer's CancelledError, only our own.
            await asyncio.wait([writer])
        inflight, self._inflight = self._inflight, None
        if inflight is not None:  # started in offer(), never taken over: end it here
            inflight[0].close()


class _Watch:
    """The slow rule's check of one connection: the sends it had, since when, its timer."""

    __slots__ = ("handle", "sends", "since")

    def __init__(self, sends: int, since: float) -> None:
        self.sends = sends
        self.since = since
        self.handle: asyncio.TimerHandle | None = None


class _Continue:
    """Awaitable that finishes, inside the awaiting task, a coroutine started elsewhere.

    ``offer()`` runs a send's first step itself; when that step suspends on ``step`` (a future,
    or None for a bare yield), the writer task awaits this to drive the rest: it yields what the
    coroutine yields and passes back what the task sends or throws, as a Task would.
    """

    __slots__ = ("coro", "step")

    def __init__(self, coro: Coroutine[Any, Any, None], step: Any) -> None:
        self.coro = coro
        self.step = step

    def __await__(self) -> Generator[Any, Any, None]:
        coro, step = self.coro, self.step
        while True:
            try:
                value = yield step
            except BaseException as exc:  # cancellation (or anything thrown in) goes on in
                try:
                    step = coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                step = coro.send(value)
            except StopIteration:
                return


# The outbox of every carrier that never had to queue a frame (see Carrier.__init__); it
# stays empty: offer() swaps in a deque of the carrier's own before appending.
_NO_FRAMES: deque[str | Event] = deque()
_NO_SIZES: deque[int] = deque()

# The one live carrier per connection: every channel a connection subscribes on shares its
# outbox and writer, so frames from several channels never race on one websocket.
_live: dict[Carrier, Carrier] = {}

# Close handshakes of carriers closed as too slow, referenced until they end.
_closing: set[asyncio.Task[None]] = set()


async def wait_closing() -> None:
    """Wait for the close handshakes of carriers closed as too slow (used by Channel.close)."""
    while _closing:
        await asyncio.wait(list(_closing))


def live_connections() -> int:
    """Connections subscribed on some channel in this process (for leak checks and metrics)."""
    return len(_live)
