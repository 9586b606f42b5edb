"""The import path of aiohttp's :func:`add_route` and :func:`serve` before they moved up a layer.

They live in :mod:`tbone.dispatch.glue.aiohttp` (framework glue sits above channels and serving,
docs/architecture.md); this module re-exports them, as does
:mod:`tbone.dispatch.carriers.aiohttp_websocket`.
"""

from __future__ import annotations

from tbone.dispatch.glue.aiohttp import add_route, serve

__all__ = ["add_route", "serve"]
