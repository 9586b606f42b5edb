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
from typing import TYPE_CHECKING, Any, ClassVar

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
from tbone.dispatch.carriers.options import CarrierOptions
from tbone.dispatch.channels import Channel, get_channel
from tbone.dispatch.channels.mem import MemoryChannel
from tbone.dispatch.origin import OriginPolicy
from tbone.dispatch.protocol import (
    Authorize,
    Limits,
    ProtocolSession,
    Refused,
    check_event_names,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["SanicWebSocketCarrier", "add_route", "serve"]

logger = logging.getLogger("tbone.dispatch.carriers.sanic")


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
        self, ws: Any, *, close_timeout: float = 5.0, **options: Unpack[CarrierOptions]
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
        super().__init__(ws, **options)
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
    slow_timeout: float | None = None,
    close_timeout: float = 5.0,
) -> None:
    """Serve the subscribe protocol for ``channel`` on Sanic websocket ``ws``; return when done.

    Call it from a websocket handler (``async def handler(request, ws)``). In order: the
    ``Origin`` is checked (same-origin unless ``allowed_origins``; see ``tbone.dispatch.origin``),
    then the connect-time subscriptions (``?events=a,b&since=<id>``, or the fixed ``events``)
    are checked with ``authorize(request, event)``. Sanic has already upgraded the connection
    when a handler runs, so a refusal here sends an error frame and closes with 1008;
    :func:`add_route` makes both checks before the upgrade and answers HTTP 403 instead. Then
    history is sent when ``since`` is given, and each client frame goes to
    :class:`~tbone.dispatch.protocol.ProtocolSession` until the client leaves, breaks the
    protocol (closed with 1008, or 1009 for a frame over ``limits.max_frame_bytes``), or falls
    too far behind (closed with 1013). Every subscription ends when this returns or is
    cancelled (Sanic cancels the handler when the connection is lost).

    ``channel`` is a Channel or the name of one (a MemoryChannel is made if none is
    registered). ``max_messages``/``max_bytes``/``slow_timeout``/``close_timeout`` go to
    :class:`SanicWebSocketCarrier`. Heartbeats are Sanic's own websocket pings
    (``WEBSOCKET_PING_INTERVAL`` and ``WEBSOCKET_PING_TIMEOUT``, 20 s each by default).
    """
    route = _Route(
        channel,
        events,
        authorize,
        allowed_origins,
        limits,
        max_messages,
        max_bytes,
        slow_timeout,
        close_timeout,
    )
    carrier = route.carrier(ws)
    session = route.session(request, carrier)
    if not route.origins.allows(_scope(request)):
        logger.info("refused websocket %s: origin %r", request.path, request.headers.get("origin"))
        refused = Refused("forbidden_origin", "this Origin may not connect")
        await session.reject(refused, flush_timeout=carrier.close_timeout)
        return
    names, since = _query(request)
    try:
        await session.start(names, since)
    except Refused as exc:
        logger.info("refused websocket %s: %s", request.path, exc)
        await session.reject(exc, flush_timeout=carrier.close_timeout)
        return
    except BaseException:
        session.end()  # also clears what a resume cut short had subscribed
        raise
    await _serve_session(ws, session, carrier)


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
    slow_timeout: float | None = None,
    close_timeout: float = 5.0,
) -> None:
    """Register a websocket route at ``uri`` of Sanic ``app`` serving ``channel``'s protocol.

    Unlike :func:`serve` in a handler of your own, the route refuses a connection with
    HTTP 403 before the upgrade, as the ASGI endpoint does: a request middleware (added once
    per app) checks the Origin and the connect-time subscriptions (``authorize`` is called once
    per event), and only then lets Sanic upgrade. The options are those of :func:`serve`;
    ``name`` is the Sanic route name (default: from ``uri``). Call it while setting the app
    up, before it starts. Bad options (an ``allowed_origins`` entry, an event name, the
    channel) raise here, not at the first connection.
    """
    if not isinstance(channel, (Channel, str)) or channel == "":
        raise TypeError(f"channel must be a Channel or a channel name, got {channel!r}")
    if events is not None:
        check_event_names(events)
    route = _Route(
        channel,
        events,
        authorize,
        allowed_origins,
        limits,
        max_messages,
        max_bytes,
        slow_timeout,
        close_timeout,
    )

    async def subscribe(request: Any, ws: Any) -> None:
        handshake: _Handshake | None = getattr(request.ctx, "tbone_handshake", None)
        if handshake is None:  # the middleware did not run (another middleware answered)
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
                slow_timeout=slow_timeout,
                close_timeout=close_timeout,
            )
            return
        await handshake.run(ws)

    route_name = name or "tbone_" + "".join(c if c.isalnum() else "_" for c in uri).strip("_")
    app.add_websocket_route(subscribe, uri, name=route_name, ctx_tbone_route=route)
    if not getattr(app.ctx, "tbone_preflight", False):
        app.register_middleware(_preflight, "request")
        app.ctx.tbone_preflight = True


