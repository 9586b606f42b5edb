"""The demo's REST resource over a real uvicorn: changes become events, bad input is explained."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from demo import create_app
from demo.items import Item, ItemStore, post_delete, post_save
from tbone.dispatch import MemoryChannel
from tbone_asgi.client import subscribe
from tests.demo.restartable import RestartableServer
from tests.demo.waiting import ready, take
from tests.support.asgi_server import wait_until


@pytest.fixture
async def channel() -> MemoryChannel:
    return MemoryChannel(name="demo-api")


@pytest.fixture
async def store() -> ItemStore:
    return ItemStore(limit=3)


@pytest.fixture
async def server(channel: MemoryChannel, store: ItemStore) -> AsyncIterator[RestartableServer]:
    async with RestartableServer(create_app(channel, store)) as running:
        yield running


@pytest.fixture
async def http(server: RestartableServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


async def test_changes_reach_subscribers_as_events(
    server: RestartableServer, http: httpx.AsyncClient
) -> None:
    # No events named: the route subscribes every client to the demo's two events.
    async with subscribe(server.ws_url("/ws")) as sub:
        await ready(sub)
        created = await http.post("/api/items", json={"name": " Milk ", "note": "2 l"})
        assert created.status_code == 201
        item = created.json()
        assert item["name"] == "Milk"  # trimmed
        assert item["note"] == "2 l"
        assert (await http.get(f"/api/items/{item['id']}")).json() == item

        deleted = await http.delete(f"/api/items/{item['id']}")
        assert deleted.status_code == 204
        events = await take(sub, 2)
    assert [(e.name, e.data) for e in events] == [
        ("resource_create", item),
        ("resource_delete", {"id": item["id"], "name": "Milk"}),
    ]
    assert (await http.delete(f"/api/items/{item['id']}")).status_code == 404
    assert (await http.get("/api/items")).json()["items"] == []


async def test_the_list_comes_with_the_newest_event_id(
    http: httpx.AsyncClient, channel: MemoryChannel
) -> None:
    empty = (await http.get("/api/items")).json()
    assert empty == {"items": [], "since": None}
    first = (await http.post("/api/items", json={"name": "a"})).json()
    second = (await http.post("/api/items", json={"name": "b"})).json()
    listing = (await http.get("/api/items")).json()
    assert listing["items"] == [first, second]
    history = await channel.history()
    assert listing["since"] == history.events[-1].id
    assert history.events[-1].data == second


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "field"),
    [
        ({"content": b"name=x", "headers": {"content-type": "text/plain"}}, 415, None, None),
        ({"content": b"{oops", "headers": {"content-type": "application/json"}}, 400, None, None),
        ({"json": ["name"]}, 400, "invalid", None),
        ({"json": {"nam": "typo"}}, 400, "invalid", "nam"),
        ({"json": {"name": "   "}}, 400, "invalid", "name"),
        ({"json": {"name": 5}}, 400, "invalid", "name"),
        ({"json": {"name": "x" * 81}}, 400, "invalid", "name"),
        ({"json": {"name": "x", "note": ["no"]}}, 400, "invalid", "note"),
        ({"json": {"name": "x", "note": "n" * 201}}, 400, "invalid", "note"),
        ({"json": {"name": "x" * 20_000}}, 413, "too_large", None),
    ],
)
async def test_bad_input_is_refused_with_a_reason_and_nothing_changes(
    http: httpx.AsyncClient,
    channel: MemoryChannel,
    kwargs: dict[str, Any],
    status: int,
    code: str | None,
    field: str | None,
) -> None:
    response = await http.post("/api/items", **kwargs)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    assert error.get("field") == field
    assert (await http.get("/api/items")).json()["items"] == []
    assert channel.stats()["published"] == 0


async def test_a_full_store_says_so(http: httpx.AsyncClient) -> None:
    for n in range(3):
        assert (await http.post("/api/items", json={"name": f"n{n}"})).status_code == 201
    full = await http.post("/api/items", json={"name": "one too many"})
    assert full.status_code == 409
    assert "delete some" in full.json()["error"]["message"]
    assert (await http.get("/api/items/nope")).status_code == 404


async def test_the_store_signals_its_changes() -> None:
    store = ItemStore()
    saved: list[tuple[Any, Item, bool]] = []
    removed: list[Item] = []

    def on_save(sender: Any, instance: Item, created: bool, **_: Any) -> None:
        saved.append((sender, instance, created))

    def on_delete(sender: Any, instance: Item, **_: Any) -> None:
        removed.append(instance)

    with post_save.connected_to(on_save, sender=store), post_delete.connected_to(on_delete):
        item = await store.create({"name": "x"})
        assert await store.delete(item.id) == item
        assert await store.delete(item.id) is None  # nothing to remove: no signal
    assert saved == [(store, item, True)]
    assert removed == [item]


async def test_two_apps_publish_only_their_own_items() -> None:
    first, second = MemoryChannel(name="demo-one"), MemoryChannel(name="demo-two")
    one, two = ItemStore(), ItemStore()
    create_app(first, one)
    create_app(second, two)
    await one.create({"name": "only in one"})
    assert [e.data["name"] for e in await first.history()] == ["only in one"]
    assert len(await second.history()) == 0


async def test_the_store_catches_up_with_the_history_at_startup() -> None:
    # Changes another process made before this one started are in the channel's history: the
    # mirror applies them before the app serves, then follows live ones.
    channel = MemoryChannel(name="demo-catch-up")
    made_elsewhere = {"id": "other-1", "name": "Bread", "note": "", "created": 1.0}
    await channel.publish("resource_create", made_elsewhere)
    await channel.publish("resource_create", {**made_elsewhere, "id": "other-2", "name": "Tea"})
    await channel.publish("resource_delete", {"id": "other-2", "name": "Tea"})
    store = ItemStore()
    async with (
        RestartableServer(create_app(channel, store)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        listing = (await http.get("/api/items")).json()
        assert [item["id"] for item in listing["items"]] == ["other-1"]
        await channel.publish("resource_create", {**made_elsewhere, "id": "other-3"})
        await wait_until(lambda: store.get("other-3") is not None, what="a live change applied")
