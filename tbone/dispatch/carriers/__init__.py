"""Carriers: one connection (usually a websocket) as seen by channels.

A subclass says how to send text and how to close; the base class gives every carrier the same
rules (stated once, in ``docs/carriers.md#the-contract`` and
``docs/channels.md#flow-control``):

* Equality and hash follow the wrapped connection, so a carrier made later for the same
  websocket finds (and unsubscribes) the one made earlier.
* ``await deliver(data)`` / ``await deliver_text(text)`` send now and return True when the
  text was handed to the connection, False when the peer is gone. They never raise for a
  closed peer.
* Channels do not await sends: they :meth:`~Carrier.offer_event` events, whose frames are
  encoded once for every subscriber, to a bounded outbox that one writer task per connection
  drains in order (:mod:`tbone.dispatch.delivery.outbox`). A connection that falls behind is
  watched by the slow rule (:mod:`tbone.dispatch.delivery.watch`) and closed with 1013 if it
  stays behind; so is one whose send fails, and one whose outbox overflows.

:class:`Carrier` is a facade over those parts (:mod:`tbone.dispatch.delivery`): its life is a
:class:`~tbone.dispatch.delivery.life.Life` with checked transitions (``closed`` and
``close_code`` read it). The contract with channels is one-way: channels call the carrier
(:meth:`~Carrier.bind`, :meth:`~Carrier.unbind`, :meth:`~Carrier.lag`,
:meth:`~Carrier.offer_event`, :meth:`~Carrier.close_soon`), and the carrier calls back only
through the :class:`Link` each channel registers with :meth:`~Carrier.bind`: ``refill()`` when
a connection that was behind has room again, ``carrier_closed(how)`` when it closed. This
module imports no channel.

**The protected interface** a subclass (a framework's carrier, ``EventStream``) may use and
override; nothing else of the base is for subclasses:

* override ``send_text``, ``close_connection``, ``backlog``, ``_start_send(frame)``;
  set ``_prepared`` / ``_prepared_run`` (prepared frames, :mod:`~tbone.dispatch.delivery.outbox`);
* override ``_on_close(code)`` (called once, when the carrier leaves ``OPEN``; call super),
  ``_on_unbound()`` (its last channel let it go) and ``_send_failed(exc)`` (call super);
* call ``_peer_gone()`` when the server reports the peer gone, and ``_progress()`` when an
  in-process reader took a frame (counts as a send for the slow rule and refills at low
  water); override ``behind``/``_below_low_water``/``queued`` with the outbox they measure.

A subclass written for TBone, which overrides only ``async def deliver(self, data)`` and may
not call ``super().__init__()``, works with every channel (:mod:`tbone.dispatch.delivery.compat`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from tbone.dispatch import jsonenc
from tbone.dispatch.delivery import compat, links
from tbone.dispatch.delivery.life import Closed, InvalidTransition, Life, track_closing
from tbone.dispatch.delivery.life import _closing as _closing  # read by leak checks
from tbone.dispatch.delivery.life import wait_closing as wait_closing
from tbone.dispatch.delivery.links import Link, Links, live_connections
from tbone.dispatch.delivery.outbox import Outbox
from tbone.dispatch.delivery.watch import SlowWatch
from tbone.dispatch.errors import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_TRY_AGAIN_LATER

if TYPE_CHECKING:
    from tbone.dispatch.events import Event

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_TRY_AGAIN_LATER",
    "Carrier",
    "Closed",
    "InvalidTransition",
    "Life",
    "Link",
    "live_connections",
    "wait_closing",
]

logger = logging.getLogger("tbone.dispatch.carriers")


class Carrier(Outbox):
    """Base class of carriers. Subclasses implement :meth:`send_text` and :meth:`close_connection`.

    ``connection``: what the carrier wraps; equality and hash follow it. None (the default,
    and TBone's ``class Collect(Carrier): async def deliver(self, data)`` made as
    ``Collect()``): the carrier wraps no connection, is equal only to itself, and closing it
    has no transport to close: it just leaves every channel.

    ``max_messages`` and ``max_bytes`` bound this connection's outbox (defaults: 1,000
    frames, 1 MiB); ``slow_timeout`` is how long it may stay behind without completing a send
    (default 5 s). What each limit does: ``docs/channels.md#flow-control``.
    """

    # Slots: a carrier per connection, so no instance dict (hundreds of bytes each, and no
    # limit on attributes before CPython stops sharing dict keys). Subclasses that declare no
    # __slots__ (TBone-style carriers) still get a dict for their own attributes.
    __slots__ = ("__weakref__", "_links", "_room", "_watch", "connection", "slow_timeout")

    #: Exceptions that mean "the peer went away": no traceback is logged for them.
    disconnect_errors: ClassVar[tuple[type[BaseException], ...]] = (ConnectionError, OSError)
    default_max_messages: ClassVar[int] = 1000
    default_max_bytes: ClassVar[int] = 1 << 20
    default_slow_timeout: ClassVar[float] = 5.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        compat.wrap_init(cls, Carrier.__init__)  # a TBone subclass may not call __init__

    def __new__(cls, *args: Any, **kwargs: Any) -> Carrier:
        compat.check_sends(cls, Carrier)
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
        self._init_outbox(
            max_messages or self.default_max_messages, max_bytes or self.default_max_bytes
        )
        self.slow_timeout = slow_timeout or self.default_slow_timeout
        if self.max_messages < 1 or self.max_bytes < 1 or not self.slow_timeout > 0:
            raise ValueError(
                f"max_messages ({self.max_messages}) and max_bytes ({self.max_bytes}) must be "
                f"at least 1, slow_timeout ({self.slow_timeout}) more than 0"
            )
        self._links = Links()  # the channels this connection is subscribed on
        self._room: asyncio.Future[None] | None = None  # set by room(), resolved at low water
        self._watch: SlowWatch | None = None

    # -- what subclasses implement ---------------------------------------------------------

    async def send_text(self, text: str) -> None:
        """Send one text frame. Raise (any of :attr:`disconnect_errors`) if the peer is gone.

        The default, for subclasses that override :meth:`deliver` instead (TBone's API),
        passes the frame to it decoded; a ``deliver`` that returns False means the peer left.
        """
        await compat.send_decoded(self.deliver, text, self)

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
        """Encode ``data`` as JSON and send it now. True when sent, False when the peer is gone.

        TBone's name: unlike a channel's delivery, which never waits, this awaits the send.
        """
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

    # -- what channels call ------------------------------------------------------------------

    def offer_event(self, event: Event, *, now: bool = True) -> bool:
        """:meth:`offer` the frame of ``event`` (what channels call; the frame is shared).

        Subclasses that want the Event itself (an in-process subscriber) override this.
        """
        return self.offer(event, event.size, now=now)

    @property
    def lagging(self) -> bool:
        """True while some channel holds frames back for this connection (see :meth:`lag`)."""
        return bool(self._links.lagging)

    async def room(self) -> bool:
        """Wait until the outbox is down to its low-water mark (or empty); False if it closed.

        For code that offers many frames itself (a history replay): it offers while
        :attr:`behind` is False and awaits this otherwise. It does not time out: a connection
        that stops reading is closed by the slow rule (``slow_timeout``) and this returns False.
        """
        while not self.closed and self.behind:
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
                self._wants_room = True
            if self._watch is None:
                self._watch = SlowWatch(self)
            await asyncio.shield(self._room)
        return not self.closed

    def live(self) -> Carrier | None:
        """The carrier channels use for this connection (this one or an equal one), or None."""
        return links.live(self)

    def bind(self, link: Link) -> Carrier:
        """Register a channel's ``link`` on this connection's live carrier, and return it.

        The first carrier bound for a connection is the live one: every channel shares its
        outbox and writer, so frames of several channels never race on one websocket. Raises
        ValueError when this carrier is closed.
        """
        live = links.live(self)
        if live is None or live.closed:
            if self.closed:
                raise ValueError(f"{self!r} is closed; it cannot be subscribed")
            links.claim(self)
            live = self
        live._links.add(link)
        return live

    def unbind(self, link: Link) -> None:
        """The channel of ``link`` no longer holds a subscription for this connection."""
        if self._links.remove(link):
            links.release(self)
            self._on_unbound()
        self._update_wants_room()

    def lag(self, link: Link) -> None:
        """The channel of ``link`` holds frames back for this connection (it is behind).

        The writer calls ``link.refill()`` whenever the outbox is down to its low-water mark,
        until :meth:`unlag`; the slow rule watches the connection meanwhile.
        """
        self._links.lag(link)
        self._wants_room = True
        if self._watch is None and not self.closed:
            self._watch = SlowWatch(self)

    def unlag(self, link: Link) -> None:
        """The channel of ``link`` has nothing held back for this connection any more."""
        self._links.unlag(link)
        self._update_wants_room()

    # -- the protected interface (see the module docstring) ---------------------------------

    def _on_close(self, code: int | None) -> None:
        """The carrier left ``OPEN`` with ``code``: a hook for subclasses (call super)."""

    def _on_unbound(self) -> None:
        """The last channel let this carrier go: a hook for subclasses."""

    def _peer_gone(self) -> None:
        """The peer is gone (a send failed, or the server said so): leave every channel."""
        if not self.closed:
            self._leave(None, "failed")

    def _progress(self) -> None:
        """An in-process reader took a frame: progress for the slow rule, and a refill once
        the carrier is no longer :attr:`behind`."""
        self._sends += 1
        if self._wants_room and not self.behind:
            self._at_low_water()

    def _send_failed(self, exc: Exception) -> None:
        # A peer that went away is ordinary (no traceback); anything else is logged. Either
        # way the connection is dropped from every channel.
        if not isinstance(exc, self.disconnect_errors):
            logger.error("%r: send failed; dropping the connection", self, exc_info=exc)
        self._peer_gone()

    # -- the parts' hooks --------------------------------------------------------------------

    def _at_low_water(self) -> None:
        # Room again: take the next events from the windows of the channels this connection
        # lags on (the frames go to the outbox), and wake a replay waiting in room().
        self._links.refill(lambda: self.closed)
        if self.closed:
            return
        room = self._room
        if room is not None and not self.behind:
            self._room = None
            if not room.done():
                room.set_result(None)
        self._update_wants_room()

    def _update_wants_room(self) -> None:
        self._wants_room = not self.closed and (bool(self._links.lagging) or self._room is not None)

    def _still_behind(self) -> bool:
        return bool(self._links.lagging) or self.behind or self._room is not None

    def _watch_ended(self) -> None:
        self._watch = None

    def _overflow(self) -> None:
        logger.info("%r: outbox over its limits; closing with 1013", self)
        self.close_soon("subscriber too slow")

    # -- closing -----------------------------------------------------------------------------

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the connection with ``code`` and remove the carrier from every channel.

        Frames still in the outbox are dropped. Safe to call more than once.
        """
        if not self.closed:
            self._leave(code, "closed")
        await self._stop_writer()
        try:
            await self.close_connection(code, reason)
        except self.disconnect_errors:
            pass
        except Exception:
            logger.exception("%r: close failed", self)
        if self._life is Life.CLOSING:
            self._advance(Life.CLOSED)

    def close_soon(self, reason: str, *, slow: bool = True) -> None:
        """Close with 1013 (try again later) and leave every channel, without waiting.

        ``slow``: the connection is closed for being too slow (counted in the channels'
        ``closed_slow``); False when a channel lost events and asks the client to resume.
        """
        if self.closed:
            return
        self._leave(CLOSE_TRY_AGAIN_LATER, "slow" if slow else "closed")
        # The close handshake may block on a peer that does not read, so it runs in a task of
        # its own, which also stops the writer.
        track_closing(
            asyncio.get_running_loop().create_task(self.close(CLOSE_TRY_AGAIN_LATER, reason))
        )

    def _leave(self, code: int | None, how: Closed) -> None:
        # OPEN -> CLOSING: drop the outbox, stop the watch, wake a room() waiter, then tell
        # every channel (after the state changed, so none of them offers to it again).
        self._advance(Life.CLOSING)
        self._close_code = code
        self._drop_frames()
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)
        self._on_close(code)
        self._links.detach(how)
        links.release(self)
