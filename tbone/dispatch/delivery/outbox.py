"""The outbox of one connection: frames waiting, the writer task that sends them, flow control.

The rules (thresholds, the order of frames, what overflows) are stated once, in
``docs/channels.md#flow-control``; this module implements them. :class:`Outbox` is the base
class of every carrier, not a part it holds: channels test a carrier's outbox inline on every
delivery (``Fanout.deliver``), so its attributes live on the carrier itself.

What a subclass provides (the protected interface, implemented by ``Carrier``):

* ``send_text(text)`` and ``_start_send(frame)``: the coroutine that sends one frame;
* ``backlog()``: bytes the server still holds for the connection;
* ``_at_low_water()``: called by the writer at low water while ``_wants_room`` is True;
* ``_overflow()`` and ``_send_failed(exc)``: the connection is over its limits, or gone.

A carrier whose connection takes an event's prepared frame (``tbone.dispatch.wire``) sets
``_prepared`` (write one event now, True when written) and ``_prepared_run`` (a run of them).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import TYPE_CHECKING, Any

from tbone.dispatch.delivery.life import Life, LifeCycle
from tbone.dispatch.timeouts import wait_at_most

if TYPE_CHECKING:
    from tbone.dispatch.events import Event

__all__ = ["SLICE", "Outbox"]

#: A writer lets other tasks run after this many sends in a row.
SLICE = 64

_OPEN = Life.OPEN


class Outbox(LifeCycle):
    """Frames waiting for one connection, bounded by ``max_messages`` and ``max_bytes``."""

    __slots__ = (
        "_buffered",
        "_drained",
        "_inflight",
        "_prepared",
        "_prepared_run",
        "_sends",
        "_sizes",
        "_wants_room",
        "_writer",
        "max_bytes",
        "max_messages",
        "outbox",
        "queued_bytes",
    )

    def _init_outbox(self, max_messages: int, max_bytes: int) -> None:
        self._life = _OPEN
        self._close_code = None
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        # Frames and their sizes in two deques: no tuple per frame, which at thousands of
        # subscribers would be thousands of objects per event for the garbage collector. Both
        # start as the shared empty deque and are made on the first frame that must wait
        # (most connections never queue one, and a deque costs ~760 bytes).
        #: Frames waiting to be sent, oldest first: a frame's text, or an Event (whose frame
        #: is its text; a carrier may write its prepared wire bytes instead). Read it
        #: (channels test it before ``behind``, per delivery); never change it.
        self.outbox: deque[str | Event] = _NO_FRAMES
        self._sizes: deque[int] = _NO_SIZES
        #: Bytes of the frames in ``outbox`` and of a send under way. Read it; never change it.
        self.queued_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self._drained: asyncio.Future[None] | None = None  # set by flush(), resolved when idle
        self._buffered = 0  # at most what the server holds for the peer (see _sent)
        # A send started in offer() that had to wait, for the writer task to finish.
        self._inflight: tuple[Coroutine[Any, Any, None], Any, int] | None = None
        self._sends = 0  # completed sends: what the slow watch calls progress
        self._wants_room = False  # call _at_low_water() at low water (a lag, a room() waiting)
        self._prepared: Callable[[Event], bool] | None = None
        self._prepared_run: Callable[[Sequence[Event]], bool] | None = None

    # -- the hooks (see the module docstring) ------------------------------------------------

    async def send_text(self, text: str) -> None:
        raise NotImplementedError

    def backlog(self) -> int:
        return 0

    def _at_low_water(self) -> None:
        raise NotImplementedError

    def _overflow(self) -> None:
        raise NotImplementedError

    def _send_failed(self, exc: Exception) -> None:
        raise NotImplementedError

    def _start_send(self, frame: str | Event) -> Coroutine[Any, Any, None]:
        """The coroutine that sends one frame (a hook: a carrier may skip send_text's layer).

        ``frame`` is a frame's text or an Event (see :meth:`offer`).
        """
        return self.send_text(frame if isinstance(frame, str) else frame.frame)

    # -- offering ----------------------------------------------------------------------------

    def offer(self, text: str | Event, size: int | None = None, *, now: bool = True) -> bool:
        """Hand a frame to the connection without waiting. Never blocks, never raises.

        ``text`` is the frame's JSON text, or an :class:`~tbone.dispatch.events.Event`, whose
        frame is sent (channels hand events over this way, so that a carrier can write the
        event's prepared wire bytes).

        When nothing else waits for the connection the send starts at once (and the writer
        task finishes it if it must wait); otherwise, or with ``now=False`` (the caller has
        more frames coming: the writer sends them in one go), the frame joins the outbox.
        Returns False when the carrier is closed or the frame overflowed its limits (a frame
        offered to an empty outbox never does), in which case the connection is being closed
        with 1013 and removed from every channel. ``size`` is the frame's size in bytes
        (``len(text)``, or the event's size, when not given). Channels check :attr:`behind`
        before offering; callers that offer directly can await ``room()`` first.
        """
        if self._life is not _OPEN:
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

    @property
    def behind(self) -> bool:
        """True while the outbox is past its high-water mark (``docs/channels.md#flow-control``).

        Channels then stop handing frames to this connection and let it catch up from their
        windows once it is down to its low-water mark (:meth:`_below_low_water`).
        """
        return len(self.outbox) * 2 >= self.max_messages or self.queued_bytes * 2 >= self.max_bytes

    def _below_low_water(self) -> bool:
        """True at or below the low-water mark (``docs/channels.md#flow-control``)."""
        return len(self.outbox) * 4 <= self.max_messages and self.queued_bytes * 4 <= self.max_bytes

    @property
    def queued(self) -> int:
        """Frames waiting in the outbox."""
        return len(self.outbox)

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

    # -- the writer task ---------------------------------------------------------------------

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
                    if self._life is not _OPEN:
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
                if self._wants_room and self._below_low_water():
                    self._at_low_water()
                if not self._sends % SLICE:
                    # Sends that never wait (the server buffers) would otherwise drain a whole
                    # outbox in one step: with many writers the loop's timers (the slow rule)
                    # and new connections would wait for all of them.
                    await asyncio.sleep(0)
            if self._wants_room:
                self._at_low_water()
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
            if isinstance(frame, str) or len(run) >= SLICE:
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
        if self._sent(total) and self._wants_room and self._below_low_water():
            self._at_low_water()
        return True

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

    # -- closing -----------------------------------------------------------------------------

    def _drop_frames(self) -> None:
        """The carrier closed: what waits is dropped, and a flush() returns."""
        self.outbox.clear()
        self._sizes.clear()
        self.queued_bytes = 0
        self._wants_room = False
        self._signal_drained()

    async def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and writer is not asyncio.current_task() and not writer.done():
            writer.cancel()
            # asyncio.wait() does not raise the writer's CancelledError, only our own.
            await asyncio.wait([writer])
        inflight, self._inflight = self._inflight, None
        if inflight is not None:  # started in offer(), never taken over: end it here
            inflight[0].close()


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


# The outbox of every carrier that never had to queue a frame (see _init_outbox); it stays
# empty: offer() swaps in a deque of the carrier's own before appending.
_NO_FRAMES: deque[str | Event] = deque()
_NO_SIZES: deque[int] = deque()
