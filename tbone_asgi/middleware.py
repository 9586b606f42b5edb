"""ChannelMiddleware: adds the subscribe endpoint to any ASGI app (Django, Quart, Litestar...)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tbone.dispatch.channels import Channel
from tbone_asgi.endpoint import ChannelEndpoint, deny

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tbone.dispatch.serving import ServeKeywords

__all__ = ["ChannelMiddleware"]

logger = logging.getLogger("tbone_asgi")


class ChannelMiddleware:
    """Pure ASGI middleware serving the subscribe protocol on websocket scopes at ``path``.

    Everything else (http, lifespan, websockets on other paths) goes to ``app``: the very same
    scope, receive and send, except that for a websocket on another path ``receive`` and
    ``send`` are wrapped to see whether ``app`` uses them. An app that raises on such a scope
    before it has received or sent anything does not serve websockets (Django's ASGI handler
    raises ``ValueError`` for any scope but HTTP): the middleware then refuses the handshake
    itself, as Starlette's router does for a websocket path it does not know (a close before
    the accept, which servers answer with HTTP 403, with a body that says why where the server
    allows one), and logs why once at WARNING, instead of the
    server answering 500 with a traceback. ``path`` is matched against the path below the scope's
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
        self._told_no_websockets = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
        elif route_path(scope) == self.path:
            await self.endpoint(scope, receive, send)
        else:
            await self._other_websocket(scope, receive, send)

    async def _other_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Give a websocket on another path to the app; refuse it if the app takes none."""
        used = False

        async def app_receive() -> Message:
            nonlocal used
            used = True
            return await receive()

        async def app_send(message: Message) -> None:
            nonlocal used
            used = True
            await send(message)

        try:
            await self.app(scope, app_receive, app_send)
        except Exception as exc:
            if used:
                raise  # the app serves websockets and failed on this one: its own error
            self._say_no_websockets(scope, exc)
            # HTTP 403, saying why where the server allows a body (as Starlette's router
            # does for a websocket path it does not know, without the body).
            path = scope.get("path", "")
            await deny(
                scope,
                send,
                f"websocket refused: no websocket endpoint at {path!r}; this app serves "
                f"websockets at {self.path!r} only\n",
            )

    def _say_no_websockets(self, scope: Scope, exc: Exception) -> None:
        # A wrong path is the client's mistake, like a 404: said once at WARNING, which a
        # server's default logging shows (a scanner probing paths must not flood the log), then
        # at DEBUG with the traceback, for an app that did mean to serve websockets and failed
        # early.
        level = logging.DEBUG if self._told_no_websockets else logging.WARNING
        self._told_no_websockets = True
        logger.log(
            level,
            "websocket at %r refused with 403: the app behind ChannelMiddleware raised %s: %s "
            "before reading it, so it serves no websockets; ChannelMiddleware serves %r only",
            scope.get("path", ""),
            type(exc).__name__,
            exc,
            self.path,
            exc_info=level == logging.DEBUG,
        )


def route_path(scope: Scope) -> str:
    """The scope's path below its ``root_path`` (ASGI puts the full path in ``path``)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path
