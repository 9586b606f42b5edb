"""Every app in docs/asgi.md runs as written: served by uvicorn, a client gets an event."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tbone.dispatch import MemoryChannel
from tests.support.asgi_server import run_uvicorn, wait_until
from tests.tbone_asgi.apps import Client, connect

DOC = Path(__file__).parent.parent.parent / "docs" / "asgi.md"


def app_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    return [b for b in blocks if "\napp = " in b]


def test_the_doc_has_its_examples() -> None:
    assert len(app_blocks()) == 7


@pytest.mark.parametrize("block", app_blocks(), ids=lambda b: b.splitlines()[0][:40])
async def test_doc_example_serves_events(block: str) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(block, str(DOC), "exec"), namespace)
    pubsub = MemoryChannel(name="pubsub")
    async with run_uvicorn(namespace["app"]) as server:
        async with connect(server.ws_url("/ws?events=resource_create")) as ws:
            client = Client(ws)
            if "ASGIWebSocketCarrier" in block:  # TBone style: subscribed by the endpoint
                await wait_until(lambda: pubsub.stats()["subscribers"] == 1)
            else:
                assert await client.sync() == []
            await pubsub.publish("resource_create", {"pk": 1})
            frame = await client.recv()
            assert frame["payload"]["name"] == "resource_create"
            assert frame["payload"]["data"] == {"pk": 1}
        if "ChannelMiddleware(site" in block:
            async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
                assert (await http.get("/")).text == "hello"
