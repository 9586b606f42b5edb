"""A client back after a long absence gets more history than its outbox holds, in full."""

from __future__ import annotations

import asyncio
import json

import websockets
from starlette.applications import Starlette

from tbone.dispatch import MemoryChannel
from tbone_asgi import channel_route
from tests.support.asgi_server import run_uvicorn


async def test_a_backlog_bigger_than_the_outbox_is_replayed_in_full() -> None:
    channel = MemoryChannel(name="backlog", history=500)
    app = Starlette(routes=[channel_route("/ws", channel, max_bytes=64 * 1024)])
    seen = await channel.publish("e", {"n": -1})
    # 200 x 4 KB missed: about 13 times what the connection's outbox takes at once.
    missed = [await channel.publish("e", {"n": n, "pad": "x" * 4000}) for n in range(200)]
    async with (
        run_uvicorn(app) as server,
        websockets.connect(server.ws_url(f"/ws?events=e&since={seen.id}"), max_size=None) as ws,
    ):
        frames = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(201)]
    events = [f["payload"]["id"] for f in frames if f["type"] == "event"]
    assert events == [e.id for e in missed]
    assert frames[-1] == {"type": "recovered", "payload": {"channel": "backlog", "complete": True}}
    assert channel.stats()["closed_slow"] == 0
