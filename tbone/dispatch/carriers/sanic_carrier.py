"""SanicWebSocketCarrier: a Sanic (25.x) websocket as a channel subscriber.

Sanic's ``ws.send`` waits while the transport is paused (its write buffer is over the high-water
mark), so a client that stops reading blocks our writer task after about a thousand small
frames; the frames behind it pile up in the carrier's bounded outbox, which closes the
connection with 1013 when it overflows. :meth:`SanicWebSocketCarrier.backlog` adds what sits in
the transport's write buffer to the same limit.

**Prepared frames.** Sanic never negotiates permessage-deflate, so every connection takes the
same plain frame: an event's frame is built once (``Event.wire(None)``) and written straight to
the transport, with no framing per connection, whenever Sanic itself would write it at once:
the websocket is open, no ``send`` of Sanic's is under way, and the transport is not paused.
Otherwise the frame goes through ``ws.send``, which waits. That reaches into Sanic's websocket
object, listed with the releases it was tested on in :mod:`tbone.dispatch._private.sanic`
(:data:`TESTED_SANIC`); a Sanic without it is served through ``ws.send`` alone, with one log
line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from tbone.dispatch.extras import requires
from tbone.dispatch.timeouts import wait_at_most

with requires(__name__, "Sanic", extra="sanic"):
    import sanic
    from sanic.exceptions import RequestCancelled, ServerError, WebsocketClosed
    from sanic.server.websockets.impl import WebsocketImplProtocol
    from websockets.exceptions import ConnectionClosed

from tbone.dispatch._private import sanic as _private
from tbone.dispatch.carriers import Carrier
from tbone.dispatch.carriers.options import CarrierOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tbone.dispatch.events import Event

__all__ = ["TESTED_SANIC", "SanicWebSocketCarrier", "surface_problem"]

logger = logging.getLogger("tbone.dispatch.carriers.sanic")

#: The Sanic releases whose websocket object the prepared-frame path was tested against.
TESTED_SANIC = _private.TESTED

_warned = False


def surface_problem(ws: Any) -> str | None:
    """What the prepared-frame path needs of Sanic's websocket and ``ws`` lacks, or None."""
    return _private.surface_problem(ws)


class SanicWebSocketCarrier(Carrier):
    """Wraps the ``ws`` object Sanic passes to a websocket handler.

    Two carriers made for the same ``ws`` are equal, so
    ``channel.unsubscribe(event, SanicWebSocketCarrier(ws))`` removes the one subscribed earlier.
    ``close_timeout`` bounds the close handshake: a peer that does not answer within it (it
    stopped reading) has its TCP connection aborted, so its buffered frames are freed.
    ``max_messages`` and ``max_bytes`` are the outbox limits of :class:`Carrier`.

    Raises TypeError for anything that is not a Sanic websocket (for example the request).
    """

    #: A closed websocket (Sanic's own error, or the ``websockets`` protocol's) or a socket
    #: error. :meth:`send_text` turns Sanic's RequestCancelled (a closing transport) and its
    #: "finished" ServerError into ConnectionResetError.
    __slots__ = ("close_timeout",)

    disconnect_errors: ClassVar[tuple[type[BaseException], ...]] = (
        WebsocketClosed,
        ConnectionClosed,
        ConnectionError,
        OSError,
    )

    def __init__(
        self, ws: Any, *, close_timeout: float = 5.0, **options: Unpack[CarrierOptions]
    ) -> None:
        if type(ws).__name__ == "WebSocketConnection":
            # Sanic run as an ASGI app hands out this shim: it cannot close with a code and
            # reports a disconnect as an empty message, so it cannot honour the contract.
            raise TypeError(
                "SanicWebSocketCarrier needs Sanic's own server; under an ASGI server "
                "(uvicorn, hypercorn) wrap the app: app = ChannelMiddleware(app, path=..., "
                "channel=...) from tbone_asgi (tbone-asgi docs: ASGI, 'Django, Quart, Litestar, "
                "bare ASGI')"
            )
        if not isinstance(ws, WebsocketImplProtocol):
            raise TypeError(
                f"SanicWebSocketCarrier wraps the websocket Sanic passes to a handler "
                f"(async def handler(request, ws)), got {type(ws).__name__}"
            )
        super().__init__(ws, **options)
        self.close_timeout = close_timeout
        problem = surface_problem(ws)
        if problem is None:
            self._prepared = self._write_event
            self._prepared_run = self._write_events
        else:
            _warn_once(problem)

    # -- prepared frames (see the module docstring) ------------------------------------------

    def _write_event(self, event: Event) -> bool:
        return _private.write_now(self.connection, event.wire(None))

    def _write_events(self, events: Sequence[Event]) -> bool:
        return _private.write_now(self.connection, b"".join([event.wire(None) for event in events]))

    def _transport(self) -> asyncio.Transport | None:
        return _private.transport(self.connection)

    async def send_text(self, text: str) -> None:
        """Send one text frame; waits while Sanic's transport is paused (the peer is slow)."""
        try:
            await self.connection.send(text)
        except RequestCancelled:
            # Sanic's own signal that the transport is closing; it subclasses CancelledError,
            # which must not escape as if our task had been cancelled.
            raise ConnectionResetError("the Sanic websocket's transport is closing") from None
        except ServerError as exc:
            # Sanic's words for "the handler finished": the connection is going away.
            if _private.handler_finished(self.connection):
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
            await wait_at_most(ws.close(code, reason), self.close_timeout)
        except TimeoutError:
            pass
        else:
            if await ws.wait_for_connection_lost(self.close_timeout):
                return
        # The peer neither read our close frame nor closed: free what we buffer for it.
        transport = self._transport()
        if transport is not None:
            transport.abort()


def _warn_once(problem: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.info(
            "Sanic %s: events go through ws.send, framed once per connection (%s; prepared "
            "frames were tested on Sanic %s)",
            sanic.__version__,
            problem,
            ", ".join(TESTED_SANIC),
        )
