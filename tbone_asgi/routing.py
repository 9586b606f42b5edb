"""channel_route: a Starlette ``WebSocketRoute`` serving the subscribe protocol for a channel."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from starlette.routing import WebSocketRoute

from tbone.dispatch.channels import Channel
from tbone.dispatch.protocol import Authorize, Limits
from tbone_asgi.endpoint import ChannelEndpoint

__all__ = ["channel_route"]


def channel_route(
    path: str,
    channel: Channel | str,
    *,
    events: Collection[str] | None = None,
    authorize: Authorize | None = None,
    allowed_origins: Collection[str] | None = None,
    limits: Limits | None = None,
    name: str | None = None,
    **options: Any,
) -> WebSocketRoute:
    """A websocket route at ``path`` where clients subscribe to ``channel``'s events.

    Use it wherever Starlette takes routes: ``Starlette(routes=[channel_route("/ws",
    "pubsub")])``, inside a ``Mount``, or in FastAPI with
    ``app.router.routes.append(channel_route(...))``. ``channel`` is a Channel or a channel
    name (the channel registered under it, else a new MemoryChannel). The options are those of
    :class:`tbone_asgi.endpoint.ChannelEndpoint` (``max_messages``, ``max_bytes``,
    ``close_timeout`` go in ``options``); a bad option raises here, when the app is built.
    """
    endpoint = ChannelEndpoint(
        channel,
        events=events,
        authorize=authorize,
        allowed_origins=allowed_origins,
        limits=limits,
        **options,
    )
    # An object (not a function) as endpoint: Starlette calls it as a plain ASGI app.
    return WebSocketRoute(path, endpoint, name=name)
