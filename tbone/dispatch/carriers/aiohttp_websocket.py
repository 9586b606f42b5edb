"""aiohttp: :class:`AioHttpWebSocketCarrier` and the subscribe protocol's routes.

The carrier (a transport only) lives in :mod:`tbone.dispatch.carriers.aiohttp_carrier`; the glue
that serves the protocol on aiohttp (:func:`add_route`, :func:`serve`) in
:mod:`tbone.dispatch.carriers.aiohttp_routes`. This module is the import path TBone's
documentation and ours use for both:
``from tbone.dispatch.carriers.aiohttp_websocket import AioHttpWebSocketCarrier``.
"""

from __future__ import annotations

from tbone.dispatch.carriers.aiohttp_carrier import AioHttpWebSocketCarrier
from tbone.dispatch.carriers.aiohttp_routes import add_route, serve

__all__ = ["AioHttpWebSocketCarrier", "add_route", "serve"]
