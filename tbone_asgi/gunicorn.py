"""``gunicorn app:app --worker-class tbone_asgi.gunicorn.Worker``: uvicorn workers for gunicorn,
on tbone's websocket protocol.

:class:`Worker` is ``uvicorn_worker.UvicornWorker`` (the ``uvicorn-worker`` package) serving
websockets with :class:`tbone_asgi.uvicorn.WebSocketProtocol`, which builds each event's frame
once for every subscriber, and with uvicorn's ``ws_max_size`` at the endpoint's frame limit
(:attr:`~tbone.dispatch.protocol.Limits.max_frame_bytes`, 65536), so a bigger client frame is
refused before uvicorn buffers it. It needs the ``gunicorn`` extra (gunicorn and
uvicorn-worker); docs/deploy.md ("gunicorn with uvicorn workers") runs it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tbone.dispatch.extras import requires
from tbone.dispatch.protocol import Limits

with requires(__name__, "gunicorn and uvicorn-worker", extra="gunicorn"):
    from uvicorn_worker import UvicornWorker

__all__ = ["Worker"]


class Worker(UvicornWorker):  # type: ignore[misc]  # gunicorn ships no type hints
    """A gunicorn worker running uvicorn on tbone's websocket protocol (see the module)."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "ws": "tbone_asgi.uvicorn:WebSocketProtocol",
        "ws_max_size": Limits().max_frame_bytes,
    }
