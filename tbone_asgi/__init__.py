"""tbone_asgi: a websocket subscribe endpoint bound to a channel, for any ASGI app.

* :func:`channel_route` gives a Starlette ``WebSocketRoute`` (Starlette, FastAPI, Mounts).
* :class:`ChannelMiddleware` adds the endpoint to any ASGI app (Django, Quart, bare ASGI).
* :func:`channels_lifespan` starts channels with the app and closes them with it.

``docs/asgi.md`` shows each; ``docs/protocol.md`` is the wire protocol. Needs the ``asgi``
extra: ``pip install 'tbone-asgi[asgi]'``.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401 - only to give a clear error when the extra is missing
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("tbone_asgi needs Starlette: pip install 'tbone-asgi[asgi]'") from exc

from tbone.dispatch.origin import OriginPolicy
from tbone.dispatch.protocol import Limits, Refused
from tbone_asgi.endpoint import ChannelEndpoint
from tbone_asgi.lifespan import channels_lifespan
from tbone_asgi.metrics import MetricsApp, metrics_route
from tbone_asgi.middleware import ChannelMiddleware
from tbone_asgi.routing import channel_route

__all__ = [
    "ChannelEndpoint",
    "ChannelMiddleware",
    "Limits",
    "MetricsApp",
    "OriginPolicy",
    "Refused",
    "channel_route",
    "channels_lifespan",
    "metrics_route",
]
