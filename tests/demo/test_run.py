"""``uvicorn demo:app`` as a user runs it: from the repository root, in its own process.

With ``TBONE_CHANNEL_URL=redis://...`` two demo processes (two workers, or two hosts) share
events and keep the same item list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tbone_asgi.client import subscribe
from tests.demo.waiting import ready, take
from tests.support.redis_server import RedisServer, require_redis_server

ROOT = Path(__file__).resolve().parents[2]
UVICORN = Path(sys.executable).parent / "uvicorn"


@contextlib.asynccontextmanager
async def demo_process(env: dict[str, str] | None = None) -> AsyncIterator[str]:
    """Run ``uvicorn demo:app`` from the repository root; yield its base URL.

    The test binds the socket and hands it over (``--fd``), so the port is known and free of
    races; startup is awaited on uvicorn's own "startup complete" line, never by polling.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        str(UVICORN),
        "demo:app",
        "--fd",
        str(sock.fileno()),
        "--no-access-log",
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=(sock.fileno(),),
    )
    sock.close()  # the child has its own copy
    assert proc.stderr is not None
    log: list[str] = []

    async def started() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            log.append(line)
            if "Application startup complete" in line:
                return
        raise RuntimeError("uvicorn exited during startup:\n" + "\n".join(log))

    drain: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(started(), 20)

        async def keep_reading() -> None:
            # Read on, so a chatty server never blocks on a full pipe.
            assert proc.stderr is not None
            async for raw in proc.stderr:
                log.append(raw.decode(errors="replace").rstrip())

        drain = asyncio.get_running_loop().create_task(keep_reading())
        yield f"127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except (asyncio.TimeoutError, TimeoutError):
                proc.kill()
                await proc.wait()
        if drain is not None:
            await asyncio.wait_for(drain, 5)
    assert not any("Traceback" in line for line in log), "\n".join(log)


