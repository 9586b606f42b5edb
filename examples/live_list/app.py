"""A FastAPI app whose page shows a to-do list that updates live in every open window.

Run it from this folder (``pip install 'tbone-asgi[asgi]' fastapi 'uvicorn[standard]'``)::

    uvicorn app:app

then open http://127.0.0.1:8000 in two windows. ``POST /api/todos`` stores a to-do and
publishes ``todo_added`` on the channel ``todos``; every page subscribed at ``/ws`` adds it to
its list. ``GET /api/todos`` returns the list with ``since``, the id of the newest event when
the list was read: the page connects with it, so nothing made in between is missed, and after
a dropped connection it resumes from the last event it saw.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from tbone.dispatch import MemoryChannel
from tbone_asgi import channel_route, channels_lifespan, health_route

HERE = Path(__file__).parent

app = FastAPI(lifespan=channels_lifespan("todos"))
app.router.routes += [
    # The websocket endpoint: pages subscribe to todo_added (the only event it offers).
    channel_route("/ws", "todos", events=["todo_added"]),
    # tbone.js, the browser client, from the installed package.
    Mount("/static/tbone", StaticFiles(packages=[("tbone_asgi", "static")])),
    # 200 while the channel reads its backend: for a load balancer.
    health_route("/healthz"),
]

todos: list[dict[str, Any]] = []
newest_id: str | None = None  # the id of the newest todo_added event
ids = itertools.count(1)


class NewTodo(BaseModel):
    text: str = Field(min_length=1, max_length=200)


@app.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(HERE / "index.html")


@app.get("/api/todos")
async def list_todos() -> dict[str, Any]:
    return {"todos": todos, "since": newest_id}


@app.post("/api/todos", status_code=201)
async def add_todo(new: NewTodo) -> dict[str, Any]:
    global newest_id
    todo = {"id": next(ids), "text": new.text}
    todos.append(todo)
    event = await MemoryChannel(name="todos").publish("todo_added", todo)
    newest_id = event.id
    return todo
