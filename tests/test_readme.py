"""The README's examples run as written."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import websockets

from tbone.dispatch import MemoryChannel
from tests.support.asgi_server import run_uvicorn, wait_until
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


def test_ci_runs_the_readmes_test_command() -> None:
    commands = re.findall(r"```bash\n(.*?)\n```", README.read_text(), flags=re.S)
    assert len(commands) == 2
    demo, tests = commands
    assert demo.endswith("uvicorn demo:app")
    ci_lines = (README.parent / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines


def framework_block(marker: str) -> str:
    return next(b for b in python_blocks() if marker in b)


async def roundtrip(ws_url: str) -> dict[str, Any]:
    """Connect a websocket client, publish on "pubsub", return the event frame it receives."""
    async with websockets.connect(ws_url + "/ws?events=resource_create") as ws:
        channel = MemoryChannel(name="pubsub")
        await wait_until(lambda: channel.stats()["subscribers"] == 1)
        await channel.publish("resource_create", {"pk": 1})
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return frame


def check(frame: dict[str, Any]) -> None:
    assert frame["type"] == "event"
    assert frame["payload"]["name"] == "resource_create"
    assert frame["payload"]["data"] == {"pk": 1}
    assert frame["payload"]["channel"] == "pubsub"


@pytest.mark.parametrize("marker", ["from starlette", "from fastapi"])
async def test_the_starlette_and_fastapi_examples_serve_events(marker: str) -> None:
    namespace: dict[str, Any] = {}
    exec(framework_block(marker), namespace)
    async with run_uvicorn(namespace["app"]) as server:
        check(await roundtrip(server.ws_url("")))


async def test_the_django_example_serves_events() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["127.0.0.1"], DEBUG=False)
    namespace: dict[str, Any] = {}
    exec(framework_block("from django"), namespace)
    async with run_uvicorn(namespace["application"], lifespan="off") as server:
        check(await roundtrip(server.ws_url("")))


urlpatterns: list[Any] = []  # the Django example's ROOT_URLCONF


async def test_the_sanic_example_serves_events() -> None:
    block = framework_block("from sanic").replace('Sanic("shop")', "new_sanic_app()")
    namespace: dict[str, Any] = {"new_sanic_app": new_sanic_app}
    exec(block, namespace)
    async with sanic_server(namespace["app"]) as url:
        check(await roundtrip(url.replace("http", "ws")))


async def test_the_aiohttp_example_serves_events() -> None:
    namespace: dict[str, Any] = {}
    exec(framework_block("from aiohttp"), namespace)
    async with aiohttp_server(namespace["app"]) as url:
        check(await roundtrip(url.replace("http", "ws")))
