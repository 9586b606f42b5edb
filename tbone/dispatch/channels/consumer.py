"""The consumer loop: one task per channel that reads the backend and hands events out.

Rules (``docs/channels.md``, "Backend faults"):

* It reads with the backend's ``listen(last_id)`` and delivers each event through the
  channel's ``deliver`` (an override written for TBone, without ``now=``, is called without
  it), in order; after a delivery that left the catch-up window blocked it awaits the fan-out's
  ``make_room``, and every :data:`YIELD_EVERY` events it lets other tasks run.
* A fault of the backend is logged and counted; the loop waits (full jitter, doubling from
  ``backoff[0]`` to ``backoff[1]``) and listens again after the last event it delivered. An
  error that retrying cannot fix (the backend's ``fatal_error``) is logged at ERROR with its
  fix and makes ``ready()`` fail at once; the loop still retries.
* ``mark_ready`` (the read position is fixed) makes ``ready()`` return and resets the backoff.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar, Protocol

from tbone.dispatch.channels.counters import Counters
from tbone.dispatch.channels.fanout import Fanout
from tbone.dispatch.channels.gate import PublishGate
from tbone.dispatch.channels.state import ChannelState, Lifecycle
from tbone.dispatch.errors import ChannelUnavailable
from tbone.dispatch.events import Event

__all__ = ["YIELD_EVERY", "Consumer"]

logger = logging.getLogger("tbone.dispatch.channels")

#: The consumer lets other tasks run after this many events in a row.
YIELD_EVERY = 64


class Backend(Protocol):
    """What the consumer needs of its channel (the backend hooks of ``Channel``)."""

    name: str
    backend: ClassVar[str]

    def listen(self, after: str | None) -> AsyncIterator[Event | Sequence[Event]]: ...

    def deliver(self, event: Event) -> None: ...

    def mark_ready(self) -> None: ...

    def fatal_error(self, exc: Exception) -> str | None: ...


class Consumer:
    """The consumer of one channel: its loop, its position, its faults and readiness."""

    def __init__(
        self,
        channel: Backend,
        life: Lifecycle,
        counters: Counters,
        gate: PublishGate,
        fanout: Fanout,
        backoff: tuple[float, float],
    ) -> None:
        self.channel = channel
        self.life = life
        self.counters = counters
        self.gate = gate
        self.fanout = fanout
        self.backoff = backoff
        self.delay = backoff[0]
        #: The id of the last event delivered: where the loop listens again after a fault.
        self.last_id: str | None = None
        self.last_error: str | None = None
        self._ready: asyncio.Event | None = None
        # Set while the loop's last error is one retrying cannot fix; _fatal says what to do.
        self._refused: asyncio.Event | None = None
        self._fatal: str | None = None

    def start(self) -> None:
        """Start the loop on the running event loop (the caller checked that none runs)."""
        self.life.to(ChannelState.STARTING)
        self._ready = asyncio.Event()
        self._refused = asyncio.Event()
        self._fatal = None
        self.life.task = asyncio.get_running_loop().create_task(
            self.run(), name=f"tbone channel {self.channel.name!r}"
        )

    def mark_ready(self) -> None:
        """The backend reads from a fixed position: ``ready()`` returns; the backoff resets.

        A ``listen`` driven by hand, with no consumer started (idle or closed), changes no
        state.
        """
        if self.life.state not in (ChannelState.IDLE, ChannelState.CLOSED):
            self.life.to(ChannelState.RUNNING)
        self.delay = self.backoff[0]  # the backend answers again: the next fault starts afresh
        self._fatal = None
        if self._refused is not None:
            self._refused.clear()
        if self._ready is not None:
            self._ready.set()

    async def wait_ready(self, timeout: float | None) -> None:
        """Wait until :meth:`mark_ready` (see ``Channel.ready``, which started the loop)."""
        ready, refused, task = self._ready, self._refused, self.life.task
        assert ready is not None
        assert refused is not None
        assert task is not None
        if ready.is_set():
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        if not refused.is_set():
            waits = [loop.create_task(ready.wait()), loop.create_task(refused.wait())]
            try:
                # asyncio.wait: a timeout cancels nothing and a cancellation is never lost.
                await asyncio.wait(
                    [*waits, task], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiting in waits:
                    waiting.cancel()
            if ready.is_set():
                return
        waited = loop.time() - started
        if self._fatal is not None:
            reason, fix = "refused", self._fatal
        elif task.done():
            reason, fix = "closed", "start it again (subscribe, kickoff or ready)"
        else:
            reason = "timeout"
            fix = (
                "check that the backend runs and that the channel's address is right, or wait "
                "longer (the ready timeout)"
            )
        raise ChannelUnavailable(
            self.channel.name,
            self.channel.backend,
            reason,
            last_error=self.last_error,
            waited=timeout if reason == "timeout" and timeout is not None else waited,
            fix=fix,
        )

    async def run(self) -> None:
        """The loop (see the module docstring); ends only when cancelled."""
        channel, life, gate, fanout = self.channel, self.life, self.gate, self.fanout
        self.delay = self.backoff[0]
        handed = 0
        # An override of deliver(event) written for TBone gets no batching hint; one that
        # takes now= (as Channel.deliver does) gets it.
        deliver = channel.deliver
        hinted = "now" in inspect.signature(deliver).parameters
        while True:
            try:
                async for item in channel.listen(self.last_id):
                    if life.state is not ChannelState.RUNNING:
                        channel.mark_ready()  # for backends that never call it themselves
                    batch = (item,) if isinstance(item, Event) else item
                    last = len(batch) - 1
                    for index, event in enumerate(batch):
                        if hinted:
                            # Before a batch's last event, more follow at once: writers batch.
                            deliver(event, now=index == last)  # type: ignore[call-arg]
                        else:
                            deliver(event)
                        # deliver() records it too; the position must not depend on an override.
                        self.last_id = event.id
                        if gate.pending and event.id in gate.pending:
                            gate.delivered(event.id)
                        if fanout.blocked:
                            await fanout.make_room()
                        handed += 1
                        if handed % YIELD_EVERY == 0:
                            # A backlog of events is handed out in one go otherwise: let
                            # writers send and timers (the slow rule) run between slices of it.
                            await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if life.state is ChannelState.CLOSED:
                    return  # left behind by a close that could not stop it: stop now
                self._failed(exc)
            self.counters.reconnects += 1
            # Full jitter: many processes that lost the same server do not return in step.
            delay = self.delay
            self.delay = min(delay * 2, self.backoff[1])
            await asyncio.sleep(random.uniform(delay / 2, delay))

    def _failed(self, exc: Exception) -> None:
        self.life.to(ChannelState.RECONNECTING)
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.counters.errors += 1
        self._fatal = self._fix_for(exc)
        refused = self._refused
        if self._fatal is None:
            if refused is not None:
                refused.clear()
            logger.warning(
                "channel %r: backend failed (%s); retrying in %.2fs",
                self.channel.name,
                self.last_error,
                self.delay,
            )
        else:
            if refused is not None:
                refused.set()  # ready() fails now instead of waiting
            logger.error(
                "channel %r: backend refused (%s); retrying cannot fix this: %s "
                "(retrying in %.2fs)",
                self.channel.name,
                self.last_error,
                self._fatal,
                self.delay,
            )

    def _fix_for(self, exc: Exception) -> str | None:
        try:
            return self.channel.fatal_error(exc)
        except Exception:  # a faulty hook must not stop the consumer: retry as usual
            logger.exception("channel %r: fatal_error() failed on %r", self.channel.name, exc)
            return None

    async def stop(self, task: asyncio.Task[None], deadline: float) -> None:
        """Cancel ``task`` until it ends, or until ``deadline`` (loop time): then leave it."""
        loop = asyncio.get_running_loop()
        while not task.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.warning(
                    "channel %r: the consumer did not stop within the close timeout; "
                    "leaving it behind",
                    self.channel.name,
                )
                return
            # Cancelled again each second: library code we await may lose a cancellation
            # (asyncio.wait_for before Python 3.12; see tbone.dispatch.timeouts).
            task.cancel()
            await asyncio.wait((task,), timeout=min(remaining, 1.0))
