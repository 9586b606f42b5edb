"""Security defaults over a real uvicorn: Origin check, authorize hook, logs, names, no publish.

Every test drives the endpoint with a real ``websockets`` client, as a browser or a script
would. The recipes tested here (session cookie, bearer token) are the ones in
``docs/security.md``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from websockets.exceptions import InvalidStatus

from tbone.dispatch import MemoryChannel, jsonenc
from tbone.dispatch import refusals as refusal_log
from tbone_asgi import channel_route
from tests.support.asgi_server import RunningServer, run_uvicorn
from tests.support.web_servers import ws_connect

SECRET_COOKIE = "s3ss10n-" + secrets.token_hex(8)
SECRET_TOKEN = "t0k3n-" + secrets.token_hex(8)


async def _serve(**route_options: Any) -> Any:
    app = Starlette(routes=[channel_route("/ws/{room}", "sec", **route_options)])
    return run_uvicorn(app)


@pytest.fixture
async def default_server() -> AsyncIterator[RunningServer]:
    async with await _serve() as server:
        yield server


async def _status_of_refused(url: str, **connect: Any) -> tuple[int, bytes]:
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(url, **connect):
            pass
    return info.value.response.status_code, info.value.response.body or b""


async def _roundtrip(ws: Any, frame: dict[str, Any]) -> Any:
    await ws.send(jsonenc.dumps(frame))
    return jsonenc.loads(await asyncio.wait_for(ws.recv(), 5))


# -- Origin ------------------------------------------------------------------------------------


async def test_forged_origin_is_refused_by_default(default_server: RunningServer) -> None:
    url = default_server.ws_url("/ws/lobby?events=a")
    status, _ = await _status_of_refused(url, origin="https://evil.example")
    assert status == 403
    # Same site as the Host header: allowed. No Origin at all (not a browser): allowed.
    host = f"http://127.0.0.1:{default_server.port}"
    for origin in (host, None):
        async with ws_connect(url, origin=origin) as ws:
            assert await _roundtrip(ws, {"type": "ping"}) == {"type": "pong"}
    # A look-alike host with the right port is not the same site.
    status, _ = await _status_of_refused(url, origin=f"http://127.0.0.1.evil:{default_server.port}")
    assert status == 403


async def test_allow_list() -> None:
    async with await _serve(allowed_origins=["https://app.example"]) as server:
        url = server.ws_url("/ws/lobby?events=a")
        async with ws_connect(url, origin="https://APP.example:443") as ws:
            assert await _roundtrip(ws, {"type": "ping"}) == {"type": "pong"}
        for forged in ("https://app.example.evil", "http://app.example", "null"):
            status, _ = await _status_of_refused(url, origin=forged)
            assert status == 403, forged
        # With an allow-list, even the server's own origin must be listed.
        status, _ = await _status_of_refused(url, origin=f"http://127.0.0.1:{server.port}")
        assert status == 403


# -- authorize ---------------------------------------------------------------------------------


async def test_authorize_sees_the_connection_and_the_event() -> None:
    seen: list[dict[str, Any]] = []

    def authorize(connection: HTTPConnection, event: str) -> bool:
        seen.append(
            {
                "event": event,
                "header": connection.headers.get("x-client"),
                "cookie": connection.cookies.get("session"),
                "query": connection.query_params.get("mode"),
                "room": connection.path_params.get("room"),
            }
        )
        return event.startswith(f"{connection.path_params['room']}.")

    async with await _serve(authorize=authorize) as server:
        url = server.ws_url("/ws/kitchen?events=kitchen.news&mode=quiet")
        headers = {"X-Client": "tests", "Cookie": "session=abc"}
        async with ws_connect(url, additional_headers=headers) as ws:
            refused = await _roundtrip(
                ws, {"type": "subscribe", "payload": {"events": ["garage.news"]}}
            )
            # Refused in-band: an error frame, and the connection stays usable.
            assert refused["type"] == "error"
            assert refused["payload"]["code"] == "forbidden"
            assert await _roundtrip(ws, {"type": "ping"}) == {"type": "pong"}
    assert seen[0] == {
        "event": "kitchen.news",
        "header": "tests",
        "cookie": "abc",
        "query": "quiet",
        "room": "kitchen",
    }
    assert [s["event"] for s in seen] == ["kitchen.news", "garage.news"]


async def test_refusals_are_logged_and_answered_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def authorize(connection: HTTPConnection, event: str) -> bool:
        return False

    caplog.set_level(logging.DEBUG, logger="tbone_asgi")
    caplog.set_level(logging.DEBUG, logger="tbone.dispatch")
    refusal_log.forget()
    bodies = []
    async with await _serve(authorize=authorize) as server:
        url = server.ws_url(f"/ws/lobby?events=a&token={SECRET_TOKEN}")
        headers = {"Cookie": f"session={SECRET_COOKIE}", "Authorization": f"Bearer {SECRET_TOKEN}"}
        status, body = await _status_of_refused(url, additional_headers=headers)
        assert status == 403
        bodies.append(body.decode())
        status, body = await _status_of_refused(
            url, additional_headers=headers, origin="https://evil.example"
        )
        assert status == 403
        bodies.append(body.decode())
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2, caplog.text
    # Two kinds (forbidden, forbidden_origin): the first of each kind is a warning.
    assert {r.levelno for r in refusals} == {logging.WARNING}
    assert bodies[0].startswith("websocket refused: forbidden: subscribing to 'a' is not allowed")
    assert bodies[1].startswith("websocket refused: forbidden_origin: ")
    for text in (caplog.text, *bodies):
        assert SECRET_COOKIE not in text
        assert SECRET_TOKEN not in text


async def test_a_failing_authorize_refuses(caplog: pytest.LogCaptureFixture) -> None:
    def authorize(connection: HTTPConnection, event: str) -> bool:
        raise KeyError(connection.cookies["session"])  # a bug: missing cookie

    async with await _serve(authorize=authorize) as server:
        status, _ = await _status_of_refused(server.ws_url("/ws/lobby?events=a"))
    assert status == 403
    assert "authorize('a') failed; refusing" in caplog.text


# -- recipes (docs/security.md) ----------------------------------------------------------------

SESSIONS = {"good-session-id": {"user": "ada", "rooms": {"lobby"}}}
TOKENS = {"good-token": {"user": "bob", "rooms": {"lobby"}}}
DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def _recipes() -> dict[str, Any]:
    """The Python blocks of docs/security.md, run with stand-ins for the app's own lookups."""
    found = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    # The dev-origin recipe runs in tests/tbone_asgi/test_refusals.py.
    blocks = [b for b in found if "_authorize(connection, event)" in b]
    assert len(blocks) == 2, "docs/security.md should hold the two recipes"
    namespace: dict[str, Any] = {"load_session": SESSIONS.get, "verify_token": TOKENS.get}
    for block in blocks:
        exec(block, namespace)
    return namespace


