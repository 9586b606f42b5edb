"""Why was I refused? The client and the server's default log both say, on real servers.

A refused handshake is HTTP 403. On uvicorn 0.55+ (every websocket implementation) the 403
carries the reason and the fix as text (ASGI ``websocket.http.response``); under plain
``uvicorn app:app`` (its default logging, nothing configured) the log shows one WARNING line
per kind of refusal, naming the ``tbone_asgi`` logger.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import websockets
from starlette.applications import Starlette
from websockets.exceptions import InvalidStatus

from tbone.dispatch import MemoryChannel
from tbone.dispatch import refusals as refusal_log
from tbone_asgi import channel_route
from tbone_asgi.client import SubscriptionRefused, subscribe
from tests.demo.waiting import take
from tests.support.asgi_server import run_uvicorn

SECURITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
DEV_ORIGIN = "http://localhost:5173"  # a front-end dev server (Vite's default)


async def refused_body(url: str, origin: str | None = None) -> str:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, origin=origin, proxy=None):  # type: ignore[arg-type]
            pass
    response = info.value.response
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    return bytes(response.body or b"").decode()


@pytest.mark.parametrize(
    "ws", ["websockets-sansio", "wsproto", "tbone_asgi.uvicorn:WebSocketProtocol"]
)
async def test_the_403_says_why_and_what_to_do(ws: str) -> None:
    channel = MemoryChannel(name=f"refusals-{ws}")
    app = Starlette(routes=[channel_route("/ws", channel, events=["a"])])
    async with run_uvicorn(app, ws=ws) as server:
        body = await refused_body(server.ws_url("/ws?events=a"), origin=DEV_ORIGIN)
        assert body.startswith(
            f"websocket refused: forbidden_origin: origin '{DEV_ORIGIN}' is not allowed\n"
        )
        assert f"allowed_origins=['{DEV_ORIGIN}']" in body
        body = await refused_body(server.ws_url("/ws?events=b"))
        assert body.startswith("websocket refused: not_offered: ")
        assert "events=[...]" in body
        # The Python client reports the server's words.
        async with subscribe(server.ws_url("/ws"), ["b"], retries=0) as sub:
            with pytest.raises(SubscriptionRefused) as info:
                await take(sub, 1)
        assert info.value.status == 403
        assert "it says: websocket refused: not_offered" in str(info.value)


async def test_the_dev_origin_recipe_lets_the_dev_server_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # docs/security.md, "Allowed origins in development", as written.
    doc = SECURITY_DOC.read_text()
    [recipe] = [b for b in re.findall(r"```python\n(.*?)```", doc, flags=re.S) if DEV_ORIGIN in b]
    monkeypatch.setenv("APP_ENV", "development")
    namespace: dict[str, Any] = {"channel_route": channel_route}
    exec(recipe, namespace)
    MemoryChannel(name="pubsub")
    async with run_uvicorn(Starlette(routes=[namespace["route"]])) as server:
        url = server.ws_url("/ws?events=a")
        async with websockets.connect(url, origin=DEV_ORIGIN, proxy=None) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
        # Another origin is still refused.
        assert "forbidden_origin" in await refused_body(url, origin="http://localhost:3000")


APP = """
from starlette.applications import Starlette
from tbone_asgi import channel_route, channels_lifespan

app = Starlette(
    routes=[channel_route("/ws", "pubsub", events=["item_create"])],
    lifespan=channels_lifespan("pubsub"),
)
"""


async def test_plain_uvicorn_logs_one_warning_per_kind_with_the_logger(tmp_path: Path) -> None:
    refusal_log.forget()
    (tmp_path / "app.py").write_text(APP)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "uvicorn"),
        "app:app",
        "--fd",
        str(sock.fileno()),
        cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=(sock.fileno(),),
    )
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
    sock.close()
    try:
        for _ in range(3):
            await refused_body(f"{url}?events=item_create", origin=DEV_ORIGIN)
        await refused_body(f"{url}?events=other")
        await refused_body(f"{url}?events=other")
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    lines = err.decode().splitlines()
    warnings = [line for line in lines if "refused websocket" in line]
    assert len(warnings) == 2, lines  # the three others at INFO, which uvicorn does not show
    origin, offered = warnings
    assert origin.startswith(
        "WARNING:  tbone_asgi: refused websocket /ws: forbidden_origin: "
        f"origin '{DEV_ORIGIN}' is not allowed. Fix: "
    )
    assert offered.startswith("WARNING:  tbone_asgi: refused websocket /ws: not_offered: ")
    # Every line names its level: nothing printed bare by Python's last-resort handler.
    assert all(line.split(":")[0] in {"INFO", "WARNING"} for line in lines), lines
    assert sum('"WebSocket /ws?events=' in line and " 403" in line for line in lines) == 5
