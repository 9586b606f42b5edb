"""What the package reads of Sanic that Sanic does not publish.

Sanic's websocket object (``WebsocketImplProtocol``) keeps its ``websockets`` protocol as
``ws_proto`` (whose ``extensions`` say if frames are plain), the HTTP protocol under it as
``io_proto`` (its ``transport``, and the ``_can_write`` event it clears while the transport is
paused), the ``conn_mutex`` a ``send`` holds, and ``data_finished_fut``, done once the handler
finished. :func:`write_now` writes prepared frames only when Sanic itself would write at once.

Tested on the Sanic releases in :data:`TESTED`; ``tests/dispatch/private/test_sanic.py``
fails when the installed one moves it. Without it, events go through ``ws.send``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.protocol import State  # Sanic's own dependency: here whenever Sanic is

__all__ = ["SURFACE", "TESTED", "handler_finished", "surface_problem", "transport", "write_now"]

#: The Sanic releases this module was tested on.
TESTED = ("25.12.1",)
_WS_SURFACE = ("ws_proto", "io_proto", "conn_mutex", "data_finished_fut")
#: What it reads.
SURFACE = (*(f"ws.{name}" for name in _WS_SURFACE), "ws.io_proto._can_write")


def surface_problem(ws: Any) -> str | None:
    """What this module needs of Sanic's websocket ``ws`` and it lacks, or None."""
    missing = [name for name in _WS_SURFACE if not hasattr(ws, name)]
    if missing:
        return f"its websocket has no {', '.join(missing)}"
    if not hasattr(getattr(ws.io_proto, "_can_write", None), "is_set"):
        return "its protocol has no _can_write event"
    if getattr(ws.ws_proto, "extensions", None):
        return "the connection negotiated an extension (its frames are not plain)"
    return None


def write_now(ws: Any, data: bytes) -> bool:
    """Write ``data`` (whole frames) if Sanic would write at once itself; else False.

    That is ``ws.send``'s own path (under its mutex, then ``io_proto.send``): the websocket
    open, no send under way, the handler not finished, the transport writable and open.
    """
    io_proto = ws.io_proto
    if io_proto is None or ws.ws_proto.state is not State.OPEN or ws.conn_mutex.locked():
        return False
    finished = ws.data_finished_fut
    transport = io_proto.transport
    if (
        finished is None
        or finished.done()
        or not io_proto._can_write.is_set()
        or transport is None
        or transport.is_closing()
    ):
        return False
    transport.write(data)
    return True


def transport(ws: Any) -> asyncio.Transport | None:
    """The transport under Sanic's websocket ``ws``, or None once the connection is gone."""
    io_proto = ws.io_proto
    return None if io_proto is None else io_proto.transport


def handler_finished(ws: Any) -> bool:
    """True once the handler of ``ws`` finished (or its connection is gone)."""
    finished = ws.data_finished_fut
    return transport(ws) is None or finished is None or finished.done()
