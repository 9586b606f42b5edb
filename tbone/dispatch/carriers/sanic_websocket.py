"""Sanic: where users import :class:`SanicWebSocketCarrier`, :func:`add_route` and :func:`serve`.

TBone's documentation subscribes a Sanic websocket from a handler of its own::

    from tbone.dispatch.carriers.sanic_websocket import SanicWebSocketCarrier

    async def resource_event_websocket(request, ws):
        request.app.ctx.pubsub = MemoryChannel(name="pubsub")
        request.app.ctx.pubsub.subscribe("resource_create", SanicWebSocketCarrier(ws))
        while True:
            await ws.recv()

and ``add_route(app, "/ws", "pubsub")`` serves the whole subscribe protocol. The carrier is in
:mod:`~tbone.dispatch.carriers.sanic_carrier`, the routes in
:mod:`~tbone.dispatch.glue.sanic`.
"""

from __future__ import annotations

from tbone.dispatch.carriers.sanic_carrier import SanicWebSocketCarrier
from tbone.dispatch.glue.sanic import add_route, serve

__all__ = ["SanicWebSocketCarrier", "add_route", "serve"]
