"""What the package reads of uvicorn that uvicorn does not publish.

* The protocol object behind an ASGI ``send``: uvicorn hands the app a bound method of its
  protocol, which holds the connection's ``transport`` (for the real backlog, and to abort a
  peer that does not read) and its ``config`` (``ws_max_size``). :func:`server_protocol`
  finds it through middleware closures.
* What ``tbone_asgi.uvicorn.WebSocketProtocol`` uses of its base class,
  ``WebSocketsSansIOProtocol`` (:data:`PROTOCOL_SURFACE`; :func:`protocol_problem`).

Tested on the uvicorn releases in :data:`TESTED` (the oldest the package supports and the
newest); ``tests/dispatch/private/test_uvicorn.py`` fails when the installed one moves it.
Without it, the backlog is what our outbox sees, and the protocol serves as uvicorn's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

__all__ = [
    "PROTOCOL_SURFACE",
    "SURFACE",
    "TESTED",
    "is_uvicorn",
    "protocol_problem",
    "server_protocol",
    "transport_of",
    "ws_max_size",
]

#: The uvicorn releases this module was tested on: the oldest the package supports and the
#: newest (the GitHub workflow runs the prepared-frame tests on the oldest).
TESTED = ("0.50.0", "0.55.0")

#: What ``WebSocketProtocol`` uses of uvicorn's websockets-sansio protocol, on each instance.
PROTOCOL_SURFACE = (
    "conn",
    "transport",
    "writable",
    "close_sent",
    "handshake_complete",
    "initial_response",
    "config",
    "queue",
    "loop",
    "close_timer",
    "close_timeout",
)
#: What the rest reads of the protocol object behind ``send``.
SURFACE = ("send.__self__ (the protocol)", "protocol.transport", "protocol.config.ws_max_size")


def server_protocol(send: Any, *, depth: int = 6) -> Any:
    """The server's protocol object behind an ASGI ``send`` callable, or None.

    That is the object ``send`` is a bound method of, when it holds the connection's
    ``transport`` (uvicorn's protocols do; they also keep their ``uvicorn.Config`` as
    ``config``). Middleware wraps ``send`` in closures (Starlette's exception middleware
    does); the closure cells are followed up to ``depth`` wrappers deep.
    """
    seen: set[int] = set()
    todo: list[tuple[Any, int]] = [(send, 0)]
    while todo:
        fn, level = todo.pop()
        if id(fn) in seen or level > depth:
            continue
        seen.add(id(fn))
        owner = getattr(fn, "__self__", None)
        transport = getattr(owner, "transport", None)
        if transport is not None and hasattr(transport, "get_write_buffer_size"):
            return owner
        func = getattr(fn, "__func__", fn)
        for cell in getattr(func, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(value):
                todo.append((value, level + 1))
    return None


def transport_of(send: Any, *, depth: int = 6) -> asyncio.Transport | None:
    """The ``asyncio.Transport`` behind an ASGI ``send`` callable, or None."""
    protocol = server_protocol(send, depth=depth)
    return None if protocol is None else protocol.transport


def is_uvicorn(protocol: object) -> bool:
    """True when ``protocol`` (from :func:`server_protocol`) is one of uvicorn's."""
    return protocol is not None and type(protocol).__module__.startswith("uvicorn.")


def ws_max_size(protocol: object) -> int | None:
    """uvicorn's ``ws_max_size`` for the connection of ``protocol``, or None if unknown."""
    size = getattr(getattr(protocol, "config", None), "ws_max_size", None)
    return size if isinstance(size, int) else None


def protocol_problem(protocol: object, surface: Sequence[str] = PROTOCOL_SURFACE) -> str | None:
    """What ``WebSocketProtocol`` needs of uvicorn's protocol (``surface``) and ``protocol``
    lacks, or None."""
    from websockets.server import ServerProtocol

    missing = [name for name in surface if not hasattr(protocol, name)]
    if missing:
        return f"its protocol has no {', '.join(missing)}"
    if not isinstance(getattr(protocol, "conn", None), ServerProtocol):
        return "its protocol's conn is not a websockets ServerProtocol"
    if not hasattr(getattr(protocol, "writable", None), "is_set"):
        return "its protocol's writable is not an asyncio.Event"
    return None
