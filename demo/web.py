"""The demo app: a REST resource whose changes every open page sees at once.

``POST /api/items`` stores an item; the store sends ``post_save``; its receiver publishes
``resource_create`` on the channel; the channel sends it to every websocket subscribed at
``/ws``; the page (``/``, using ``tbone.js``) adds the item to its list. ``DELETE
/api/items/{id}`` does the same with ``post_delete`` and ``resource_delete``.

Routes:

* ``GET /``: the page; ``/static/demo/...``: its CSS and script; ``/static/tbone/tbone.js``:
  the browser client, served from the ``tbone_asgi`` package.
* ``GET /api/items``: ``{"items": [...], "since": <id>|null}``; ``since`` is the id of the
  channel's newest event when the list was read, so a page that connects with it misses
  nothing that happened after.
* ``POST /api/items`` (JSON ``{"name", "note"?}``): 201 with the item; 400 for bad fields,
  413 for a body over 16 KiB, 415 for a body that is not JSON, 409 when the store is full.
* ``GET|DELETE /api/items/{id}``: the item / 204; 404 for an unknown id.
* ``/ws``: the subscribe endpoint, offering ``resource_create`` and ``resource_delete``.

Errors are ``{"error": {"code", "message", "field"?}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from demo.backend import channel_from_env
from demo.items import ItemError, ItemStore, StoreFull, mirror_changes, publish_changes
from demo.startup import STARTUP_TIMEOUT, CannotStart
from tbone.dispatch import Channel
from tbone.dispatch.channels import EventStream
from tbone.dispatch.timeouts import wait_at_most
from tbone_asgi import channel_route, channels_lifespan

logger = logging.getLogger("demo")

__all__ = ["EVENTS", "MAX_BODY", "create_app"]

#: The events the demo's endpoint offers (and subscribes every page to).
EVENTS = ("resource_create", "resource_delete")
#: The largest request body the API reads.
MAX_BODY = 16 * 1024

STATIC = Path(__file__).parent / "static"


class _HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        super().__init__(message)

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return JSONResponse({"error": error}, status_code=self.status)


async def _read_json(request: Request) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise _HTTPError(
            415,
            "unsupported_media_type",
            f"send JSON with Content-Type: application/json (got {content_type or 'none'!r})",
        )
    body = bytearray()
    # Read in chunks and stop at the limit: a huge body is refused before it is all in memory.
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _HTTPError(413, "too_large", f"the body is over {MAX_BODY} bytes")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise _HTTPError(400, "bad_json", f"the body is not valid JSON: {exc}") from None


async def _catch_up(
    channel: Channel,
    events: EventStream,
    follower: asyncio.Future[None],
    caught_up: asyncio.Event,
    timeout: float,
) -> None:
    """Wait until the channel's history is in the store (or the mirror ended), at most
    ``timeout`` seconds; raise :class:`CannotStart`, in one line, when it is not."""

    async def applied() -> None:
        if await events.recovered() is False:
            logger.warning("the item list may miss changes: the channel's history was trimmed")
        if not events.queued:
            caught_up.set()
        # The history is applied (or the subscription ended): now serve.
        waiting = asyncio.ensure_future(caught_up.wait())
        try:
            await asyncio.wait([waiting, follower], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()

    try:
        await wait_at_most(applied(), timeout)
    except TimeoutError:
        problem = f"its history was not read within {timeout:g}s"
    except Exception as exc:  # the history could not be read: the backend's error
        problem = f"its history could not be read ({type(exc).__name__}: {exc})"
    else:
        return
    raise CannotStart(
        f"demo cannot start: channel {channel.name!r} ({channel.backend}) is ready but "
        f"{problem}; check the backend, or raise TBONE_STARTUP_TIMEOUT"
    )


def create_app(
    channel: Channel | None = None,
    store: ItemStore | None = None,
    *,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> Starlette:
    """A demo app publishing on ``channel`` (default: from ``TBONE_CHANNEL_URL``).

    ``store``: the item store (default: a new, empty one). The app's lifespan starts the
    channel's consumer at startup and closes the channel (and its websockets) at shutdown.
    At startup it waits for the channel to read its backend, then for the channel's history
    to be in the store, each at most ``startup_timeout`` seconds; then the startup fails
    (``ChannelUnavailable``, or :class:`~demo.startup.CannotStart` for the history).
    """
    channel = channel if channel is not None else channel_from_env()
    store = store if store is not None else ItemStore()
    publish_changes(store, channel)
    # The channel's consumer starts and stops with the app (channels_lifespan), and so does the
    # mirror that keeps the store in step with other processes.

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def items(request: Request) -> Response:
        if request.method == "GET":
            # Read the newest id first: any change after it reaches a page that resumes from it.
            history = await channel.history()
            since = history.events[-1].id if history.events else None
            return JSONResponse({"items": [i.to_dict() for i in store.list()], "since": since})
        try:
            item = await store.create(await _read_json(request))
        except _HTTPError as exc:
            return exc.response()
        except ItemError as exc:
            return _HTTPError(400, "invalid", str(exc), exc.field or None).response()
        except StoreFull as exc:
            return _HTTPError(409, "store_full", str(exc)).response()
        return JSONResponse(item.to_dict(), status_code=201)

    async def item(request: Request) -> Response:
        pk = request.path_params["pk"]
        found = store.get(pk) if request.method == "GET" else await store.delete(pk)
        if found is None:
            return _HTTPError(404, "not_found", f"no item with id {pk!r}").response()
        if request.method == "GET":
            return JSONResponse(found.to_dict())
        return Response(status_code=204)

    @contextlib.asynccontextmanager
    async def mirror(app: Starlette) -> AsyncIterator[None]:
        # Other processes' changes (a shared backend) reach this store: the history the
        # channel holds is in the subscription before the app serves, live changes follow.
        # Room for a whole default history (10,000 events) at once.
        async with channel.subscription(
            *EVENTS, history=True, max_messages=20_000, max_bytes=64 << 20
        ) as events:
            caught_up = asyncio.Event()
            follower = asyncio.ensure_future(mirror_changes(store, events, caught_up))
            try:
                await _catch_up(channel, events, follower, caught_up, startup_timeout)
                yield
            finally:
                follower.cancel()
                await asyncio.wait([follower])

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/items", items, methods=["GET", "POST"]),
            Route("/api/items/{pk}", item, methods=["GET", "DELETE"]),
            channel_route("/ws", channel, events=list(EVENTS)),
            Mount("/static/tbone", StaticFiles(packages=[("tbone_asgi", "static")])),
            Mount("/static/demo", StaticFiles(directory=STATIC)),
        ],
        lifespan=channels_lifespan(channel, lifespan=mirror, ready_timeout=startup_timeout),
    )
    app.state.channel = channel
    app.state.store = store
    return app
