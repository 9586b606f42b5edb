"""docs/deploy.md, "gunicorn with uvicorn workers": two workers on one Redis channel, reloaded.

gunicorn runs the page's command (two workers instead of four, a free port) on the page's app
with a private redis-server. Clients stay subscribed while a publisher posts numbered events
over HTTP (each handled by whichever worker accepts it); in the middle the test sends SIGHUP,
gunicorn's graceful reload. Every client must receive every event exactly once, in order:
those published while it reconnected come from the Redis stream when it resumes.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from tbone_asgi.client import Subscription, subscribe
from tests.demo.waiting import ready, take
from tests.deploy.recipes import BIN, block, command, replace
from tests.support.child import Child
from tests.support.redis_server import RedisServer, free_port, require_redis_server

pytestmark = pytest.mark.timeout(120)

ORIGIN = "https://app.example.com"
EVENTS = 60  # published in all
RELOAD_AT = 20  # SIGHUP after this many
CLIENTS = 4
WORKERS = 2  # the page says 4: two are enough for a shared channel, and cheaper


@pytest.fixture
async def gunicorn(tmp_path: Path) -> AsyncIterator[tuple[Child, str]]:
    require_redis_server()
    port = free_port()
    (tmp_path / "app.py").write_text(block("app.py"))
    line = command("gunicorn app:app ")
    line = replace(line, "--workers 4", f"--workers {WORKERS}")
    line = replace(line, "--bind 127.0.0.1:8000", f"--bind 127.0.0.1:{port}")
    program, *args = line.split()
    with RedisServer(tmp_path / "redis") as redis:
        env = {"REDIS_URL": redis.url, "ALLOWED_ORIGINS": ORIGIN}
        async with Child.start([str(BIN / program), *args], env=env, cwd=tmp_path) as child:
            await child.wait_for("Application startup complete", count=WORKERS, timeout=30)
            yield child, f"127.0.0.1:{port}"
            child.send(signal.SIGTERM)
            await child.exit_within(30)


async def test_workers_share_the_channel_and_a_reload_loses_no_event(
    gunicorn: tuple[Child, str],
) -> None:
    child, host = gunicorn
    assert "Using worker: tbone_asgi.gunicorn.Worker" in child.text, child.text
    async with AsyncExitStack() as stack:
        subs: list[Subscription] = [
            await stack.enter_async_context(
                subscribe(f"ws://{host}/ws", ["item_create"], origin=ORIGIN, backoff=(0.05, 0.5))
            )
            for _ in range(CLIENTS)
        ]
        for sub in subs:
            await ready(sub)
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://{host}", timeout=10)
        )
        # Every client takes every event while the publisher runs (nothing waits on it).
        received = [asyncio.ensure_future(take(sub, EVENTS, timeout=60)) for sub in subs]
        for n in range(1, EVENTS + 1):
            if n == RELOAD_AT + 1:
                child.send(signal.SIGHUP)  # graceful reload: new workers, then old ones stop
                await child.wait_for("Application startup complete", count=2 * WORKERS, timeout=30)
            reply = await http.post("/items", json={"n": n})
            assert reply.status_code == 201, reply.text
        results = await asyncio.gather(*received)
    for sub, events in zip(subs, results, strict=True):
        assert [e.data["n"] for e in events] == list(range(1, EVENTS + 1))  # no gap, no repeat
        # Each reconnected once its old worker stopped, and again if that reconnect reached the
        # other old worker before it stopped too (both get SIGTERM together, and each stops
        # accepting on its own time): at most once per old worker.
        assert 2 <= sub.connections <= 1 + WORKERS
    assert child.text.count("Booting worker") == 2 * WORKERS, child.text
    assert "Traceback" not in child.text, child.text