async def test_uvicorn_demo_app_serves_the_page_the_client_and_the_api() -> None:
    async with (
        demo_process({"TBONE_CHANNEL_URL": ""}) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        page = await http.get("/")
        assert page.status_code == 200
        assert 'src="static/demo/demo.js"' in page.text
        script = await http.get("/static/tbone/tbone.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert "export class TBoneClient" in script.text
        assert (await http.get("/static/demo/demo.css")).status_code == 200

        async with subscribe(f"ws://{host}/ws") as sub:
            await ready(sub)
            created = await http.post("/api/items", json={"name": "from a real process"})
            assert created.status_code == 201
            [event] = await take(sub, 1)
        assert (event.name, event.data) == ("resource_create", created.json())
        assert event.channel == "demo"


async def test_an_unknown_backend_url_fails_at_startup_with_the_fix() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from demo import app",
        cwd=ROOT,
        env={**os.environ, "TBONE_CHANNEL_URL": "kafka://localhost"},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 3
    assert err.decode().startswith("demo cannot start: TBONE_CHANNEL_URL='kafka://localhost'")
    assert "unknown scheme 'kafka'" in err.decode()
    assert "redis://" in err.decode()
    assert "Traceback" not in err.decode()


# Imported at startup by every Python process whose PYTHONPATH holds its folder: from then on
# `import redis` fails as it does where the redis extra is not installed.
NO_REDIS = """
import sys


class NoRedis:
    def find_spec(self, name, path=None, target=None):
        if name == "redis" or name.startswith("redis."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoRedis())
"""

FIX = "pip install 'tbone-asgi[redis]'"


@pytest.mark.parametrize(
    ("command", "status"),
    [
        # uvicorn's supervisor (0.54) stops once a worker exits with status 3, then exits 0.
        ([str(UVICORN), "demo:app", "--workers", "2"], 0),
        ([str(UVICORN), "demo:app"], 3),
        ([sys.executable, "-m", "demo", "--workers", "2"], 3),
    ],
    ids=["uvicorn --workers 2", "uvicorn", "python -m demo --workers 2"],
)
async def test_a_missing_backend_library_fails_once_with_the_fix(
    tmp_path: Path, command: list[str], status: int
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_REDIS)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.getenv("PYTHONPATH")])]),
        "TBONE_CHANNEL_URL": "redis://127.0.0.1:1/0",
        "TMPDIR": str(tmp_path),  # where the workers agree on who reports
    }
    proc = await asyncio.create_subprocess_exec(
        *command,
        "--port",
        "0",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # Bounded: before this change the supervisor restarted failing workers forever.
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = out.decode() + err.decode()
    assert proc.returncode == status, log
    assert log.count(FIX) == 1, log
    assert "demo cannot start: TBONE_CHANNEL_URL is a redis:// URL, and RedisChannel" in log
    assert "Traceback" not in log
    assert "died" not in log  # no worker was restarted
    if command[1:3] == ["-m", "demo"]:
        assert "Started" not in log  # checked before uvicorn started anything


async def test_two_processes_share_events_and_items_through_redis(tmp_path: Path) -> None:
    require_redis_server()
    with RedisServer(tmp_path) as redis:
        env = {"TBONE_CHANNEL_URL": redis.url}
        async with (
            demo_process(env) as first,
            demo_process(env) as second,
            httpx.AsyncClient(timeout=10) as http,
            subscribe(f"ws://{first}/ws") as on_first,
            subscribe(f"ws://{second}/ws") as sub,
        ):
            await ready(on_first)
            await ready(sub)
            created = await http.post(f"http://{first}/api/items", json={"name": "shared"})
            assert created.status_code == 201
            item = created.json()
            [event] = await take(sub, 1)  # made in the first process, seen through the second
            assert (event.name, event.data) == ("resource_create", item)
            # The second process's store followed: the list is the same from either worker.
            listing = (await http.get(f"http://{second}/api/items")).json()
            assert listing["items"] == [item]
            assert listing["since"] == event.id
            # And a delete through the second process reaches the first one's store.
            deleted = await http.delete(f"http://{second}/api/items/{item['id']}")
            assert deleted.status_code == 204
            [gone] = await take(sub, 1)
            assert gone.name == "resource_delete"
            # Once the first process has delivered the delete, its store has applied it too
            # (its mirror subscribed at startup, before any client, so it is served first).
            assert [e.name for e in await take(on_first, 2)] == [
                "resource_create",
                "resource_delete",
            ]
            assert (await http.get(f"http://{first}/api/items")).json()["items"] == []


@pytest.mark.parametrize("url", ["", "memory://"])
def test_the_default_backend_is_memory(url: str) -> None:
    from demo.backend import make_channel
    from tbone.dispatch import MemoryChannel

    channel = make_channel(url or None, name=f"demo-default-{bool(url)}")
    assert isinstance(channel, MemoryChannel)


async def test_redis_and_mongodb_urls_pick_their_channels() -> None:
    from demo.backend import make_channel
    from tbone.dispatch.channels.mongo import MongoChannel
    from tbone.dispatch.channels.redis import RedisChannel

    # Nothing connects until the channel is used, so no server is needed to build them.
    redis = make_channel("redis://127.0.0.1:1/0", name="demo-redis")
    assert isinstance(redis, RedisChannel)
    mongo = make_channel("mongodb://127.0.0.1:1/shop", name="demo-mongo")
    assert isinstance(mongo, MongoChannel)
    assert mongo.db.name == "shop"
    await mongo.db.client.close()
    with pytest.raises(ValueError, match="unknown scheme 'amqp'"):
        make_channel("amqp://localhost", name="demo-bad")


async def test_python_m_demo_runs_on_prepared_frames() -> None:
    # `python -m demo` serves on tbone_asgi.uvicorn's protocol: a client offering deflate is
    # answered with server_no_context_takeover, and its events are the prepared frames.
    from websockets.asyncio.client import connect

    from tests.support.child import Child

    command = [sys.executable, "-m", "demo", "--port", "0"]
    async with Child.start(command, env={"TBONE_CHANNEL_URL": ""}) as child:
        line = await child.wait_for(r"Uvicorn running on http://127\.0\.0\.1:\d+")
        host = line.split("http://", 1)[1].split()[0]
        async with (
            connect(f"ws://{host}/ws", compression="deflate", proxy=None) as ws,
            httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
        ):
            header = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            assert "server_no_context_takeover" in header
            await ws.send('{"type": "ping"}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
            created = await http.post("/api/items", json={"name": "prepared"})
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert frame["payload"]["data"] == created.json()
        child.interrupt()
        status, _ = await child.exit_within(10)
    assert status in (0, -2, 130), child.text


async def test_the_quick_start_logs_no_warning() -> None:
    # The README's quick start, `python -m demo`: a page loads, its websocket connects and
    # gets an event, and the log holds no warning (uvicorn's frame limit is the endpoint's).
    from tests.support.child import Child

    command = [sys.executable, "-m", "demo", "--port", "0"]
    async with Child.start(command, env={"TBONE_CHANNEL_URL": ""}) as child:
        line = await child.wait_for(r"Uvicorn running on http://127\.0\.0\.1:\d+")
        host = line.split("http://")[1].split()[0]
        async with (
            httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
            subscribe(f"ws://{host}/ws", ["resource_create"], retries=0) as sub,
        ):
            assert (await http.get("/")).status_code == 200
            await ready(sub)
            reply = await http.post("/api/items", json={"name": "milk"})
            assert reply.is_success, reply.text
            [event] = await take(sub, 1)
            assert event.data["name"] == "milk"
        child.interrupt()
        status, _ = await child.exit_within(15)
    assert status == 130 or status == 0, child.text
    assert "WARNING" not in child.text, child.text
    assert "Traceback" not in child.text, child.text
