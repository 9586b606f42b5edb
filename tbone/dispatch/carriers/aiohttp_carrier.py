"""AioHttpWebSocketCarrier: an aiohttp (3.x) ``web.WebSocketResponse`` as a channel subscriber.

aiohttp's ``send_str`` writes to the transport and returns before the bytes leave: it waits for
the transport to drain only every 64 KiB it writes, so a client that stops reading first makes
the server's write buffer grow (to about 270 KiB) before a send blocks.
:meth:`AioHttpWebSocketCarrier.backlog` reports that buffer, and the carrier closes the
connection with 1013 once it plus the outbox passes ``max_bytes``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from tbone.dispatch.extras import requires
from tbone.dispatch.timeouts import wait_at_most

with requires(__name__, "aiohttp", extra="aiohttp"):
    from aiohttp import web

from tbone.dispatch.carriers import Carrier
from tbone.dispatch.carriers.options import CarrierOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AioHttpWebSocketCarrier"]


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

    __slots__ = ("close_timeout",)

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

    def _transport(self) -> asyncio.Transport | None:
        # aiohttp keeps its websocket writer private; it is the one place the transport (and
        # so the real backlog) can be reached. Tolerate its absence in a future release.
        writer: Any = getattr(self.connection, "_writer", None)
        transport = getattr(writer, "transport", None)
        return transport if isinstance(transport, asyncio.BaseTransport) else None  # type: ignore[return-value]

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
