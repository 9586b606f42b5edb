"""A channel's life: the state of its consumer, as an enum with checked transitions.

::

    IDLE ──kickoff──► STARTING ──mark_ready──► RUNNING ◄──mark_ready── RECONNECTING
                          │                       │                        ▲
                          └───── backend fault ───┴────────────────────────┘
    any ──close──► CLOSED ──kickoff──► STARTING   (kickoff on a new event loop: STARTING too)

``Channel.stats()["consumer"]`` is the state's value.
"""

from __future__ import annotations

import asyncio
import enum

__all__ = ["ChannelState", "Lifecycle"]


class ChannelState(str, enum.Enum):
    """Where a channel's consumer is (the value is what ``stats()`` shows)."""

    IDLE = "idle"  #: never started
    STARTING = "starting"  #: started; the backend has not fixed its read position yet
    RUNNING = "running"  #: reading: an event published now reaches the subscribers
    RECONNECTING = "reconnecting"  #: the backend failed; the consumer retries with backoff
    CLOSED = "closed"  #: closed by ``Channel.close()``; a subscribe starts it again

    def __str__(self) -> str:
        return self.value


_S = ChannelState
#: The transitions allowed, from each state.
_NEXT: dict[ChannelState, frozenset[ChannelState]] = {
    _S.IDLE: frozenset({_S.STARTING, _S.CLOSED}),
    _S.STARTING: frozenset({_S.STARTING, _S.RUNNING, _S.RECONNECTING, _S.CLOSED}),
    _S.RUNNING: frozenset({_S.STARTING, _S.RUNNING, _S.RECONNECTING, _S.CLOSED}),
    _S.RECONNECTING: frozenset({_S.STARTING, _S.RUNNING, _S.RECONNECTING, _S.CLOSED}),
    _S.CLOSED: frozenset({_S.STARTING, _S.CLOSED}),
}


class Lifecycle:
    """The consumer's task and state, which the publish gate and the consumer both read."""

    __slots__ = ("state", "task")

    def __init__(self) -> None:
        self.state = ChannelState.IDLE
        self.task: asyncio.Task[None] | None = None

    def to(self, state: ChannelState) -> None:
        """Move to ``state``; RuntimeError for a transition the diagram above does not have."""
        if state not in _NEXT[self.state]:
            raise RuntimeError(f"a channel cannot go from {self.state.value} to {state.value}")
        self.state = state

    def live(self) -> bool:
        """The consumer task runs, on the running event loop."""
        task = self.task
        return task is not None and not task.done() and task.get_loop() is _running_loop()

    def reading(self) -> bool:
        """The consumer runs here and reads the backend (RUNNING)."""
        return self.state is ChannelState.RUNNING and self.live()


def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()
