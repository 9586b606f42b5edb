"""What the package reads of aiohttp that aiohttp does not publish.

A ``WebSocketResponse`` keeps its websocket writer as ``_writer``; the writer holds the
``transport`` (for the real backlog, and to abort a peer that does not read), the
``protocol`` whose ``_paused`` flag says the transport is over its high-water mark,
``_closing``, the ``_send_lock`` a compressed send holds, and the deflate settings
(``compress``: the window bits or 0, ``notakeover``). :func:`write_now` writes prepared frames
only when aiohttp itself would write at once.

Tested on the aiohttp releases in :data:`TESTED`; ``tests/dispatch/private/test_aiohttp.py`` fails
when the installed one moves it. Without it, events go through ``send_str``.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["SURFACE", "TESTED", "frame_variant", "surface_problem", "transport", "write_now"]

#: The aiohttp releases this module was tested on.
TESTED = ("3.14.5",)
#: What it reads of a prepared response's ``_writer``.
WRITER_SURFACE = ("transport", "protocol", "_closing", "_send_lock", "compress", "notakeover")
SURFACE = ("WebSocketResponse._writer", *(f"_writer.{name}" for name in WRITER_SURFACE))


def surface_problem(ws: Any) -> str | None:
    """What this module needs of a prepared ``ws`` and it lacks, or None."""
    writer = getattr(ws, "_writer", None)
    if writer is None:
        return "its WebSocketResponse has no _writer"
    missing = [name for name in WRITER_SURFACE if not hasattr(writer, name)]
    if missing:
        return f"its websocket writer has no {', '.join(missing)}"
    if not isinstance(getattr(writer.protocol, "_paused", None), bool):
        return "its protocol has no _paused flag"
    return None


def frame_variant(ws: Any) -> int | bool | None:
    """The frames a prepared ``ws`` takes: None (plain), the deflate window bits (deflated
    without context takeover), or False (its frames cannot be shared)."""
    writer = ws._writer
    if not writer.compress:
        return None
    return int(writer.compress) if writer.notakeover else False


def write_now(ws: Any, data: bytes) -> bool:
    """Write ``data`` (whole frames) if aiohttp would write at once itself; else False.

    That is ``send_frame``'s own path: not closing, no locked compressed send, then the
    transport, unless it is paused or closing.
    """
    writer = ws._writer
    if ws.closed or writer is None or writer._closing or writer._send_lock.locked():
        return False
    transport = writer.transport
    if writer.protocol._paused or transport.is_closing():
        return False
    transport.write(data)
    return True


def transport(ws: Any) -> asyncio.Transport | None:
    """The transport of ``ws``, or None (not prepared, gone, or a release without it)."""
    writer: Any = getattr(ws, "_writer", None)
    found = getattr(writer, "transport", None)
    return found if isinstance(found, asyncio.BaseTransport) else None  # type: ignore[return-value]
