"""A reconnect storm: 200 clients cut at once reconnect together with ``since`` and miss nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette

from tbone.dispatch import MemoryChannel
from tbone_asgi import channel_route
from tests.reliability.wsclient import Subscriber
from tests.support.asgi_server import run_uvicorn
from tests.support.web_servers import wait_until

CLIENTS = 200
BEFORE = 20  # events every client may have read before the cut
MISSED = 100  # events published while every client is away
LIVE = 100  # events published while they reconnect


@pytest.mark.slow
async def test_reconnect_storm(figure: Callable[[str, Any], Any]) -> None:
    channel = MemoryChannel(name="storm", history=5_000)
    app = Starlette(routes=[channel_route("/ws", channel)])
    async with run_uvicorn(app) as server:
        url = server.ws_url("/ws?events=tick")
        clients = await asyncio.gather(*(Subscriber.connect(url) for _ in range(CLIENTS)))
        await wait_until(lambda: channel.stats()["subscribers"] == CLIENTS, 20, "all subscribed")
        published = [await channel.publish("tick", n) for n in range(BEFORE)]
        # Client k reads k % BEFORE + 1 events: 200 different resume points, 1 to 20.
        await asyncio.gather(*(c.read_events(k % BEFORE + 1) for k, c in enumerate(clients)))
        since = [c.ids[k % BEFORE] for k, c in enumerate(clients)]

        for client in clients:
            client.cut()
        await wait_until(lambda: channel.stats()["subscribers"] == 0, 20, "all gone")
        published += [await channel.publish("tick", n) for n in range(BEFORE, BEFORE + MISSED)]

        async def live() -> None:
            for n in range(BEFORE + MISSED, BEFORE + MISSED + LIVE):
                published.append(await channel.publish("tick", n))
                await asyncio.sleep(0.002)  # a steady stream during the storm (pacing only)

        started = time.monotonic()
        live_task = asyncio.ensure_future(live())
        again = await asyncio.gather(*(Subscriber.connect(f"{url}&since={s}") for s in since))
        await live_task
        connected = time.monotonic() - started
        last = published[-1].id
        await asyncio.gather(*(c.read_until(lambda s: last in s.ids) for c in again))
        caught_up = time.monotonic() - started
        for client in again:
            await client.close()

    ids = [e.id for e in published]
    duplicates = gaps = 0
    for client, resume_from in zip(again, since, strict=True):
        expected = ids[ids.index(resume_from) + 1 :]
        got = client.ids
        duplicates += len(got) - len(set(got))
        gaps += len(set(expected) - set(got))
        assert got == expected, (
            f"resumed after {resume_from}: {len(got)} events, {len(expected)} due"
        )
        assert client.recovered == [{"channel": "storm", "complete": True}]
    assert duplicates == gaps == 0
    figure("clients", CLIENTS)
    figure("events missed per client (min..max)", f"{MISSED}..{MISSED + BEFORE - 1}")
    figure("all reconnected within s", connected)
    figure("all caught up within s", caught_up)
    figure("duplicates", duplicates)
    figure("gaps", gaps)
