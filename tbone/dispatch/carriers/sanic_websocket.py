"""SanicWebSocketCarrier: a Sanic (25.x) websocket as a channel subscriber.

Sanic's ``ws.send`` waits while the transport is paused (its write buffer is over the high-water
mark), so a client that stops reading blocks our writer task after about a thousand small
frames; the frames behind it pile up in the carrier's bounded outbox, which closes the
connection with 1013 when it overflows. :meth:`SanicWebSocketCarrier.backlog` adds what sits in
the transport's write buffer to the same limit.

The seed's handler works as written (``docs/carriers.md``)::

    async def resource_event_websocket(request, ws):
        request.app.ctx.pubsub = MemoryChannel(name="pubsub")
        request.app.ctx.pubsub.subscribe("resource_create", SanicWebSocketCarrier(ws))
        while True:
            await ws.recv()
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

try:
    from sanic.exceptions import RequestCancelled, ServerError, WebsocketClosed
    from sanic.server.websockets.impl import WebsocketImplProtocol
    from websockets.exceptions import ConnectionClosed
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "tbone.dispatch.carriers.sanic_websocket needs Sanic: pip install 'tbone-asgi[sanic]'"
    ) from exc

from tbone.dispatch.carriers import Carrier

__all__ = ["SanicWebSocketCarrier"]


class SanicWebSocketCarrier(Carrier):
    """Wraps the ``ws`` object Sanic passes to a websocket handler.

    Two carriers made for the same ``ws`` are equal, so
    ``channel.unsubscribe(event, SanicWebSocketCarrier(ws))`` removes the one subscribed earlier.
    ``close_timeout`` bounds the close handshake: a peer that does not answer within it (it
    stopped reading) has its TCP connection aborted, so its buffered frames are freed.
    ``max_messages`` and ``max_bytes`` are the outbox limits of :class:`Carrier`.

    Raises TypeError for anything that is not a Sanic websocket (for example the request).
    """

    #: A closed websocket (Sanic's own error, or the ``websockets`` protocol's), a transport
    #: that is closing (Sanic raises RequestCancelled), or a socket error.
    disconnect_errors: ClassVar[tuple[type[BaseException], ...]] = (
        WebsocketClosed,
        ConnectionClosed,
        ConnectionError,
        OSError,
    )

    def __init__(
        self,
        ws: Any,
        *,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        close_timeout: float = 5.0,
    ) -> None:
        if not isinstance(ws, WebsocketImplProtocol):
            raise TypeError(
                f"SanicWebSocketCarrier wraps the websocket Sanic passes to a handler "
                f"(async def handler(request, ws)), got {type(ws).__name__}"
            )
        super().__init__(ws, max_messages=max_messages, max_bytes=max_bytes)
        self.close_timeout = close_timeout

    def _transport(self) -> asyncio.Transport | None:
        io_proto = self.connection.io_proto
        return None if io_proto is None else io_proto.transport

    async def send_text(self, text: str) -> None:
        """Send one text frame; waits while Sanic's transport is paused (the peer is slow)."""
        try:
            await self.connection.send(text)
        except RequestCancelled:
            # Sanic's own signal that the transport is closing; it subclasses CancelledError,
            # which must not escape as if our task had been cancelled.
            raise ConnectionResetError("the Sanic websocket's transport is closing") from None
        except ServerError as exc:
            if self._transport() is None or self.connection.data_finished_fut is None:
                raise ConnectionResetError(f"the Sanic websocket is finished: {exc}") from None
            raise

    def backlog(self) -> int:
        """Bytes in the transport's write buffer (0 once the connection is gone)."""
        transport = self._transport()
        if transport is None:
            return 0
        return transport.get_write_buffer_size()

    async def close_connection(self, code: int, reason: str) -> None:
        """Close with ``code``; abort the TCP connection if the handshake takes too long."""
        ws = self.connection
        try:
            await asyncio.wait_for(ws.close(code, reason), self.close_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            pass
        else:
            if await ws.wait_for_connection_lost(self.close_timeout):
                return
        # The peer neither read our close frame nor closed: free what we buffer for it.
        transport = self._transport()
        if transport is not None:
            transport.abort()
