"""The Origin check; it lives in :mod:`tbone.dispatch.origin` so Sanic and aiohttp share it."""

from __future__ import annotations

from tbone.dispatch.origin import OriginPolicy, header

__all__ = ["OriginPolicy", "header"]
