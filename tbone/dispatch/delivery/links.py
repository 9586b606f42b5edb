"""The channels one connection is subscribed on, and the one live carrier per connection.

A channel registers a :class:`Link` on the connection's live carrier (``Carrier.bind``) and
the carrier calls back only through it: ``refill()`` when a connection that was behind has room
again, ``carrier_closed(how)`` when it closed. :class:`Links` is the carrier's side: the links
bound, and those of the channels holding frames back for it (it *lags* on them). The registry
of live carriers (:func:`live`, :func:`claim`, :func:`release`) makes every channel a
connection subscribes on share one carrier, so frames from several channels never race on
one websocket.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from tbone.dispatch.delivery.life import Closed

__all__ = ["Link", "Links", "claim", "live", "live_connections", "release"]


class Link(Protocol):
    """A channel's record of one connection, registered with ``Carrier.bind``."""

    def refill(self) -> None:
        """The connection has room again: offer the events it lags on (``Carrier.lag``)."""

    def carrier_closed(self, how: Closed) -> None:
        """The carrier closed and left every channel: forget the connection."""


class Links:
    """The links bound on one carrier (one per channel), and those it lags on, in order."""

    __slots__ = ("bound", "lagging")

    def __init__(self) -> None:
        self.bound: dict[Link, None] = {}
        self.lagging: dict[Link, None] = {}

    def add(self, link: Link) -> None:
        self.bound[link] = None

    def remove(self, link: Link) -> bool:
        """Forget ``link``; True when no link is left."""
        self.bound.pop(link, None)
        self.lagging.pop(link, None)
        return not self.bound

    def lag(self, link: Link) -> None:
        self.lagging[link] = None

    def unlag(self, link: Link) -> None:
        self.lagging.pop(link, None)

    def refill(self, closed: Callable[[], bool]) -> None:
        """Ask every channel the connection lags on for more, until ``closed()``."""
        for link in tuple(self.lagging):
            link.refill()
            if closed():
                return

    def detach(self, how: Closed) -> None:
        """Tell every channel the carrier closed (``how``), and forget them all."""
        bound, self.bound = list(self.bound), {}
        self.lagging = {}
        for link in bound:
            link.carrier_closed(how)


C = TypeVar("C", bound=Hashable)

# The one live carrier per connection (carriers hash and compare by the connection they wrap).
_live: dict[Hashable, Hashable] = {}


def live(carrier: C) -> C | None:
    """The live carrier of the connection of ``carrier`` (it, or an equal one), or None."""
    return _live.get(carrier)  # type: ignore[return-value]


def claim(carrier: Hashable) -> None:
    """Make ``carrier`` the live carrier of its connection."""
    _live[carrier] = carrier


def release(carrier: Hashable) -> None:
    """``carrier`` left every channel: its connection has no live carrier if it was it."""
    if _live.get(carrier) is carrier:
        del _live[carrier]


def live_connections() -> int:
    """Connections subscribed on some channel in this process (for leak checks and metrics)."""
    return len(_live)
