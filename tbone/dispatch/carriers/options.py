"""CarrierOptions: the keyword options of the :class:`~tbone.dispatch.carriers.Carrier` base.

Every bundled carrier takes them as ``**options: Unpack[CarrierOptions]`` and hands them to the
base class as they are, so their names and types are written once and a misspelt one is a type
error (and a TypeError at run time) wherever a carrier is made.
"""

from __future__ import annotations

from typing import TypedDict

__all__ = ["CarrierOptions"]


class CarrierOptions(TypedDict, total=False):
    """``max_messages`` and ``max_bytes``: the bounds of the connection's outbox (None: 1,000
    frames, 1 MiB). ``slow_timeout``: seconds a connection behind may go without completing a
    send before it is closed with 1013 (None: 5). What each does:
    ``docs/channels.md#flow-control``.
    """

    max_messages: int | None
    max_bytes: int | None
    slow_timeout: float | None