class _Route:
    """What :func:`serve` and :func:`add_route` are told, checked once."""

    def __init__(
        self,
        channel: Channel | str,
        events: Collection[str] | None,
        authorize: Authorize | None,
        allowed_origins: Collection[str] | None,
        limits: Limits | None,
        max_messages: int | None,
        max_bytes: int | None,
        slow_timeout: float | None,
        close_timeout: float,
    ) -> None:
        if not isinstance(channel, (Channel, str)) or channel == "":
            raise TypeError(f"channel must be a Channel or a channel name, got {channel!r}")
        self.channel = channel
        self.events = events
        self.authorize = authorize
        self.origins = OriginPolicy(allowed_origins)
        self.limits = limits
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.slow_timeout = slow_timeout
        self.close_timeout = close_timeout

    def carrier(self, ws: Any) -> SanicWebSocketCarrier:
        return SanicWebSocketCarrier(
            ws,
            max_messages=self.max_messages,
            max_bytes=self.max_bytes,
            slow_timeout=self.slow_timeout,
            close_timeout=self.close_timeout,
        )

    def session(self, request: Any, carrier: Carrier) -> ProtocolSession:
        channel = self.channel
        if isinstance(channel, str):  # looked up per connection: a channel made at startup wins
            channel = get_channel(channel) or MemoryChannel(name=channel)
        return ProtocolSession(
            channel,
            carrier,
            events=self.events,
            authorize=self.authorize,
            limits=self.limits,
            connection=request,
        )


class _Handshake:
    """One connection of an :func:`add_route` route, from its checks (in the request middleware,
    before the upgrade) to its end (in the websocket handler).

    ``ProtocolSession.start`` checks everything, then awaits its ``accept`` callback, then
    subscribes. It runs here as a task whose ``accept`` waits for the handler to bring the
    upgraded websocket: the checks happen once, before the upgrade, and the subscriptions (and
    the history of ``since``) go to the real carrier.
    """

    def __init__(self, route: _Route, request: Any) -> None:
        self.route = route
        self.request = request
        # The session needs a carrier now; the websocket's own replaces it in _accept, before
        # start() uses it.
        self.session = route.session(request, _NoConnectionYet(object()))
        loop = asyncio.get_running_loop()
        self.checked = asyncio.Event()
        self.upgraded: asyncio.Future[SanicWebSocketCarrier] = loop.create_future()
        self.task: asyncio.Task[None] | None = None

    async def check(self) -> Refused | None:
        """Run the connect-time checks; the Refused that says why, or None to upgrade."""
        names, since = _query(self.request)
        task = self.task = asyncio.get_running_loop().create_task(
            self.session.start(names, since, accept=self._accept)
        )
        # If the upgrade never comes (the client left, another middleware answered), the task
        # ends with TimeoutError after close_timeout; nobody else would read its outcome.
        task.add_done_callback(_outcome_read)
        checked = asyncio.ensure_future(self.checked.wait())
        try:
            await asyncio.wait({task, checked}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the request was cancelled: the client left mid-check
            task.cancel()
            raise
        finally:
            checked.cancel()
        if self.checked.is_set():
            return None
        error = task.exception()
        if isinstance(error, Refused):
            return error
        if error is not None:
            raise error
        return None

    async def _accept(self) -> None:
        self.checked.set()
        carrier = await asyncio.wait_for(asyncio.shield(self.upgraded), self.route.close_timeout)
        self.session.carrier = carrier

    async def run(self, ws: Any) -> None:
        """In the handler: subscribe with the upgraded ``ws`` and serve until the end."""
        carrier = self.route.carrier(ws)
        task = self.task
        assert task is not None, "check() runs before the upgrade"
        if not self.upgraded.done():
            self.upgraded.set_result(carrier)
        try:
            await task  # subscribes; with since, sends the history first
        except Refused as exc:  # since named an id the channel cannot read
            logger.info("refused websocket %s: %s", self.request.path, exc)
            await self.session.reject(exc, flush_timeout=carrier.close_timeout)
            return
        except BaseException:
            self.session.end()  # also clears what a resume cut short had subscribed
            raise
        await _serve_session(ws, self.session, carrier)


class _NoConnectionYet(Carrier):
    """Stands in for the websocket's carrier while the connection is checked; never used."""

    async def send_text(self, text: str) -> None:
        raise ConnectionResetError("not upgraded yet")

    async def close_connection(self, code: int, reason: str) -> None:
        return None


def _outcome_read(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


async def _preflight(request: Any) -> Any:
    """Request middleware of :func:`add_route`: 403 before the upgrade, or None to go on."""
    route_ = getattr(request, "route", None)
    route: _Route | None = getattr(route_.ctx, "tbone_route", None) if route_ is not None else None
    if route is None:
        return None
    if not route.origins.allows(_scope(request)):
        return _forbidden(request, f"origin {request.headers.get('origin')!r} not allowed")
    handshake = _Handshake(route, request)
    refused = await handshake.check()
    if refused is not None:
        return _forbidden(request, str(refused))
    request.ctx.tbone_handshake = handshake
    return None


def _forbidden(request: Any, reason: str) -> Any:
    logger.info("refused websocket %s: %s", request.path, reason)
    return response.text(f"websocket refused: {reason}\n", status=403)


async def _serve_session(ws: Any, session: ProtocolSession, carrier: SanicWebSocketCarrier) -> None:
    """Feed client frames to ``session`` until the connection ends; then end the session."""
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
                await session.close(code, flush_timeout=carrier.close_timeout)
                return
    finally:
        session.end()
        if not carrier.closed:
            await carrier.close(1000)  # the client left: stop the writer, finish the close


def _query(request: Any) -> tuple[list[str], str | None]:
    """Events and ``since`` from ``?events=a,b&since=<id>`` (``events`` may repeat)."""
    names = [n for value in request.args.getlist("events", []) for n in value.split(",") if n]
    return names, request.args.get("since")


def _scope(request: Any) -> dict[str, Any]:
    """The part of an ASGI scope the Origin check reads, from a Sanic request."""
    headers = [
        (key.lower().encode("latin-1"), value.encode("latin-1"))
        for key, value in request.headers.items()
        if key.lower() in ("origin", "host")
    ]
    return {"headers": headers}