RECIPES = _recipes()
session_cookie_authorize = RECIPES["session_cookie_authorize"]
bearer_token_authorize = RECIPES["bearer_token_authorize"]


async def test_session_cookie_recipe() -> None:
    async with await _serve(authorize=session_cookie_authorize) as server:
        url = server.ws_url("/ws/lobby?events=chat")
        async with ws_connect(url, additional_headers={"Cookie": "session=good-session-id"}) as ws:
            assert await _roundtrip(ws, {"type": "ping"}) == {"type": "pong"}
        for cookie in ("session=forged", None):
            headers = {"Cookie": cookie} if cookie else {}
            status, _ = await _status_of_refused(url, additional_headers=headers)
            assert status == 403
        other_room = server.ws_url("/ws/vault?events=chat")
        status, _ = await _status_of_refused(
            other_room, additional_headers={"Cookie": "session=good-session-id"}
        )
        assert status == 403


async def test_bearer_token_recipe() -> None:
    async with await _serve(authorize=bearer_token_authorize) as server:
        url = server.ws_url("/ws/lobby?events=chat")
        async with ws_connect(url, additional_headers={"Authorization": "Bearer good-token"}) as ws:
            assert await _roundtrip(ws, {"type": "ping"}) == {"type": "pong"}
        async with ws_connect(url + "&token=good-token") as ws:
            assert await _roundtrip(ws, {"type": "ping"}) == {"type": "pong"}
        for headers, suffix in (({"Authorization": "Bearer bad"}, ""), ({}, "&token=bad")):
            status, _ = await _status_of_refused(url + suffix, additional_headers=headers)
            assert status == 403


# -- event names and client data -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["", "a b", "x" * 201, "caf\u00e9", "a/b", "<script>", 7, None, ["a"], {"a": 1}],
)
async def test_event_names_are_validated(default_server: RunningServer, name: Any) -> None:
    async with ws_connect(default_server.ws_url("/ws/lobby")) as ws:
        answer = await _roundtrip(ws, {"type": "subscribe", "payload": {"events": [name]}})
        assert answer["type"] == "error"
        assert answer["payload"]["code"] == "bad_event"
        # The message quotes at most a clipped repr of what was sent.
        assert len(answer["payload"]["message"]) < 200
        assert await _roundtrip(ws, {"type": "ping"}) == {"type": "pong"}


async def test_bad_event_name_at_connect_is_refused(
    default_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tbone_asgi")
    status, _ = await _status_of_refused(default_server.ws_url("/ws/lobby?events=a%20b"))
    assert status == 403
    # The reason goes to the server's log (the handshake answer carries no body).
    assert "event names are" in caplog.text


async def test_clients_cannot_publish(default_server: RunningServer) -> None:
    channel = MemoryChannel(name="sec")
    async with (
        ws_connect(default_server.ws_url("/ws/lobby?events=chat")) as listener,
        ws_connect(default_server.ws_url("/ws/lobby?events=chat")) as talker,
    ):
        for frame in (
            {"type": "publish", "payload": {"name": "chat", "data": "spoofed"}},
            {"type": "event", "payload": {"name": "chat", "data": "spoofed"}},
            {"type": "subscribe", "payload": {"events": ["chat"], "data": "spoofed"}},
        ):
            await talker.send(jsonenc.dumps(frame))
        # A ping after them: every answer before the pong belongs to those frames.
        await talker.send('{"type":"ping"}')
        answers = []
        while (answer := jsonenc.loads(await asyncio.wait_for(talker.recv(), 5))) != {
            "type": "pong"
        }:
            answers.append(answer)
        assert [a["payload"]["code"] for a in answers] == ["unknown_type", "unknown_type"]
        await channel.publish("chat", "from the server")
        # The listener's first event is the server's: nothing a client sent got through.
        first = jsonenc.loads(await listener.recv())
        assert first["payload"]["data"] == "from the server"
        assert channel.stats()["published"] == 1
