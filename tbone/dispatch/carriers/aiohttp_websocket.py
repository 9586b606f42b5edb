"""aiohttp: the import path of :class:`AioHttpWebSocketCarrier` and of its routes.

The handler of TBone's documentation prepares the response itself::

    from tbone.dispatch.carriers.aiohttp_websocket import AioHttpWebSocketCarrier

    async def websocket_handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        request.app.pubsub = MemoryChannel(name="pubsub")
        request.app.pubsub.subscribe("resource_create", AioHttpWebSocketCarrier(ws))
        async for msg in ws:
            ...
        return ws

With :func:`add_route` (``add_route(app, "/ws", "pubsub")``) or :func:`serve` in a handler,
the package serves the subscribe protocol. Modules: the carrier,
:mod:`~tbone.dispatch.carriers.aiohttp_carrier`; the glue,
:mod:`~tbone.dispatch.glue.aiohttp`.
"""

from __future__ import annotations

from tbone.dispatch.carriers.aiohttp_carrier import AioHttpWebSocketCarrier
from tbone.dispatch.glue.aiohttp import add_route, serve

__all__ = ["AioHttpWebSocketCarrier", "add_route", "serve"]
