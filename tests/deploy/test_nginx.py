"""docs/deploy.md, "nginx in front": nginx (Debian's package) and uvicorn as the page says.

nginx runs the page's configuration (its ports changed to free ones, inside a minimal
``nginx.conf`` of the test's own: pid, logs and temp paths in a temporary directory), uvicorn
runs the page's command on the page's app, with a private redis-server. A websocket client
talks to nginx only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tbone.dispatch.protocol import Limits
from tbone_asgi.client import subscribe
from tests.demo.waiting import ready, take
from tests.deploy.recipes import BIN, block, command, replace, require
from tests.support.asgi_server import wait_until
from tests.support.child import Child
from tests.support.redis_server import RedisServer, free_port, require_redis_server

pytestmark = pytest.mark.timeout(90)

ORIGIN = "https://app.example.com"  # the public origin the recipe's app allows
FAST = (0.05, 0.5)  # the test clients' reconnect backoff


def nginx_conf(tmp: Path, port: int, upstream: int) -> Path:
    """The page's nginx block inside a whole nginx.conf for a test run."""
    site = replace(block("nginx.conf"), "listen 80;", f"listen 127.0.0.1:{port};")
    site = replace(site, "server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};")
    temp = "\n".join(
        f"    {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp paths
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {tmp / 'nginx.pid'};\n"
        f"error_log {tmp / 'error.log'} warn;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n    access_log off;\n{temp}\n"
        f"    uwsgi_temp_path {tmp / 'uwsgi'};\n    scgi_temp_path {tmp / 'scgi'};\n"
        f"{site}\n}}\n"
    )
    return conf


def uvicorn_args(upstream: int) -> list[str]:
    line = command("uvicorn app:app ")
    line = replace(line, "--port 8000", f"--port {upstream}")
    program, *args = line.split()
    return [str(BIN / program), *args]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[dict[str, object]]:
    """nginx in front of uvicorn (the page's app, on a private Redis); yields their parts."""
    nginx = require("nginx", "nginx")
    require_redis_server()
    port, upstream = free_port(), free_port()
    (tmp_path / "app.py").write_text(block("app.py"))
    conf = nginx_conf(tmp_path, port, upstream)
    checked = subprocess.run(  # noqa: ASYNC221 - nginx -t takes milliseconds
        [nginx, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    with RedisServer(tmp_path / "redis") as redis:
        env = {"REDIS_URL": redis.url, "ALLOWED_ORIGINS": ORIGIN}
        async with (
            Child.start([nginx, "-c", str(conf), "-p", str(tmp_path)]) as proxy,
            Child.start(uvicorn_args(upstream), env=env, cwd=tmp_path) as app,
        ):
            await app.wait_for("Uvicorn running on")  # listening
            await wait_until(lambda: _listens(port), timeout=10, what="nginx listens")
            yield {
                "url": f"127.0.0.1:{port}",
                "app": app,
                "nginx": proxy,
                "redis": redis,
                "restart": lambda: Child.start(uvicorn_args(upstream), env=env, cwd=tmp_path),
            }


def _listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _refused(url: str, origin: str) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, origin=origin, proxy=None):  # type: ignore[arg-type]
            pass
    response = info.value.response
    return response.status_code, bytes(response.body or b"").decode()


async def _close_code(ws: websockets.ClientConnection) -> int | None:
    """Read frames (error frames, events) until the server closes; its close code."""
    with contextlib.suppress(ConnectionClosed):
        for _ in range(1000):
            await asyncio.wait_for(ws.recv(), 10)
    return ws.close_code


async def test_events_origins_and_close_codes_through_nginx(stack: dict[str, object]) -> None:
    host = stack["url"]
    ws_url = f"ws://{host}/ws?events=item_create"
    async with httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200, health.text
        assert health.json()["channels"]["pubsub"]["backend"] == "redis"

        # The public origin: events published over HTTP arrive through the proxy.
        async with websockets.connect(ws_url, origin=ORIGIN, proxy=None) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
            reply = await http.post("/items", json={"name": "milk"})
            assert reply.status_code == 201
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["payload"]["name"] == "item_create"
            assert frame["payload"]["data"] == {"name": "milk"}

    # Another origin: 403, and the body says why (through nginx).
    status, body = await _refused(ws_url, "http://localhost:5173")
    assert status == 403
    assert body.startswith("websocket refused: forbidden_origin: ")

    # Bad frames, max_errors of them in a row: 1008; a frame over the frame limit: 1009.
    async with websockets.connect(ws_url, origin=ORIGIN, proxy=None) as ws:  # type: ignore[arg-type]
        for _ in range(Limits().max_errors):
            await ws.send("[1, 2]")
        assert await _close_code(ws) == 1008
    async with websockets.connect(
        ws_url,
        origin=ORIGIN,  # type: ignore[arg-type]
        proxy=None,
        compression=None,
    ) as ws:
        await ws.send("x" * 70_000)
        assert await _close_code(ws) == 1009


async def test_a_restart_behind_nginx_is_1012_and_the_client_resumes_without_a_gap(
    stack: dict[str, object],
) -> None:
    host = stack["url"]
    app = stack["app"]
    assert isinstance(app, Child)
    redis = stack["redis"]
    assert isinstance(redis, RedisServer)
    ws_url = f"ws://{host}/ws"
    async with (
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
        subscribe(ws_url, ["item_create"], origin=ORIGIN, backoff=FAST) as sub,
        websockets.connect(f"{ws_url}?events=item_create", origin=ORIGIN, proxy=None) as raw,  # type: ignore[arg-type]
    ):
        await ready(sub)
        assert (await http.post("/items", json={"n": 1})).status_code == 201
        assert [e.data for e in await take(sub, 1)] == [{"n": 1}]

        app.send(15)  # SIGTERM: uvicorn closes its websockets with 1012 (service restart)
        assert await _close_code(raw) == 1012
        status, _ = await app.exit_within(15)
        assert status in (0, -15), app.text  # uvicorn may end by the signal it was sent

        # Published while the app is down (by another process: the Redis stream keeps it).
        await _publish_raw(redis.url, {"n": 2})

        restart = stack["restart"]
        async with restart() as again:  # type: ignore[operator]
            await again.wait_for("Uvicorn running on")  # listening
            assert (await http.post("/items", json={"n": 3})).status_code == 201
            got = [e.data for e in await take(sub, 2)]
            assert got == [{"n": 2}, {"n": 3}]  # no gap, no repeat
            assert sub.connections == 2


async def _publish_raw(url: str, data: object) -> None:
    """Publish on "pubsub" from this process, as another worker would."""
    from tbone.dispatch.channels.redis import RedisChannel

    channel = RedisChannel(name="pubsub", url=url)
    try:
        await channel.publish("item_create", data)
    finally:
        await channel.close(forget=True)


if sys.platform != "linux":  # pragma: no cover
    pytest.skip("nginx recipes run on Linux", allow_module_level=True)
