"""The same calls as ``misspelt_option.py``, spelt right: mypy must accept every one.

Checked by ``test_options_typing.py`` with the project's mypy settings; never run or collected.
"""

from __future__ import annotations

from aiohttp import web
from sanic import Sanic
from starlette.applications import Starlette

from tbone.dispatch.carriers.aiohttp_websocket import add_route as aiohttp_add_route
from tbone.dispatch.carriers.sanic_websocket import add_route as sanic_add_route
from tbone.dispatch.protocol import Limits
from tbone_asgi import ChannelMiddleware, channel_route

app = Starlette(routes=[channel_route("/ws", "pubsub", max_messages=10, name="ws")])
wrapped = ChannelMiddleware(app, path="/ws", channel="pubsub", slow_timeout=1, limits=Limits())
sanic_add_route(Sanic("typing"), "/ws", "pubsub", allowed_origins=["https://a.example"])
aiohttp_add_route(web.Application(), "/ws", "pubsub", max_connections=5, heartbeat=None)
