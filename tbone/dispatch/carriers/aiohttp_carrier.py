"""AioHttpWebSocketCarrier: an aiohttp (3.x) ``web.WebSocketResponse`` as a channel subscriber.

aiohttp's ``send_str`` writes to the transport and returns before the bytes leave: it waits for
the transport to drain only every 64 KiB it writes, so a client that stops reading first makes
the server's write buffer grow (to about 270 KiB) before a send blocks.
:meth:`AioHttpWebSocketCarrier.backlog` reports that buffer, and the carrier closes the
connection with 1013 once it plus the outbox passes ``max_bytes``.

**Prepared frames.** An event's frame is built once (``Event.wire``) and written as it is to
every connection whose frames need no compressor state of its own: one without
permessage-deflate (the plain frame), or one that negotiated ``server_no_context_takeover``
(the frame deflated on its own, with the connection's window). aiohttp grants that only when
the client asks; the package's own glue (``add_route``/``serve``) answers every deflate offer
with it, as RFC 7692 lets a server do. The write happens only when aiohttp would write at once
itself: the response is open, no compressed send of aiohttp's is under way, and the transport
is not paused; otherwise the frame goes through ``send_str``, which waits. That reaches into
aiohttp's websocket writer (``_writer``), listed with the releases it was tested on in
:mod:`tbone.dispatch._private.aiohttp` (:data:`TESTED_AIOHTTP`); an aiohttp without it is
served through ``send_str`` alone, with one log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from tbone.dispatch.extras import requires
from tbone.dispatch.timeouts import wait_at_most

with requires(__name__, "aiohttp", extra="aiohttp"):
    import aiohttp
    from aiohttp import web

from tbone.dispatch._private import aiohttp as _private
from tbone.dispatch.carriers import Carrier
from tbone.dispatch.carriers.options import CarrierOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tbone.dispatch.events import Event

__all__ = ["TESTED_AIOHTTP", "AioHttpWebSocketCarrier", "surface_problem"]

logger = logging.getLogger("tbone.dispatch.carriers.aiohttp")

#: The aiohttp releases whose websocket writer the prepared-frame path was tested against.
TESTED_AIOHTTP = _private.TESTED

_warned = False


def surface_problem(ws: Any) -> str | None:
    """What the prepared-frame path needs of a prepared ``ws`` and it lacks, or None."""
    return _private.surface_problem(ws)


class AioHttpWebSocketCarrier(Carrier):
    """Wraps a prepared ``aiohttp.web.WebSocketResponse``.

    Two carriers made for the same response are equal, so
    ``channel.unsubscribe(event, AioHttpWebSocketCarrier(ws))`` removes the one subscribed
    earlier. ``close_timeout`` bounds the close handshake: a peer that does not complete it
    (it stopped reading) has its TCP connection aborted, so its buffered frames are freed.
    ``max_messages`` and ``max_bytes`` are the outbox limits of :class:`Carrier`; the bytes
    aiohttp's transport still buffers count against ``max_bytes``.

    Raises TypeError for anything that is not a ``WebSocketResponse``.
    """

    __slots__ = ("_bits", "close_timeout")

    #: aiohttp raises ClientConnectionResetError (a ConnectionResetError) for a closing
    #: transport; a closed response is turned into ConnectionResetError by :meth:`send_text`.
    disconnect_errors: ClassVar[tuple[type[BaseException], ...]] = (ConnectionError, OSError)

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        close_timeout: float = 5.0,
        **options: Unpack[CarrierOptions],
    ) -> None:
        if not isinstance(ws, web.WebSocketResponse):
            raise TypeError(
                "AioHttpWebSocketCarrier wraps an aiohttp web.WebSocketResponse (ws = "
                f"web.WebSocketResponse(); await ws.prepare(request)), got {type(ws).__name__}"
            )
        super().__init__(ws, **options)
        self.close_timeout = close_timeout
        # The frame variant of this connection, known once the response is prepared: None
        # (plain), a window (deflated on its own), or False (its frames cannot be shared).
        self._bits: int | bool | None = False
        self._prepared = self._write_event
        self._prepared_run = self._write_events

    # -- prepared frames (see the module docstring) ------------------------------------------

    def _variant(self) -> int | bool | None:
        ws = self.connection
        problem = surface_problem(ws)
        if problem is not None:
            _warn_once(problem)
            return False
        return _private.frame_variant(ws)

    def _write_event(self, event: Event) -> bool:
        bits = self._bits if self._bits is not False else self._decide()
        return bits is not False and _private.write_now(self.connection, event.wire(bits))

    def _write_events(self, events: Sequence[Event]) -> bool:
        bits = self._bits if self._bits is not False else self._decide()
        if bits is False:
            return False
        return _private.write_now(self.connection, b"".join([event.wire(bits) for event in events]))

    def _decide(self) -> int | bool | None:
        # Once the response is prepared: this connection's variant, or no prepared frames.
        if not self.connection.prepared:
            return False
        bits = self._bits = self._variant()
        if bits is False:  # its frames cannot be shared: send_str from now on
            self._prepared = self._prepared_run = None
        return bits

    def _transport(self) -> asyncio.Transport | None:
        return _private.transport(self.connection)

    async def send_text(self, text: str) -> None:
        """Send one text frame. Returns once aiohttp buffered it, not when it left."""
        ws = self.connection
        if ws.closed:
            raise ConnectionResetError("the aiohttp websocket is closed")
        if not ws.prepared:
            raise RuntimeError(
                "the aiohttp WebSocketResponse is not prepared: await ws.prepare(request) "
                "before subscribing it"
            )
        await ws.send_str(text)

    def backlog(self) -> int:
        """Bytes in the transport's write buffer (0 once the connection is gone)."""
        transport = self._transport()
        if transport is None or transport.is_closing():
            return 0
        return transport.get_write_buffer_size()

    async def close_connection(self, code: int, reason: str) -> None:
        """Close with ``code``; abort the TCP connection if the handshake takes too long."""
        ws = self.connection
        if not ws.prepared:
            return
        transport = self._transport()
        try:
            await wait_at_most(ws.close(code=code, message=reason.encode()), self.close_timeout)
        except TimeoutError:
            # The peer stopped reading: our close frame sits behind what it did not read.
            if transport is not None:
                transport.abort()


def _warn_once(problem: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.info(
            "aiohttp %s: events go through send_str, framed once per connection (%s; prepared "
            "frames were tested on aiohttp %s)",
            aiohttp.__version__,
            problem,
            ", ".join(TESTED_AIOHTTP),
        )
