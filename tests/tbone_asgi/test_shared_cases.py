"""The protocol cases every server must pass (tests/support/protocol_cases.py), on uvicorn.

The same cases run for Sanic and aiohttp, so a client sees the same protocol everywhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette

from tbone_asgi import channel_route
from tests.support.asgi_server import run_uvicorn
from tests.support.protocol_cases import ProtocolCases, Start, refused_with_403


class TestProtocolOnUvicorn(ProtocolCases):
    origin_refused = staticmethod(refused_with_403)
    subscription_refused = staticmethod(refused_with_403)

    @pytest.fixture
    def start(self) -> Start:
        @asynccontextmanager
        async def run(channel: Any, **options: Any) -> AsyncIterator[str]:
            app = Starlette(routes=[channel_route("/ws", channel, **options)])
            async with run_uvicorn(app) as server:
                yield server.ws_url("/ws")

        return run
