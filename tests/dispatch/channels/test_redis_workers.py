"""End to end: ``uvicorn --workers 2`` with a RedisChannel; an event published through one
worker reaches a websocket client connected to the other."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.support.redis_server import RedisServer, free_port

ROOT = str(Path(__file__).resolve().parents[3])

APP = """
import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from tbone.dispatch.channels.redis import RedisChannel
from tbone_asgi import channel_route, channels_lifespan

channel = RedisChannel(
    name="pubsub", url=os.environ["TBONE_TEST_REDIS_URL"], block_ms=200, probe_interval=1.0
)


def worker(**extra):
    stats = channel.stats()
    return JSONResponse({"pid": os.getpid(), "subscribers": stats["subscribers"], **extra})


async def ready(request):
    await channel.ready()
    return worker()


async def publish(request):
    event = await channel.publish("note", {"pid": os.getpid()})
    return worker(id=event.id)


app = Starlette(
    routes=[
        Route("/ready", ready),
        Route("/publish", publish, methods=["POST"]),
        channel_route("/ws", channel),
    ],
    lifespan=channels_lifespan(channel),
)
"""

WORKERS = 2


class Uvicorn:
    """``uvicorn app:app --workers N`` in a child process, its stderr collected."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.log: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, app_dir: Path, redis_url: str) -> Uvicorn:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "uvicorn",
            "app:app",
            "--app-dir",
            str(app_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(WORKERS),
            "--no-access-log",
            "--log-level",
            "info",
            cwd=ROOT,
            env={**os.environ, "TBONE_TEST_REDIS_URL": redis_url, "PYTHONPATH": ROOT},
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process, port)

    async def started(self, timeout: float = 30.0) -> None:
        """Wait until every worker logged that its startup (lifespan) completed."""

        async def read() -> None:
            assert self.process.stderr is not None
            done = 0
            while done < WORKERS:
                raw = await self.process.stderr.readline()
                if not raw:
                    raise AssertionError("uvicorn exited:\n" + "\n".join(self.log))
                self.log.append(raw.decode().rstrip())
                done += "Application startup complete" in self.log[-1]

        await asyncio.wait_for(read(), timeout)
        self._drain = asyncio.get_running_loop().create_task(self._keep_draining())

    async def _keep_draining(self) -> None:
        # A full stderr pipe would block the workers.
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.log.append(raw.decode().rstrip())

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()  # uvicorn stops its workers on SIGTERM
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except (asyncio.TimeoutError, TimeoutError):
                self.process.kill()
                await self.process.wait()
        if self._drain is not None:
            await asyncio.wait_for(self._drain, 5)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Uvicorn]:
    with RedisServer(tmp_path / "redis") as redis_server:
        (tmp_path / "app.py").write_text(APP)
        uvicorn = await Uvicorn.start(tmp_path, redis_server.url)
        try:
            await uvicorn.started()
            yield uvicorn
        finally:
            await uvicorn.stop()


async def _until_other_worker(
    client: httpx.AsyncClient, method: str, path: str, want: Any, attempts: int = 100
) -> list[dict[str, Any]]:
    # Each request opens a new connection, so the kernel hands it to either worker; stop once
    # ``want(answers)`` holds. Bounded: two workers answer within a few tries.
    answers: list[dict[str, Any]] = []
    for _ in range(attempts):
        response = await client.request(method, path)
        response.raise_for_status()
        answers.append(response.json())
        if want(answers):
            return answers
    raise AssertionError(f"no answer satisfied the test in {attempts} requests: {answers}")


async def test_a_websocket_on_one_worker_gets_events_published_through_the_other(
    server: Uvicorn,
) -> None:
    base = f"http://127.0.0.1:{server.port}"
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=no_reuse, timeout=10) as client:
        # Both workers' readers are in place (each answers /ready only then).
        ready = await _until_other_worker(
            client, "GET", "/ready", lambda answers: len({a["pid"] for a in answers}) == WORKERS
        )
        assert len({a["pid"] for a in ready}) == WORKERS
        url = f"ws://127.0.0.1:{server.port}/ws?events=note"
        async with websockets.connect(url, open_timeout=10) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
            # The worker holding the websocket has a subscriber; the other has none.
            answers = await _until_other_worker(
                client, "POST", "/publish", lambda answers: answers[-1]["subscribers"] == 0
            )
            other = answers[-1]
            assert other["pid"] not in {a["pid"] for a in answers if a["subscribers"] == 1}
            received: list[dict[str, Any]] = []
            while not any(f["payload"]["id"] == other["id"] for f in received):
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert frame["type"] == "event", frame
                received.append(frame)
    # Every publish arrived, once, in stream order, whichever worker served it.
    assert [f["payload"]["id"] for f in received] == [a["id"] for a in answers]
    assert received[-1]["payload"] == {
        "name": "note",
        "data": {"pid": other["pid"]},
        "id": other["id"],
        "channel": "pubsub",
    }
