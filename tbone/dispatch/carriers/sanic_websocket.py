"""SanicWebSocketCarrier: a Sanic (25.x) websocket as a channel subscriber.

Sanic's ``ws.send`` waits while the transport is paused (its write buffer is over the high-water
mark), so a client that stops reading blocks our writer task after about a thousand small
frames; the frames behind it pile up in the carrier's bounded outbox, which closes the
connection with 1013 when it overflows. :meth:`SanicWebSocketCarrier.backlog` adds what sits in
the transport's write buffer to the same limit.

:func:`serve` runs the subscribe protocol (``docs/protocol.md``) in a websocket handler, and
:func:`add_route` registers such a handler with an Origin check that answers HTTP 403 before
the upgrade::

    add_route(app, "/ws", "pubsub")

The seed's handler works as written (``docs/carriers.md``)::

    async def resource_event_websocket(request, ws):
        request.app.ctx.pubsub = MemoryChannel(name="pubsub")
        request.app.ctx.pubsub.subscribe("resource_create", SanicWebSocketCarrier(ws))
        while True:
            await ws.recv()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any, ClassVar

try:
    from sanic import response
    from sanic.exceptions import RequestCancelled, ServerError, WebsocketClosed
    from sanic.server.websockets.impl import WebsocketImplProtocol
    from websockets.exceptions import ConnectionClosed
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "tbone.dispatch.carriers.sanic_websocket needs Sanic: pip install 'tbone-asgi[sanic]'"
    ) from exc

from tbone.dispatch.carriers import Carrier
from tbone.dispatch.channels import Channel, get_channel
from tbone.dispatch.channels.mem import MemoryChannel
from tbone.dispatch.events import error_frame
from tbone.dispatch.protocol import Authorize, Limits, ProtocolSession, Refused

__all__ = ["SanicWebSocketCarrier", "add_route", "serve"]

logger = logging.getLogger("tbone.dispatch.carriers.sanic")

_CLOSE_REASONS = {1008: "policy violation", 1009: "frame too big"}


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
        if type(ws).__name__ == "WebSocketConnection":
            # Sanic run as an ASGI app hands out this shim: it cannot close with a code and
            # reports a disconnect as an empty message, so it cannot honour the contract.
            raise TypeError(
                "SanicWebSocketCarrier needs Sanic's own server; under an ASGI server "
                "(uvicorn, hypercorn) wrap the app: app = ChannelMiddleware(app, path=..., "
                "channel=...) from tbone_asgi (see docs/asgi.md)"
            )
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
            # Sanic's words for "the handler finished": the connection is going away.
            finished = self.connection.data_finished_fut
            if self._transport() is None or finished is None or finished.done():
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


async def serve(
    request: Any,
    ws: Any,
    channel: Channel | str,
    *,
    events: Collection[str] | None = None,
    authorize: Authorize | None = None,
    allowed_origins: Collection[str] | None = None,
    limits: Limits | None = None,
    max_messages: int | None = None,
    max_bytes: int | None = None,
    close_timeout: float = 5.0,
) -> None:
    """Serve the subscribe protocol for ``channel`` on Sanic websocket ``ws``; return when done.

    Call it from a websocket handler (``async def handler(request, ws)``). In order: the
    ``Origin`` is checked (same-origin unless ``allowed_origins``; see ``tbone_asgi.origin``),
    then the connect-time subscriptions (``?events=a,b&since=<id>``, or the fixed ``events``)
    are checked with ``authorize(request, event)``. Sanic has already upgraded the connection
    when a handler runs, so a refusal here sends an error frame and closes with 1008 (use
    :func:`add_route` to refuse a bad Origin with HTTP 403 before the upgrade). Then history is
    sent when ``since`` is given, and each client frame goes to
    :class:`~tbone.dispatch.protocol.ProtocolSession` until the client leaves, breaks the
    protocol (closed with 1008, or 1009 for a frame over ``limits.max_frame_bytes``), or falls
    too far behind (closed with 1013). Every subscription ends when this returns or is
    cancelled (Sanic cancels the handler when the connection is lost).

    ``channel`` is a Channel or the name of one (a MemoryChannel is made if none is
    registered). ``max_messages``/``max_bytes``/``close_timeout`` go to
    :class:`SanicWebSocketCarrier`. Heartbeats are Sanic's own websocket pings
    (``WEBSOCKET_PING_INTERVAL`` and ``WEBSOCKET_PING_TIMEOUT``, 20 s each by default).
    """
    channel = _resolve(channel)
    carrier = SanicWebSocketCarrier(
        ws, max_messages=max_messages, max_bytes=max_bytes, close_timeout=close_timeout
    )
    if not _origins(allowed_origins).allows(_scope(request)):
        logger.info("refused websocket %s: origin %r", request.path, request.headers.get("origin"))
        await _refuse(carrier, Refused("forbidden_origin", "this Origin may not connect"))
        return
    session = ProtocolSession(
        channel, carrier, events=events, authorize=authorize, limits=limits, connection=request
    )
    names = [n for value in request.args.getlist("events", []) for n in value.split(",") if n]
    since = request.args.get("since")
    try:
        await session.start(names, since)
    except Refused as exc:
        logger.info("refused websocket %s: %s", request.path, exc)
        await _refuse(carrier, exc)
        return
    try:
        while not carrier.closed:
            try:
                message = await ws.recv()
            except (WebsocketClosed, ConnectionClosed):
                return  # the client left: an ordinary end, nothing to log
            if message is None:  # only with a recv timeout; none is set
                continue
            code = await session.receive(message)
            if code is not None:
                session.end()
                await carrier.close(code, _CLOSE_REASONS.get(code, ""))
                return
    finally:
        session.end()
        if not carrier.closed:
            await carrier.close(1000)  # the client left: stop the writer, finish the close


def add_route(
    app: Any,
    uri: str,
    channel: Channel | str,
    *,
    name: str | None = None,
    events: Collection[str] | None = None,
    authorize: Authorize | None = None,
    allowed_origins: Collection[str] | None = None,
    limits: Limits | None = None,
    max_messages: int | None = None,
    max_bytes: int | None = None,
    close_timeout: float = 5.0,
) -> None:
    """Register a websocket route at ``uri`` of Sanic ``app`` that :func:`serve` s ``channel``.

    Adds (once per app) a request middleware that answers HTTP 403 before the upgrade when the
    handshake's Origin is not allowed, so a cross-site page never gets a websocket. The other
    options are those of :func:`serve`. Call it while setting the app up, before it starts.
    """
    origins = _origins(allowed_origins)  # a bad list fails here, not at the first connection
    if not isinstance(channel, (Channel, str)) or channel == "":
        raise TypeError(f"channel must be a Channel or a channel name, got {channel!r}")

    async def subscribe(request: Any, ws: Any) -> None:
        await serve(
            request,
            ws,
            channel,
            events=events,
            authorize=authorize,
            allowed_origins=allowed_origins,
            limits=limits,
            max_messages=max_messages,
            max_bytes=max_bytes,
            close_timeout=close_timeout,
        )

    route_name = name or "tbone_" + "".join(c if c.isalnum() else "_" for c in uri).strip("_")
    app.add_websocket_route(subscribe, uri, name=route_name, ctx_tbone_origins=origins)
    if not getattr(app.ctx, "tbone_origin_guard", False):
        app.register_middleware(_origin_guard, "request")
        app.ctx.tbone_origin_guard = True


async def _origin_guard(request: Any) -> Any:
    route = getattr(request, "route", None)
    origins = getattr(route.ctx, "tbone_origins", None) if route is not None else None
    if origins is None or origins.allows(_scope(request)):
        return None
    reason = f"origin {request.headers.get('origin')!r} not allowed"
    logger.info("refused websocket %s: %s", request.path, reason)
    return response.text(f"websocket refused: {reason}\n", status=403)


def _origins(allowed_origins: Collection[str] | None) -> Any:
    # The Origin rules live with the ASGI package; imported here so that the carrier alone
    # needs no Starlette.
    from tbone_asgi.origin import OriginPolicy

    return OriginPolicy(allowed_origins)


def _scope(request: Any) -> dict[str, Any]:
    """The part of an ASGI scope the Origin check reads, from a Sanic request."""
    headers = [
        (key.lower().encode("latin-1"), value.encode("latin-1"))
        for key, value in request.headers.items()
        if key.lower() in ("origin", "host")
    ]
    return {"headers": headers}


def _resolve(channel: Channel | str) -> Channel:
    if isinstance(channel, Channel):
        return channel
    if isinstance(channel, str) and channel:
        return get_channel(channel) or MemoryChannel(name=channel)
    raise TypeError(f"channel must be a Channel or a channel name, got {channel!r}")


async def _refuse(carrier: SanicWebSocketCarrier, exc: Refused) -> None:
    # Sent now, not queued: closing drops what waits in the outbox.
    await carrier.deliver_text(error_frame(exc.code, exc.reason))
    await carrier.close(1008, exc.code)
