"""The protocol cases every server must pass (tests/support/protocol_cases.py), on uvicorn.

The same cases run for Sanic and aiohttp, so a client sees the same protocol everywhere.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from tbone_asgi import channel_route
from tests.support.asgi_server import uvicorn_url
from tests.support.protocol_cases import ProtocolCases, refused_with_403


def routed(channel: Any, **options: Any) -> Starlette:
    """A Starlette app serving ``channel`` through channel_route."""
    return Starlette(routes=[channel_route("/ws", channel, **options)])


class TestProtocolOnUvicorn(ProtocolCases):
    app = staticmethod(routed)
    run = staticmethod(uvicorn_url)
    refused = staticmethod(refused_with_403)
