"""health_route on uvicorn: 200 while each channel's backend answers, 503 with the reason else.

The Redis case runs a private redis-server, kills it while the app is served, and starts it
again on the same port: the endpoint follows (503, then 200), as a load balancer needs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from tbone.dispatch import MemoryChannel
from tbone_asgi import HealthApp, channel_route, health_route
from tests.support.asgi_server import run_uvicorn
from tests.support.redis_server import RedisServer, require_redis_server


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    require_redis_server()
    with RedisServer(tmp_path / "redis") as server:
        yield server


async def test_a_memory_channel_is_ready_and_a_missing_one_is_not() -> None:
    name = f"health-{uuid.uuid4().hex[:8]}"
    channel = MemoryChannel(name=name)
    app = Starlette(
        routes=[
            health_route("/healthz", channels=[name]),
            health_route("/missing", channels=[name, "never-made"], name="missing"),
        ]
    )
    async with (
        run_uvicorn(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        reply = await http.get("/healthz")
        assert reply.status_code == 200
        assert reply.headers["cache-control"] == "no-store"
        assert reply.json() == {
            "status": "ok",
            "channels": {name: {"backend": "memory", "consumer": "running", "reachable": True}},
        }
        reply = await http.get("/missing")
        assert reply.status_code == 503
        body = reply.json()
        assert body["status"] == "unavailable"
        assert body["channels"]["never-made"] == {
            "reachable": False,
            "error": "no channel named 'never-made' was created in this process",
        }
        assert body["channels"][name]["reachable"] is True
        head = await http.head("/healthz")
        assert (head.status_code, head.content) == (200, b"")
        assert (await http.post("/healthz")).status_code == 405
    await channel.close(forget=True)


async def test_a_redis_backend_that_stops_answering_is_503_then_200_again(
    redis_server: RedisServer,
) -> None:
    from tbone.dispatch.channels.redis import RedisChannel

    name = f"health-{uuid.uuid4().hex[:8]}"
    channel = RedisChannel(name=name, url=redis_server.url)
    app = Starlette(
        routes=[channel_route("/ws", name), health_route("/healthz", timeout=0.5)],
    )
    try:
        async with (
            run_uvicorn(app) as server,
            httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        ):
            reply = await http.get("/healthz")
            assert reply.status_code == 200, reply.text
            assert reply.json()["channels"][name]["backend"] == "redis"

            redis_server.kill()
            reply = await _until_status(http, 503)
            report = reply.json()["channels"][name]
            assert report["reachable"] is False
            assert report["error"]  # the channel's own reason, in one line

            redis_server.start()  # same port: the consumer reconnects by itself
            reply = await _until_status(http, 200)
            assert reply.json()["channels"][name]["consumer"] == "running"
    finally:
        await channel.close(forget=True)


async def _until_status(http: httpx.AsyncClient, status: int) -> httpx.Response:
    """Ask as a load balancer does, until ``status`` (each request waits up to its timeout)."""
    for _ in range(40):  # bounded: 40 checks of at most 0.5 s each
        reply = await http.get("/healthz")
        if reply.status_code == status:
            return reply
    raise AssertionError(f"/healthz never answered {status}; last: {reply.text}")


def test_bad_arguments_are_refused_with_the_fix() -> None:
    with pytest.raises(TypeError, match=r"use channels=\['pubsub'\]"):
        HealthApp("pubsub")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be more than 0 seconds"):
        HealthApp(timeout=0)
