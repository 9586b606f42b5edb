"""The counters of one channel: one object that the channel and its fan-out both hold.

Every count is since the process started; ``Channel.stats()`` says what each one means.
"""

from __future__ import annotations

__all__ = ["Counters"]


class Counters:
    """A channel's counters, one attribute each (cheaper on the delivery path than a dict)."""

    #: The counters, in the order :meth:`as_dict` gives them (``stats()``'s order).
    NAMES = (
        "published",
        "delivered",
        "dropped",
        "closed_slow",
        "reconnects",
        "errors",
        "refused",
        "lagged",
        "waits",
        "publish_waits",
        "gaps",
    )
    __slots__ = NAMES

    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self.dropped = 0
        self.closed_slow = 0
        self.reconnects = 0
        self.errors = 0
        self.refused = 0
        self.lagged = 0
        self.waits = 0
        self.publish_waits = 0
        self.gaps = 0

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (AttributeError for a name not counted)."""
        setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        """Every counter by name."""
        return {name: getattr(self, name) for name in self.NAMES}
