"""Channels: named, per-process singletons that fan events out to subscribed carriers.

``MemoryChannel(name="pubsub")`` (or any subclass) returns the one channel of that name in the
process, created on first use. The flow of one event::

    publish(name, data) -> backend store -> consumer loop -> Event frame encoded ONCE
        -> each subscribed carrier's bounded outbox -> its writer task -> websocket
                          (or, for a connection behind: the catch-up window -> its outbox)

The rules are stated once, in ``docs/channels.md``: "Publishing and delivery" (order, none
lost), "Flow control" (when a connection is behind, when it is closed with 1013, how far
publishers may run ahead, ``max_message_bytes``), "Waiting for the backend" (:meth:`Channel.ready`)
and "Lifecycle" (the consumer starts on the first subscribe, survives backend faults, resumes
after the last event it delivered).

Writing a backend: subclass :class:`Channel` and implement :meth:`Channel.store`,
:meth:`Channel.listen` and :meth:`Channel.read_history`; the optional hooks are
:meth:`Channel.history_page`, :meth:`Channel.order_key`, :meth:`Channel.on_new_loop`,
:meth:`Channel.close_backend` and :meth:`Channel.fatal_error`
(:mod:`tbone.dispatch.channels.backend`). ``docs/channels.md`` ("A custom backend") has the
contract and a complete example.

A channel is a facade over parts with one job each: the publish gate (checks and publisher
pacing, :mod:`~tbone.dispatch.channels.gate`), the consumer loop
(:mod:`~tbone.dispatch.channels.consumer`), the fan-out (:mod:`~tbone.dispatch.channels.fanout`),
the resume locks (:mod:`~tbone.dispatch.channels.resume`), the counters they share
(:mod:`~tbone.dispatch.channels.counters`) and the consumer's state
(:mod:`~tbone.dispatch.channels.state`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict, TypeVar, cast

from tbone.dispatch import jsonenc
from tbone.dispatch.carriers import Carrier, wait_closing
from tbone.dispatch.channels import registry
from tbone.dispatch.channels.backend import BackendCalls, BackendHooks, page_of
from tbone.dispatch.channels.consumer import YIELD_EVERY as YIELD_EVERY
from tbone.dispatch.channels.consumer import Consumer
from tbone.dispatch.channels.counters import Counters
from tbone.dispatch.channels.fanout import Fanout
from tbone.dispatch.channels.gate import PublishGate
from tbone.dispatch.channels.resume import (
    REPLAY_BYTES,
    REPLAY_EVENTS,
    ResumeLocks,
    replay,
    warn_replay_cap,
)
from tbone.dispatch.channels.state import ChannelState, Lifecycle
from tbone.dispatch.channels.stream import EventStream, StreamOptions, SubscriptionClosed
from tbone.dispatch.checks import seconds, whole_number
from tbone.dispatch.errors import (
    CLOSE_GOING_AWAY,
    ChannelNameConflict,
    ChannelUnavailable,
    MessageTooLarge,
)
from tbone.dispatch.events import Event, History
from tbone.dispatch.timeouts import wait_at_most

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "MAX_MESSAGE_BYTES",
    "WINDOW_BYTES",
    "Channel",
    "ChannelNameConflict",
    "ChannelOptions",
    "ChannelState",
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


class Channel(BackendHooks, BackendCalls, metaclass=registry.ChannelMeta):
    """Base class of channels. See the module docstring for the rules.

    Options common to every backend, each stated in ``docs/channels.md``: ``history`` (events
    kept for resume; "Ids, history and resume"), ``max_message_bytes``, ``window``,
    ``window_bytes``, ``queue_size``, ``queue_bytes``, ``publish_timeout`` ("Flow control")
    and ``backoff`` ("Lifecycle"). A wrong type raises TypeError, a value out of range
    ValueError. A second ``SomeChannel(name=...)`` call returns the first channel; its
    options are ignored.
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
        whole_number("history", history)
        if window is None:
            window = max(1, min(4096, history // 2))
        for option, value in (
            ("max_message_bytes", max_message_bytes),
            ("window", window),
            ("window_bytes", window_bytes),
            ("queue_size", queue_size),
            ("queue_bytes", queue_bytes),
        ):
            whole_number(option, value)
        if window_bytes < max_message_bytes:
            raise ValueError(
                f"window_bytes ({window_bytes}) must hold at least one event of "
                f"max_message_bytes ({max_message_bytes})"
            )
        seconds("publish_timeout", publish_timeout, zero=True)
        self.name = name
        self.history_size = history
        self.max_message_bytes = max_message_bytes
        self.queue_size = max(1, min(queue_size, history // 2))
        self.queue_bytes = queue_bytes
        self.publish_timeout = publish_timeout
        self.backoff = backoff
        self.window_size = window
        self.window_bytes = window_bytes
        # The parts (module docstring); the counters are one object they all hold.
        self._counters = counters = Counters()
        self._life = life = Lifecycle()
        self._fanout = Fanout(name, counters, window, window_bytes)
        self._gate = PublishGate(
            name,
            counters,
            life,
            max_message_bytes=max_message_bytes,
            queue_size=self.queue_size,
            queue_bytes=queue_bytes,
            publish_timeout=publish_timeout,
        )
        self._run = Consumer(self, life, counters, self._gate, self._fanout, backoff)
        self._resume_locks = ResumeLocks()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self._life.state.value}>"

    @property
    def consumer_state(self) -> ChannelState:
        """Where the consumer is: idle, starting, running, reconnecting or closed."""
        return self._life.state

    @property
    def _consumer(self) -> asyncio.Task[None] | None:
        # The consumer's task (tests wait for it).
        return self._life.task

    # -- subscribing -------------------------------------------------------------------------

    def subscribe(self, event: str, carrier: Carrier) -> None:
        """Send ``event`` events to ``carrier`` from now on; starts the consumer if needed.

        Idempotent per connection; the first carrier of a connection is kept
        (``docs/channels.md``, "Subscribing"). Raises ValueError when ``carrier`` is closed.
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
        membership = self._fanout.membership(carrier)
        if membership is not None:
            for event in list(membership.events):
                self._fanout.unsubscribe(event, carrier)

    def subscribers(self, event: str) -> list[Carrier]:
        """The carriers subscribed to ``event``, in subscription order."""
        return [member.carrier for member in self._fanout.by_event.get(event, ())]

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, event: str, data: Any = None) -> Event:
        """Store an event in the backend and return it (with its id).

        Awaits the backend write, and the consumer's progress while the publish gate is full
        (:mod:`~tbone.dispatch.channels.gate`; ``docs/channels.md``, "Flow control"). Raises,
        before anything is stored: TypeError for a name that is not a non-empty str;
        ValueError for a name the protocol cannot carry, so that no client could ever
        subscribe to it (:func:`~tbone.dispatch.events.valid_event_name`); TypeError (or
        ValueError) for ``data`` that :mod:`tbone.dispatch.jsonenc` cannot encode;
        :class:`~tbone.dispatch.events.MessageTooLarge` over ``max_message_bytes``. Then the
        backend's error when the write fails.
        """
        gate = self._gate
        gate.check_name(event)
        if not self.checks_size:
            self.check_size(event, jsonenc.dumps_bytes(data))
        if gate.full():
            await gate.wait()
        stored = await self.store(event, data)
        self._counters.published += 1
        if not self.expects_in_store:
            gate.track(stored, self._run.last_id, self.order_key)
        return stored

    # -- resume ------------------------------------------------------------------------------

    async def history(self, since: str | None = None) -> History:
        """The events still held after id ``since`` (all held events when None), oldest first.

        ``complete`` is False when history does not reach back to ``since``. Raises ValueError
        for an id this channel cannot read.
        """
        return await self.read_history(since)

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

        Every held event of ``events`` after ``since``, a ``recovered`` frame, then live
        events, none lost or repeated; returns ``complete``, False only when events were lost
        (``docs/channels.md``, "Ids, history and resume"; :mod:`~tbone.dispatch.channels.resume`).
        ``since=None`` without ``history`` is a plain subscribe. ``max_events`` and
        ``max_bytes`` are deprecated and have no effect.
        """
        if max_events != REPLAY_EVENTS or max_bytes != REPLAY_BYTES:
            warn_replay_cap("Channel.resume(max_events=, max_bytes=)", stacklevel=2)
        names = set(events)
        if since is None and not history:
            for name in names:
                self.subscribe(name, carrier)
            return True
        live = carrier.live() or carrier
        async with self._resume_locks.held(live):
            return await replay(self, self._fanout, live, names, since)

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
        task = self._life.task
        if task is not None:
            if task.get_loop() is not asyncio.get_running_loop():
                # A channel outlives event loops in tests and reloads: start afresh on this
                # one, also when the old loop cancelled its consumer as it shut down.
                self._life.task = None
                self._gate.on_new_loop()
                self._fanout.on_new_loop()
                self.on_new_loop()
            elif not task.done():
                return
        self._run.start()

    async def ready(self, timeout: float | None = None) -> None:
        """Start the consumer if needed and wait until it reads the backend.

        Once this returns, every event published (from any process) reaches the current
        subscribers (``docs/channels.md``, "Waiting for the backend"). Raises
        :class:`~tbone.dispatch.errors.ChannelUnavailable` after ``timeout`` seconds (None: no
        bound), at once for an error retrying cannot fix (:meth:`fatal_error`), and when the
        channel closes meanwhile.
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be seconds >= 0 or None, got {timeout!r}")
        self.kickoff()
        await self._run.wait_ready(timeout)

    async def close(self, *, forget: bool = False, timeout: float | None = None) -> None:
        """Stop the consumer and close every subscribed carrier with 1001 (going away).

        Awaits the consumer's end, the carriers' close handshakes and :meth:`close_backend`,
        within ``timeout`` seconds (default :attr:`close_timeout`) whatever the backend or the
        peers do (``docs/channels.md``, "Lifecycle"). ``forget=True`` also removes the
        channel from the registry, so its name can be reused.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.close_timeout if timeout is None else timeout)
        consumer, self._life.task = self._life.task, None
        if consumer is not None and not consumer.done():
            if consumer.get_loop() is loop:
                await self._run.stop(consumer, deadline)
            else:
                consumer.cancel()
        self._gate.drop()
        closing = asyncio.gather(
            *(c.close(CLOSE_GOING_AWAY, "channel closed") for c in list(self._fanout.members)),
            return_exceptions=True,
        )
        await self._within(closing, deadline - loop.time(), "closing its subscribers")
        self._fanout.forget_all()  # in case a carrier's close failed early
        await self._within(wait_closing(), deadline - loop.time(), "closing slow subscribers")
        await self._within(
            self.close_backend(), max(1.0, deadline - loop.time()), "closing the backend"
        )
        self._life.to(ChannelState.CLOSED)
        if forget:
            registry.forget(self)

    async def _within(self, step: Awaitable[Any], timeout: float, what: str) -> None:
        try:
            await wait_at_most(step, max(timeout, 0.0))
        except TimeoutError:
            logger.warning(
                "channel %r: %s did not finish within the close timeout; going on", self.name, what
            )

    async def __aenter__(self: C) -> C:
        self.kickoff()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- observability -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters and state, for logs and metrics, all since the process started: each key
        is in ``docs/channels.md`` ("stats()"); ``consumer`` is a :class:`ChannelState`'s
        value."""
        fanout = self._fanout
        return {
            "name": self.name,
            "backend": self.backend,
            "subscribers": len(fanout.members),
            "subscriptions": sum(len(s) for s in fanout.by_event.values()),
            **self._counters.as_dict(),
            "lagging": len(fanout.lagging),
            "window": len(fanout.window),
            "waited_s": round(fanout.waited, 3),
            "pending": len(self._gate.pending),
            "consumer": self._life.state.value,
            "last_error": self._run.last_error,
            "last_id": self._run.last_id,
        }


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
