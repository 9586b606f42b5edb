"""channel_route: a Starlette ``WebSocketRoute`` serving the subscribe protocol for a channel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import WebSocketRoute

from tbone.dispatch.channels import Channel
from tbone_asgi.endpoint import ChannelEndpoint

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tbone.dispatch.serving import ServeKeywords

__all__ = ["channel_route"]


def channel_route(
    path: str, channel: Channel | str, *, name: str | None = None, **options: Unpack[ServeKeywords]
) -> WebSocketRoute:
    """A websocket route at ``path`` where clients subscribe to ``channel``'s events.

    Use it wherever Starlette takes routes: ``Starlette(routes=[channel_route("/ws",
    "pubsub")])``, inside a ``Mount``, or in FastAPI with
    ``app.router.routes.append(channel_route(...))``. ``channel`` is a Channel or a channel
    name (the channel registered under it, else a new MemoryChannel). ``name`` is the route's
    name (for ``url_path_for``). The other keyword options are those of
    :class:`~tbone.dispatch.serving.ServeOptions`; a bad one raises here, when the app is built.
    """
    # An object (not a function) as endpoint: Starlette calls it as a plain ASGI app.
    return WebSocketRoute(path, ChannelEndpoint(channel, **options), name=name)
