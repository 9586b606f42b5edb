"""The subscribe protocol on a Sanic (25.x) app: :func:`add_route` and :func:`serve`.

:func:`add_route` registers a websocket route that refuses a connection with HTTP 403 before
the upgrade, as the ASGI endpoint does::

    add_route(app, "/ws", "pubsub")

:func:`serve` runs the protocol from a websocket handler of your own, which Sanic calls after
the upgrade. Both run the serving loop of :mod:`tbone.dispatch.serving` (the one the ASGI and
aiohttp glue use) on a :class:`~tbone.dispatch.carriers.sanic_carrier.SanicWebSocketCarrier`,
and both are importable from :mod:`tbone.dispatch.carriers.sanic_websocket` too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# First: without Sanic, this raises the ImportError that names the extra to install.
from tbone.dispatch.carriers.sanic_carrier import SanicWebSocketCarrier

# isort: split
from sanic import response

from tbone.dispatch import serving
from tbone.dispatch.channels import Channel
from tbone.dispatch.protocol import Refused
from tbone.dispatch.serving import ServeOptions, check_channel

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tbone.dispatch.serving import ServeKeywords

__all__ = ["add_route", "serve"]

logger = logging.getLogger("tbone.dispatch.carriers.sanic")


async def serve(
    request: Any, ws: Any, channel: Channel | str, **options: Unpack[ServeKeywords]
) -> None:
    """Serve the subscribe protocol for ``channel`` on Sanic websocket ``ws``; return when done.

    Call it from a websocket handler (``async def handler(request, ws)``). The steps are those
    of :mod:`tbone.dispatch.serving`: the ``Origin``, the connect-time subscriptions
    (``?events=a,b&since=<id>``, or the fixed ``events``, each checked with
    ``authorize(request, event)``), ``max_connections``, then each client frame until the
    client leaves, breaks the protocol (1008, or 1009 for a frame over
    ``limits.max_frame_bytes``), or falls too far behind (1013). Sanic has already upgraded the
    connection when a handler runs, so a refusal here sends an error frame and closes with
    1008; :func:`add_route` makes the checks before the upgrade and answers HTTP 403 instead.
    Every subscription ends when this returns or is cancelled (Sanic cancels the handler when
    the connection is lost).

    ``channel`` is a Channel or the name of one. The keyword options are those of
    :class:`~tbone.dispatch.serving.ServeOptions`. Heartbeats are Sanic's own websocket pings
    (``WEBSOCKET_PING_INTERVAL`` and ``WEBSOCKET_PING_TIMEOUT``, 20 s each by default).
    """
    settings = ServeOptions(**options)
    await serving.serve(_Connection(request, ws, settings), check_channel(channel), settings)


def add_route(
    app: Any,
    uri: str,
    channel: Channel | str,
    *,
    name: str | None = None,
    **options: Unpack[ServeKeywords],
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
    route = _Route(check_channel(channel), ServeOptions(**options))

    async def subscribe(request: Any, ws: Any) -> None:
        # None when the middleware did not run (another middleware answered first): then the
        # checks run here, after the upgrade.
        checked: serving.Checked | None = getattr(request.ctx, "tbone_checked", None)
        connection = _Connection(request, ws, route.options)
        await serving.serve(connection, route.channel, route.options, checked=checked)

    route_name = name or "tbone_" + "".join(c if c.isalnum() else "_" for c in uri).strip("_")
    app.add_websocket_route(subscribe, uri, name=route_name, ctx_tbone_route=route)
    if not getattr(app.ctx, "tbone_preflight", False):
        app.register_middleware(_preflight, "request")
        app.ctx.tbone_preflight = True


@dataclass(frozen=True)
class _Route:
    """What :func:`add_route` was told, checked once; kept in the Sanic route's ``ctx``."""

    channel: Channel | str
    options: ServeOptions


async def _preflight(request: Any) -> Any:
    """Request middleware of :func:`add_route`: 403 before the upgrade, or None to go on.

    What it let through waits in ``request.ctx`` for the route's handler, which subscribes
    once Sanic has upgraded the connection: each check runs once.
    """
    route_ = getattr(request, "route", None)
    route: _Route | None = getattr(route_.ctx, "tbone_route", None) if route_ is not None else None
    if route is None:
        return None
    try:
        request.ctx.tbone_checked = await serving.check(_Handshake(request), route.options)
    except Refused as refused:
        return response.text(f"websocket refused: {refused}\n", status=403)
    return None


class _Handshake:
    """A Sanic request as the checks read it (before or after the upgrade)."""

    logger = logger

    def __init__(self, request: Any) -> None:
        self.request = request
        self.path: str = request.path

    def scope(self) -> dict[str, Any]:
        """The part of an ASGI scope the Origin check reads."""
        headers = [
            (key.lower().encode("latin-1"), value.encode("latin-1"))
            for key, value in self.request.headers.items()
            if key.lower() in ("origin", "host")
        ]
        return {"headers": headers}

    def query(self) -> tuple[list[str], str | None]:
        """Events and ``since`` from ``?events=a,b&since=<id>`` (``events`` may repeat)."""
        args = self.request.args
        names = [n for value in args.getlist("events", []) for n in value.split(",") if n]
        return names, args.get("since")


class _Connection(_Handshake):
    """A Sanic websocket as the serving loop drives it; Sanic upgraded it already."""

    accepted = True

    def __init__(self, request: Any, ws: Any, options: ServeOptions) -> None:
        super().__init__(request)
        self.ws = ws
        self.carrier = SanicWebSocketCarrier(
            ws, close_timeout=options.close_timeout, **options.carrier_options()
        )

    async def accept(self) -> None:
        return None  # pragma: no cover - accepted already: the loop never calls it

    async def deny(self, reason: str) -> None:  # pragma: no cover - accepted already
        raise RuntimeError("Sanic upgraded the connection before the handler ran")

    async def receive(self) -> str | bytes | None:
        while True:
            try:
                message: str | bytes | None = await self.ws.recv()
            except SanicWebSocketCarrier.disconnect_errors:
                return None  # the client left: an ordinary end, nothing to log
            if message is not None:  # None only with a recv timeout; none is set
                return message
