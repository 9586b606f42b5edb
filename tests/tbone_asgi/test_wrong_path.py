"""A websocket to a path that serves none: what each stack answers, on real servers.

ASGI answers 403 (Starlette's router closes before the accept; ChannelMiddleware does the
same in front of an app that serves no websockets, such as Django), aiohttp and Sanic answer
404 (their routers). None of them logs a traceback for it. docs/client.md and docs/asgi.md
list the same answers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
import websockets
from aiohttp import web
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tbone.dispatch import refusals
from tbone.dispatch.carriers.aiohttp_websocket import add_route as aiohttp_add_route
from tbone.dispatch.carriers.sanic_websocket import add_route as sanic_add_route
from tbone_asgi import ChannelMiddleware, NotFoundApp, channel_route, not_found_route
from tests.support.asgi_server import run_uvicorn
from tests.support.web_servers import (
    aiohttp_server,
    assert_no_tracebacks,
    new_sanic_app,
    sanic_server,
)
from tests.tbone_asgi.apps import Client, connect


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    # INFO: ChannelMiddleware's note is checked too. The servers below run with
    # log_config=None, so uvicorn's "Exception in ASGI application" reaches this handler.
    caplog.set_level(logging.INFO)
    return caplog


async def status_of(url: str) -> int:
    """The HTTP status a websocket handshake to ``url`` is refused with."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(url):
            pass
    return refused.value.response.status_code


async def body_of(url: str) -> str:
    """The text body of the 403 a websocket handshake to ``url`` is refused with."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(url):
            pass
    return bytes(refused.value.response.body or b"").decode()


async def serves_events(url: str) -> None:
    async with connect(url + "?events=a") as ws:
        assert await Client(ws).sync() == []


async def test_starlette_answers_403(caplog: pytest.LogCaptureFixture) -> None:
    app = Starlette(routes=[channel_route("/ws", "wrong-path")])
    async with run_uvicorn(app, log_config=None) as server:
        assert await status_of(server.ws_url("/nope")) == 403
        await serves_events(server.ws_url("/ws"))
    assert_no_tracebacks(caplog)
    # The router refused it: a bare 403, no refusal logged (not_found_route says why).
    assert not [r for r in caplog.records if "refused websocket" in r.getMessage()]


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
async def test_not_found_route_says_why_in_the_body_and_the_log(
    framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    refusals.forget()
    if framework == "starlette":
        app: Any = Starlette(
            routes=[
                Route("/page", lambda request: PlainTextResponse("page")),
                channel_route("/ws", "wrong-path"),
                not_found_route("/ws"),
            ]
        )
    else:
        app = FastAPI()
        app.get("/page", response_class=PlainTextResponse)(lambda: "page")
        app.router.routes.append(channel_route("/ws", "wrong-path"))
        app.router.routes.append(not_found_route("/ws"))
    async with run_uvicorn(app, log_config=None) as server:
        for path in ("/nope", "/nope", "/"):
            assert await body_of(server.ws_url(path)) == (
                f"websocket refused: no websocket route matches {path!r}; "
                "this app serves websockets at '/ws'\n"
            )
        await serves_events(server.ws_url("/ws"))  # routes before it still serve
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/page")).text == "page"  # HTTP is routed as before
            assert (await http.get("/nope")).status_code == 404
    assert_no_tracebacks(caplog)
    notes = [r for r in caplog.records if "refused websocket" in r.getMessage()]
    assert {r.name for r in notes} == {"tbone_asgi"}
    # One WARNING, which a server's default logging shows, then INFO: a scanner probing
    # paths cannot flood the log.
    assert [r.levelno for r in notes] == [logging.WARNING, logging.INFO, logging.INFO], notes
    assert (
        notes[0]
        .getMessage()
        .startswith(
            "refused websocket /nope: not_found: no websocket route matches '/nope'; this app "
            "serves websockets at '/ws'. Fix: check the client's URL"
        )
    ), notes[0].getMessage()


def test_not_found_route_checks_its_paths_and_answers_websockets_only() -> None:
    with pytest.raises(TypeError, match="as strings"):
        not_found_route(b"/ws")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must start with '/'"):
        not_found_route("ws")
    route = not_found_route()
    assert route.path == "/{path:path}"

    async def never(*_: Any) -> Any:
        raise AssertionError("not called")

    with pytest.raises(TypeError, match="websockets only, not 'http'"):
        asyncio.run(NotFoundApp()({"type": "http", "path": "/"}, never, never))


def django_application() -> Any:
    from django.conf import settings

    if not settings.configured:
        settings.configure(ALLOWED_HOSTS=["127.0.0.1"], ROOT_URLCONF=__name__)
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


urlpatterns: list[Any] = []  # Django's ROOT_URLCONF above


async def no_websockets(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app that refuses every scope but HTTP, as Django's handler does."""
    if scope["type"] != "http":
        raise ValueError(f"only HTTP here, not {scope['type']}")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"page"})


@pytest.mark.parametrize("kind", ["django", "http-only app"])
async def test_channel_middleware_answers_403_for_an_app_without_websockets(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    inner = django_application() if kind == "django" else no_websockets
    app = ChannelMiddleware(inner, path="/ws", channel="wrong-path")
    # Django answers no lifespan scope; uvicorn's "auto" would log that it is unsupported.
    async with run_uvicorn(app, lifespan="off", log_config=None) as server:
        assert await status_of(server.ws_url("/nope")) == 403
        assert await status_of(server.ws_url("/other/path")) == 403
        assert await body_of(server.ws_url("/nope")) == (
            "websocket refused: no websocket endpoint at '/nope'; this app serves websockets "
            "at '/ws' only\n"
        )
        await serves_events(server.ws_url("/ws"))
    assert_no_tracebacks(caplog)
    notes = [r for r in caplog.records if r.name == "tbone_asgi"]
    assert len(notes) == 1, notes  # said once, not per connection
    assert notes[0].levelno == logging.WARNING  # shown by a server's default logging
    assert "websocket at '/nope' refused with 403" in notes[0].getMessage()
    assert "serves no websockets" in notes[0].getMessage()


async def test_channel_middleware_leaves_an_apps_own_websocket_error_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken_websockets(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # it does serve websockets: what fails next is its own bug
        raise RuntimeError("bug in the app's websocket handler")

    app = ChannelMiddleware(broken_websockets, path="/ws", channel="wrong-path")
    async with run_uvicorn(app, lifespan="off", log_config=None) as server:
        assert await status_of(server.ws_url("/other")) == 500
    assert "bug in the app's websocket handler" in caplog.text
    assert not [r for r in caplog.records if r.name == "tbone_asgi"]


async def test_aiohttp_answers_404(caplog: pytest.LogCaptureFixture) -> None:
    app = web.Application()
    aiohttp_add_route(app, "/ws", "wrong-path")
    async with aiohttp_server(app) as url:
        assert await status_of(url.replace("http", "ws") + "/nope") == 404
        await serves_events(url.replace("http", "ws") + "/ws")
    assert_no_tracebacks(caplog)


async def test_sanic_answers_404(caplog: pytest.LogCaptureFixture) -> None:
    app = new_sanic_app()
    sanic_add_route(app, "/ws", "wrong-path")
    async with sanic_server(app) as url:
        assert await status_of(url.replace("http", "ws") + "/nope") == 404
        await serves_events(url.replace("http", "ws") + "/ws")
    assert_no_tracebacks(caplog)
