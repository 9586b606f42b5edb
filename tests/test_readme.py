"""The README's examples run as written, served as the README says.

Each web framework example is served (the uvicorn ones by the README's own command, in a
process of their own), a websocket client subscribes, an HTTP request to the example's
publishing handler is made, and the client receives the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.support.web_servers import aiohttp_server, new_sanic_app, sanic_server

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_signals_and_channels_example_runs() -> None:
    block = next(b for b in python_blocks() if "RecordingCarrier" in b)
    out = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "'type': 'event'" in out
    assert "'name': 'resource_create'" in out
    assert "'data': {'pk': 1}" in out


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", README.read_text(), flags=re.S)


def test_ci_runs_the_readmes_test_command() -> None:
    commands = bash_blocks()
    assert len(commands) == 5
    _clone, _wheel, demo, _production, tests = commands
    assert demo.endswith("python -m demo")
    ci_lines = (README.parent / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines


def framework_block(marker: str) -> str:
    return next(b for b in python_blocks() if marker in b)


def serve_line(marker: str) -> tuple[str, str]:
    """What the README says to install and run under the block holding ``marker``."""
    text = README.read_text()
    block = framework_block(marker)
    after = text[text.index(block) + len(block) :].split("```python")[0]
    found = re.search(r"Serve:\s+`pip install ([^`]+)`,\s+then\s+`([^`]+)`", after)
    assert found, f"no serve line under the {marker!r} example"
    return found.group(1), found.group(2)


ITEM = {"name": "milk", "price": 1.5}


async def publish_and_receive(host: str) -> None:
    """Subscribe at ``ws://host/ws``, POST an item to ``http://host/items``, get the event."""
    async with (
        websockets.connect(f"ws://{host}/ws?events=item_create", proxy=None) as ws,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http,
    ):
        # The server answers frames in order: after the pong, the subscription is active.
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
        reply = await http.post("/items", json=ITEM)
        assert reply.is_success, reply.text
        assert reply.json() == ITEM
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["type"] == "event"
    assert frame["payload"]["name"] == "item_create"
    assert frame["payload"]["data"] == ITEM
    assert frame["payload"]["channel"] == "pubsub"


@contextlib.asynccontextmanager
async def served_as_written(
    tmp_path: Path, marker: str, command: str | None = None
) -> AsyncIterator[str]:
    """Save the block as ``app.py`` and run the README's uvicorn command on it; yield host:port.

    ``command``: another line of the README to serve it with (its production line). The test
    binds the socket and hands it over (``--fd``): connections wait in its backlog until
    uvicorn serves them, so nothing needs to poll for startup.
    """
    (tmp_path / "app.py").write_text(framework_block(marker))
    install, serve = serve_line(marker)
    # uvicorn without its standard extra has no websocket library: it cannot serve /ws.
    assert "'uvicorn[standard]'" in install.split()
    program, *args = shlex.split(command or serve)
    assert program == "uvicorn"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / program),
        *args,
        "--fd",
        str(sock.fileno()),
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=(sock.fileno(),),
    )
    host = f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # the server has its own copy
    try:
        yield host
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        sys.stderr.write(err.decode())  # pytest shows it when the test fails
    text = err.decode()
    assert "Traceback" not in text
    # The example creates its channel at startup: the endpoint finds it, and says nothing.
    assert "no channel named" not in text
    # Every line names its level (and tbone's, their logger): nothing printed bare.
    assert all(re.match(r"(INFO|WARNING):  ", line) for line in text.splitlines()), text


@pytest.mark.parametrize("marker", ["from starlette", "from fastapi", "from django"])
async def test_the_uvicorn_examples_publish_from_a_handler(tmp_path: Path, marker: str) -> None:
    async with served_as_written(tmp_path, marker) as host:
        await publish_and_receive(host)


async def test_the_production_line_serves_prepared_frames(tmp_path: Path) -> None:
    # The README's production line on its Starlette example: a client that offers deflate
    # (as browsers do) is answered without context takeover and gets its events.
    production = bash_blocks()[3]
    assert "--ws tbone_asgi.uvicorn:WebSocketProtocol" in production
    async with served_as_written(tmp_path, "from starlette", production) as host:
        async with websockets.connect(
            f"ws://{host}/ws?events=item_create", proxy=None, compression="deflate"
        ) as ws:
            header = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            assert "server_no_context_takeover" in header
        await publish_and_receive(host)


@pytest.fixture
async def fresh_pubsub(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """No channel "pubsub" in this process, and its missing-channel warning not yet given."""
    from tbone.dispatch import get_channel, serving

    async def forget() -> None:
        channel = get_channel("pubsub")
        if channel is not None:
            await channel.close(forget=True)

    monkeypatch.setattr(serving, "_warned", set())
    await forget()
    yield
    await forget()


def tbone_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith(("tbone.", "tbone_asgi"))
    ]


@pytest.mark.usefixtures("fresh_pubsub")
async def test_the_sanic_example_publishes_from_a_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert serve_line("from sanic") == ("'tbone-asgi[sanic]'", "sanic app:app")
    # Sanic keeps a registry of app names per process: each test app needs its own.
    block = framework_block("from sanic").replace('Sanic("shop")', "new_sanic_app()")
    namespace: dict[str, Any] = {"__name__": "app", "new_sanic_app": new_sanic_app}
    exec(block, namespace)
    async with sanic_server(namespace["app"]) as url:
        await publish_and_receive(url.removeprefix("http://"))
    assert tbone_warnings(caplog) == []  # the channel was created at startup


@pytest.mark.usefixtures("fresh_pubsub")
async def test_the_aiohttp_example_publishes_from_a_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert serve_line("from aiohttp") == ("'tbone-asgi[aiohttp]'", "python app.py")
    namespace: dict[str, Any] = {"__name__": "app"}  # not __main__: run_app is not called
    exec(framework_block("from aiohttp"), namespace)
    async with aiohttp_server(namespace["app"]) as url:
        await publish_and_receive(url.removeprefix("http://"))
    assert tbone_warnings(caplog) == []  # the channel was created at startup (cleanup_ctx)


def test_the_redis_line_installs_the_redis_extra() -> None:
    text = " ".join(README.read_text().split())
    assert "pip install -e '.[demo,redis]'" in text
    assert "TBONE_CHANNEL_URL=redis://127.0.0.1:6379/0 python -m demo --workers 2" in text


def test_the_install_lines_say_checkout_wheel_and_index() -> None:
    from tbone import __version__

    clone, wheel, *_ = bash_blocks()
    assert clone.startswith("git clone ")
    assert "pip install -e '.[asgi]'" in clone
    assert wheel.startswith("python -m build && ")
    # The wheel the line installs is the one `python -m build` makes of this version.
    assert f"dist/tbone_asgi-{__version__}-py3-none-any.whl[asgi]" in wheel
    text = " ".join(README.read_text().split())
    assert "not on the package index yet" in text
    assert "Once released, `python -m pip install 'tbone-asgi[asgi]'`" in text


def test_ci_builds_checks_and_installs_the_wheel_in_a_fresh_venv() -> None:
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert 'python -m build --outdir "$dist"' in ci
    assert 'twine check --strict "$dist"/*' in ci
    assert 'python .ci/fresh_install.py "$dist"' in ci
