"""Misspelt options that mypy must report, one per line marked ``# misspelt``.

Checked by ``test_options_typing.py`` with the project's mypy settings; never run or collected.
"""

from __future__ import annotations

from aiohttp import web
from sanic import Sanic
from starlette.applications import Starlette

from tbone.dispatch.carriers.aiohttp_websocket import add_route as aiohttp_add_route
from tbone.dispatch.carriers.sanic_websocket import add_route as sanic_add_route
from tbone_asgi import ChannelMiddleware, channel_route

app = Starlette(routes=[channel_route("/ws", "pubsub", max_mesages=10)])  # misspelt
wrapped = ChannelMiddleware(app, path="/ws", channel="pubsub", slow_timout=1)  # misspelt
sanic_add_route(Sanic("typing"), "/ws", "pubsub", alowed_origins=["https://a.example"])  # misspelt
aiohttp_add_route(web.Application(), "/ws", "pubsub", max_conections=5)  # misspelt
