"""not_found_route: a websocket to a path no route serves is refused, and says why.

Starlette's router (FastAPI's too) closes a websocket whose path matches no route before the
accept, which the server answers with a bare HTTP 403 and no log line of its own: a mistyped
URL looks like a refused Origin. Put this route **last** in the app's routes and such a
websocket is refused by it instead: HTTP 403 with a body that names the path where the server
allows one (ASGI ``websocket.http.response``: uvicorn 0.55+, Hypercorn), and a WARNING on the
``tbone_asgi`` logger, which a server's default logging shows (the rule of
:mod:`tbone.dispatch.refusals`: once per ``WARN_EVERY`` seconds, INFO in between)::

    app = Starlette(routes=[channel_route("/ws", "pubsub"), not_found_route()])

It matches websockets only; HTTP requests are routed as before. A route or ``Mount`` placed
after it never sees a websocket.
"""

from __future__ import annotations

import logging

from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from tbone.dispatch.protocol import Refused
from tbone.dispatch.refusals import log_refusal
from tbone_asgi.endpoint import deny

__all__ = ["NotFoundApp", "not_found_route"]

logger = logging.getLogger("tbone_asgi")


class NotFoundApp:
    """ASGI app that refuses every websocket it is given, as described in the module.

    ``serves`` (optional) names the paths where the app does serve websockets, for the body and
    the log line. Any other scope type is a programming error (``TypeError``): mount it for
    websockets only, as :func:`not_found_route` does.
    """

    def __init__(self, serves: tuple[str, ...] = ()) -> None:
        self.serves = serves

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise TypeError(f"NotFoundApp answers websockets only, not {scope['type']!r}")
        path = scope.get("path", "")
        reason = f"no websocket route matches {path!r}"
        if self.serves:
            reason += "; this app serves websockets at " + ", ".join(map(repr, self.serves))
        log_refusal(logger, path, Refused("not_found", reason))
        await deny(scope, send, f"websocket refused: {reason}\n", "not found")


def not_found_route(*serves: str) -> WebSocketRoute:
    """A websocket route matching every path: put it last in the app's routes.

    ``serves`` are the paths where the app does serve websockets (``"/ws"``), named in the
    refusal: strings (``TypeError`` otherwise) that start with ``/`` (``ValueError``).
    """
    for path in serves:
        if not isinstance(path, str):
            raise TypeError(f"serves takes paths as strings, got {path!r}")
        if not path.startswith("/"):
            raise ValueError(f"each path served must start with '/', got {path!r}")
    return WebSocketRoute("/{path:path}", NotFoundApp(serves))
