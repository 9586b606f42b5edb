"""ChannelMiddleware: adds the subscribe endpoint to any ASGI app (Django, Quart, Litestar...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from tbone.dispatch.channels import Channel
from tbone_asgi.endpoint import ChannelEndpoint

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tbone.dispatch.serving import ServeKeywords

__all__ = ["ChannelMiddleware"]


class ChannelMiddleware:
    """Pure ASGI middleware serving the subscribe protocol on websocket scopes at ``path``.

    Everything else (http, lifespan, websockets on other paths) goes to ``app`` untouched, the
    very same scope, receive and send. ``path`` is matched against the path below the scope's
    ``root_path``, so the endpoint stays at ``path`` when the whole app is mounted under a
    prefix or served with ``--root-path``. The other keyword options are those of
    :class:`~tbone.dispatch.serving.ServeOptions`; a bad one raises here::

        application = ChannelMiddleware(get_asgi_application(), path="/ws", channel="pubsub")
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        path: str,
        channel: Channel | str,
        **options: Unpack[ServeKeywords],
    ) -> None:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        self.app = app
        self.path = path
        self.endpoint = ChannelEndpoint(channel, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and route_path(scope) == self.path:
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def route_path(scope: Scope) -> str:
    """The scope's path below its ``root_path`` (ASGI puts the full path in ``path``)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path
