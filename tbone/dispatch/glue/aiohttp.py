"""The subscribe protocol on an aiohttp (3.x) app: :func:`add_route` and :func:`serve`.

::

    add_route(app, "/ws", "pubsub")

    # or, in a handler of your own:
    async def subscribe(request):
        return await serve(request, "pubsub")

Both run the serving loop of :mod:`tbone.dispatch.serving` (the one the ASGI and Sanic glue
use) on an :class:`~tbone.dispatch.carriers.aiohttp_carrier.AioHttpWebSocketCarrier`, and
both are importable from :mod:`tbone.dispatch.carriers.aiohttp_websocket` too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

# First: without aiohttp, this raises the ImportError that names the extra to install.
from tbone.dispatch.carriers.aiohttp_carrier import AioHttpWebSocketCarrier

# isort: split
from aiohttp import hdrs, web
from multidict import CIMultiDict

from tbone.dispatch import serving
from tbone.dispatch.channels import Channel
from tbone.dispatch.serving import ServeOptions, check_channel

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tbone.dispatch.serving import ServeKeywords

__all__ = ["add_route", "serve"]

logger = logging.getLogger("tbone.dispatch.carriers.aiohttp")


async def serve(
    request: web.Request,
    channel: Channel | str,
    *,
    heartbeat: float | None = 20.0,
    **options: Unpack[ServeKeywords],
) -> web.StreamResponse:
    """Serve the subscribe protocol for ``channel`` on ``request``; return the response.

    The steps are those of :mod:`tbone.dispatch.serving`: the ``Origin`` and the connect-time
    subscriptions (``?events=a,b&since=<id>``, or the fixed ``events``, each checked with
    ``authorize(request, event)``) are checked before the upgrade, and a refusal returns
    HTTP 403 with the reason. Then ``max_connections``, the upgrade, history when ``since`` is
    given, and each client frame until the client leaves, breaks the protocol (1008, or 1009
    for a frame over ``limits.max_frame_bytes``), or falls too far behind (1013). Every
    subscription ends when this returns.

    ``channel`` is a Channel or the name of one. The keyword options are those of
    :class:`~tbone.dispatch.serving.ServeOptions`. ``heartbeat``: seconds between server
    pings; a peer that does not answer within half of it is closed, so a vanished client is
    dropped within 1.5 x ``heartbeat`` (None: no pings).
    """
    return await _serve(request, check_channel(channel), ServeOptions(**options), heartbeat)


def add_route(
    app: web.Application,
    path: str,
    channel: Channel | str,
    *,
    name: str | None = None,
    heartbeat: float | None = 20.0,
    **options: Unpack[ServeKeywords],
) -> None:
    """Register a GET route at ``path`` of aiohttp ``app`` serving ``channel``'s protocol.

    The route is :func:`serve` with these options; ``name`` is the aiohttp route name (for
    ``app.router[name].url_for()``). Call it while setting the app up, before it starts. Bad
    options (an ``allowed_origins`` entry, an event name, the channel) raise here, not at the
    first connection.
    """
    route_channel = check_channel(channel)
    settings = ServeOptions(**options)

    async def subscribe(request: web.Request) -> web.StreamResponse:
        return await _serve(request, route_channel, settings, heartbeat)

    # No HEAD route: a HEAD request cannot become a websocket.
    app.router.add_get(path, subscribe, name=name, allow_head=False)


async def _serve(
    request: web.Request, channel: Channel | str, options: ServeOptions, heartbeat: float | None
) -> web.StreamResponse:
    connection = _Connection(request, options, heartbeat)
    await serving.serve(connection, channel, options)
    return connection.response


class _Connection:
    """An aiohttp request and its websocket response, as the serving loop drives them."""

    logger = logger

    def __init__(
        self, request: web.Request, options: ServeOptions, heartbeat: float | None
    ) -> None:
        self.request = request
        self.path = request.path
        # aiohttp itself refuses frames over max_msg_size (closing with 1009) before buffering
        # them whole; the session checks the same limit for frames that get through.
        self.ws = web.WebSocketResponse(
            max_msg_size=options.limits.max_frame_bytes,
            heartbeat=heartbeat,
            timeout=options.close_timeout,
        )
        self.carrier = AioHttpWebSocketCarrier(
            self.ws, close_timeout=options.close_timeout, **options.carrier_options()
        )
        #: What the handler returns: the websocket, or the 403 of a refused handshake.
        self.response: web.StreamResponse = self.ws

    def scope(self) -> dict[str, object]:
        return {"headers": self.request.raw_headers}

    def query(self) -> tuple[list[str], str | None]:
        query = self.request.query
        names = [n for value in query.getall("events", ()) for n in value.split(",") if n]
        return names, query.get("since")

    @property
    def accepted(self) -> bool:
        return self.ws.prepared

    async def accept(self) -> None:
        await self.ws.prepare(without_context_takeover(self.request))

    async def deny(self, reason: str) -> None:
        self.response = web.Response(status=403, text=f"websocket refused: {reason}\n")

    async def receive(self) -> str | bytes | None:
        while True:
            message = await self.ws.receive()
            if message.type in (web.WSMsgType.TEXT, web.WSMsgType.BINARY):
                data: str | bytes = message.data
                return data
            if message.type in (web.WSMsgType.CLOSE, web.WSMsgType.CLOSING, web.WSMsgType.CLOSED):
                return None  # the client left, or we closed: aiohttp answered the close
            # Anything else (an ERROR, then CLOSED) goes round once more.


def without_context_takeover(request: web.Request) -> web.Request:
    """``request`` with ``server_no_context_takeover`` in each permessage-deflate offer.

    aiohttp grants it only when the client asks; RFC 7692 (7.1.1.1) lets a server include it
    unasked, and every client must then accept it. The handshake made from this request
    answers every deflate offer with it, so each message is compressed on its own and an
    event's deflated frame, built once, is valid on every such connection (see
    :mod:`tbone.dispatch.carriers.aiohttp_carrier`). A request without an offer is returned
    as it is.
    """
    offers = request.headers.getall(hdrs.SEC_WEBSOCKET_EXTENSIONS, [])
    if not any("permessage-deflate" in offer for offer in offers):
        return request
    rewritten = []
    for header in offers:
        parts = []
        for offer in header.split(","):
            token, *params = [p.strip() for p in offer.split(";")]
            if token == "permessage-deflate" and "server_no_context_takeover" not in params:
                params.insert(0, "server_no_context_takeover")
            parts.append("; ".join([token, *params]))
        rewritten.append(", ".join(parts))
    headers = CIMultiDict(request.headers)
    headers.popall(hdrs.SEC_WEBSOCKET_EXTENSIONS)
    for header in rewritten:
        headers.add(hdrs.SEC_WEBSOCKET_EXTENSIONS, header)
    return request.clone(headers=headers)
