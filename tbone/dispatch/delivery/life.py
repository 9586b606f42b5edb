"""A carrier's life: :class:`Life`, an enum whose transitions are checked, and its holder.

::

    OPEN ──► CLOSING ──► CLOSED

``OPEN``: frames go out. ``CLOSING``: the carrier left every channel and dropped its outbox
(closed by the application, too slow, or its send failed); the connection's close handshake,
if any, is not done. ``CLOSED``: :meth:`~tbone.dispatch.carriers.Carrier.close_connection`
returned. Any other step is a bug and raises :class:`InvalidTransition`.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Literal

from tbone.dispatch.errors import TBoneError

__all__ = ["Closed", "InvalidTransition", "Life", "LifeCycle", "track_closing", "wait_closing"]

#: How a carrier closed, as told to its links: too slow (1013), its send failed, or closed on
#: purpose (by the application, the glue or a channel).
Closed = Literal["slow", "failed", "closed"]


class Life(enum.Enum):
    """Where a carrier is in its life (see the module docstring)."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_NEXT: dict[Life, frozenset[Life]] = {
    Life.OPEN: frozenset({Life.CLOSING}),
    Life.CLOSING: frozenset({Life.CLOSED}),
    Life.CLOSED: frozenset(),
}


class InvalidTransition(TBoneError, RuntimeError):
    """A carrier was moved from ``current`` to a state that cannot follow it (a bug)."""

    current: Life
    new: Life

    def __init__(self, current: Life, new: Life) -> None:
        allowed = ", ".join(s.name for s in _NEXT[current]) or "nothing"
        super().__init__(
            f"a carrier cannot go from {current.name} to {new.name} (after {current.name} "
            f"comes {allowed})",
            current=current,
            new=new,
        )


class LifeCycle:
    """The root of every carrier: its :class:`Life` and the close code it was given.

    ``closed`` is True from ``CLOSING`` on; ``close_code`` is the code the carrier was closed
    with (None while open, and when its send failed: the peer was gone, nothing was sent).
    """

    __slots__ = ("_close_code", "_life")

    _life: Life
    _close_code: int | None

    @property
    def life(self) -> Life:
        """The carrier's state (see :class:`Life`)."""
        return self._life

    @property
    def closed(self) -> bool:
        """True once the carrier left its channels (``CLOSING`` or ``CLOSED``)."""
        return self._life is not Life.OPEN

    @property
    def close_code(self) -> int | None:
        """The code the carrier was closed with; None while open or when its send failed."""
        return self._close_code

    def _advance(self, new: Life) -> None:
        """Move to ``new``; raise :class:`InvalidTransition` when it cannot follow."""
        if new not in _NEXT[self._life]:
            raise InvalidTransition(self._life, new)
        self._life = new


# Close handshakes of carriers closed without waiting (close_soon), referenced until they end.
_closing: set[asyncio.Task[None]] = set()


def track_closing(task: asyncio.Task[None]) -> None:
    """Keep ``task`` (a close handshake run without waiting) until it ends."""
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def wait_closing() -> None:
    """Wait for the close handshakes of carriers closed as too slow (used by Channel.close)."""
    while _closing:
        await asyncio.wait(list(_closing))
