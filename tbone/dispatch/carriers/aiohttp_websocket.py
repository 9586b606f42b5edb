"""AioHttpWebSocketCarrier: an aiohttp (3.x) ``web.WebSocketResponse`` as a channel subscriber.

aiohttp's ``send_str`` writes to the transport and returns before the bytes leave: it waits for
the transport to drain only every 64 KiB it writes, so a client that stops reading first makes
the server's write buffer grow (to about 270 KiB) before a send blocks.
:meth:`AioHttpWebSocketCarrier.backlog` reports that buffer, and the carrier closes the
connection with 1013 once it plus the outbox passes ``max_bytes``.

:func:`serve` runs the subscribe protocol (``docs/protocol.md``) on one request::

    async def subscribe(request):
        return await serve(request, "pubsub")

    app.router.add_get("/ws", subscribe)

The seed's handler works as written (``docs/carriers.md``)::

    async def websocket_handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        request.app.pubsub = MemoryChannel(name="pubsub")
        request.app.pubsub.subscribe("resource_create", AioHttpWebSocketCarrier(ws))
        async for msg in ws:
            ...
        return ws
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, ClassVar

try:
    from aiohttp import web
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "tbone.dispatch.carriers.aiohttp_websocket needs aiohttp: pip install 'tbone-asgi[aiohttp]'"
    ) from exc

from tbone.dispatch.carriers import Carrier
from tbone.dispatch.carriers.options import CarrierOptions
from tbone.dispatch.channels import Channel, get_channel
from tbone.dispatch.channels.mem import MemoryChannel
from tbone.dispatch.origin import OriginPolicy
from tbone.dispatch.protocol import Authorize, Limits, ProtocolSession, Refused

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AioHttpWebSocketCarrier", "serve"]

logger = logging.getLogger("tbone.dispatch.carriers.aiohttp")


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
            await asyncio.wait_for(ws.close(code=code, message=reason.encode()), self.close_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            # The peer stopped reading: our close frame sits behind what it did not read.
            if transport is not None:
                transport.abort()


async def serve(
    request: web.Request,
    channel: Channel | str,
    *,
    events: Collection[str] | None = None,
    authorize: Authorize | None = None,
    allowed_origins: Collection[str] | None = None,
    limits: Limits | None = None,
    max_messages: int | None = None,
    max_bytes: int | None = None,
    slow_timeout: float | None = None,
    close_timeout: float = 5.0,
    heartbeat: float | None = 20.0,
) -> web.StreamResponse:
    """Serve the subscribe protocol for ``channel`` on ``request``; return the response.

    In order: the ``Origin`` is checked (same-origin unless ``allowed_origins``; see
    ``tbone.dispatch.origin``), then the connect-time subscriptions (``?events=a,b&since=<id>``,
    or the fixed ``events``) are checked with ``authorize(request, event)``. A refusal returns
    HTTP 403 with the reason, before the upgrade. Then the websocket is prepared, history is
    sent when ``since`` is given, and each client frame goes to
    :class:`~tbone.dispatch.protocol.ProtocolSession` until the client leaves, breaks the
    protocol (closed with 1008, or 1009 for a frame over ``limits.max_frame_bytes``), or falls
    too far behind (closed with 1013). Every subscription ends when this returns.

    ``channel`` is a Channel or the name of one (a MemoryChannel is made if none is
    registered). ``max_messages``/``max_bytes``/``slow_timeout``/``close_timeout`` go to
    :class:`AioHttpWebSocketCarrier`. ``heartbeat``: seconds between server pings; a peer that
    does not answer within half of it is closed, so a vanished client is dropped within
    1.5 x ``heartbeat`` (None: no pings).
    """
    if isinstance(channel, str):
        channel = get_channel(channel) or MemoryChannel(name=channel)
    elif not isinstance(channel, Channel):
        raise TypeError(f"channel must be a Channel or a channel name, got {channel!r}")
    limits = limits or Limits()
    if not OriginPolicy(allowed_origins).allows({"headers": request.raw_headers}):
        return _refuse(request, f"origin {request.headers.get('Origin')!r} not allowed")

    # aiohttp itself refuses frames over max_msg_size (closing with 1009) before buffering
    # them whole; the session checks the same limit for frames that get through.
    ws = web.WebSocketResponse(
        max_msg_size=limits.max_frame_bytes, heartbeat=heartbeat, timeout=close_timeout
    )
    carrier = AioHttpWebSocketCarrier(
        ws,
        max_messages=max_messages,
        max_bytes=max_bytes,
        slow_timeout=slow_timeout,
        close_timeout=close_timeout,
    )
    session = ProtocolSession(
        channel, carrier, events=events, authorize=authorize, limits=limits, connection=request
    )
    names = [n for value in request.query.getall("events", ()) for n in value.split(",") if n]
    since = request.query.get("since")

    async def accept() -> None:
        await ws.prepare(request)

    try:
        await session.start(names, since, accept=accept)
    except Refused as exc:
        if not ws.prepared:
            return _refuse(request, str(exc))
        # Refused after the upgrade (history could not be read for ``since``): say why.
        logger.info("refused websocket %s: %s", request.path, exc)
        await session.reject(exc, flush_timeout=close_timeout)
        return ws
    except BaseException:
        session.end()  # also clears what a resume cut short had subscribed
        raise
    try:
        async for message in ws:
            if message.type not in (web.WSMsgType.TEXT, web.WSMsgType.BINARY):
                continue  # aiohttp ends the loop itself on close and error frames
            code = await session.receive(message.data)
            if code is not None:
                await session.close(code, flush_timeout=close_timeout)
                break
    finally:
        session.end()
        if not carrier.closed:
            await carrier.close(1000)  # the client left: stop the writer, finish the close
    return ws


def _refuse(request: web.Request, reason: str) -> web.Response:
    logger.info("refused websocket %s: %s", request.path, reason)
    return web.Response(status=403, text=f"websocket refused: {reason}\n")
