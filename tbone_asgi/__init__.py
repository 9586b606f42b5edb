"""tbone_asgi: a websocket subscribe endpoint bound to a channel, for any ASGI app.

* :func:`channel_route` gives a Starlette ``WebSocketRoute`` (Starlette, FastAPI, Mounts).
* :class:`ChannelMiddleware` adds the endpoint to any ASGI app (Django, Quart, bare ASGI).
* :func:`channels_lifespan` starts channels with the app and closes them with it.
* :func:`health_route` answers a load balancer: 200 while each channel's backend answers.
* :func:`not_found_route`, last in the routes, says why a websocket to a wrong path is refused.

``docs/asgi.md`` shows each; ``docs/protocol.md`` is the wire protocol. The endpoint needs the
``asgi`` extra (``pip install 'tbone-asgi[asgi]'``); the names built on Starlette are imported
when first used, so the Python client (:mod:`tbone_asgi.client`, ``python -m tbone_asgi
listen``) needs only the ``client`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tbone import __version__
from tbone.dispatch.extras import lazy, missing
from tbone.dispatch.origin import OriginPolicy
from tbone.dispatch.protocol import Limits, Refused
from tbone_asgi.lifespan import channels_lifespan

if TYPE_CHECKING:
    from tbone_asgi.endpoint import ChannelEndpoint
    from tbone_asgi.health import HealthApp, health_route
    from tbone_asgi.metrics import MetricsApp, metrics_route
    from tbone_asgi.middleware import ChannelMiddleware
    from tbone_asgi.not_found import NotFoundApp, not_found_route
    from tbone_asgi.routing import channel_route

__all__ = [
    "ChannelEndpoint",
    "ChannelMiddleware",
    "HealthApp",
    "Limits",
    "MetricsApp",
    "NotFoundApp",
    "OriginPolicy",
    "Refused",
    "__version__",
    "channel_route",
    "channels_lifespan",
    "health_route",
    "metrics_route",
    "not_found_route",
]


def _needs_starlette(name: str) -> None:
    try:
        import starlette  # noqa: F401 - only to give a clear error when the extra is missing
    except ImportError as exc:
        raise missing(f"tbone_asgi.{name}", "Starlette", "asgi") from exc


# The names built on Starlette are imported at first use: the client and the command line
# need only the client extra.
if not TYPE_CHECKING:  # the type checker reads the imports above
    __getattr__ = lazy(
        __name__,
        {
            "tbone_asgi.endpoint": ["ChannelEndpoint"],
            "tbone_asgi.health": ["HealthApp", "health_route"],
            "tbone_asgi.metrics": ["MetricsApp", "metrics_route"],
            "tbone_asgi.middleware": ["ChannelMiddleware"],
            "tbone_asgi.not_found": ["NotFoundApp", "not_found_route"],
            "tbone_asgi.routing": ["channel_route"],
        },
        before=_needs_starlette,
    )
