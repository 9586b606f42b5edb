"""Sanic: :class:`SanicWebSocketCarrier` and the subscribe protocol's routes.

The carrier (a transport only) lives in :mod:`tbone.dispatch.carriers.sanic_carrier`; the glue
that serves the protocol on Sanic (:func:`add_route`, :func:`serve`) in
:mod:`tbone.dispatch.carriers.sanic_routes`. This module is the import path TBone's
documentation and ours use for both:
``from tbone.dispatch.carriers.sanic_websocket import SanicWebSocketCarrier``.
"""

from __future__ import annotations

from tbone.dispatch.carriers.sanic_carrier import SanicWebSocketCarrier
from tbone.dispatch.carriers.sanic_routes import add_route, serve

__all__ = ["SanicWebSocketCarrier", "add_route", "serve"]
