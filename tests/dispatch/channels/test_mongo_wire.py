"""MongoChannel at the wire: the real driver (PyMongo async and Motor) against a scripted server.

Each test plays the server: it receives the exact commands the channel sends and answers
them, so the commands themselves (create, insert, find with tailable/awaitData, getMore) and
the channel's answers to cursor death, hang-ups and roll-over are what is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bson import ObjectId
from pymongo.errors import OperationFailure

from tbone.dispatch import close_all_channels, jsonenc
from tbone.dispatch.channels.mongo import CollectionNotCapped, MongoChannel
from tbone.dispatch.testing import RecordingCarrier
from tests.support.asgi_server import wait_until
from tests.support.mongo import DRIVERS, ScriptedMongo, connect, reply_cursor

COLLECTION = "tbone_channel_feed"


@pytest.fixture
def mongo() -> Any:
    server = ScriptedMongo().start()
    yield server
    server.stop()


@pytest.fixture(params=DRIVERS)
async def db(request: pytest.FixtureRequest, mongo: ScriptedMongo) -> AsyncIterator[Any]:
    async with connect(request.param, mongo.uri) as client:
        yield client["app"]
        await close_all_channels()  # before the client closes: the consumer kills its cursor


def channel_of(db: Any, **options: Any) -> MongoChannel:
    options = {"await_time": 0.05, "backoff": (0.01, 0.02), **options}
    return MongoChannel(name="feed", db=db, **options)


def doc(key: str, data: Any, oid: ObjectId | None = None) -> dict[str, Any]:
    """A document as a MongoChannel writes it."""
    return {"_id": oid or ObjectId(), "key": key, "data": jsonenc.dumps(data), "v": 1, "ts": None}


def payloads(carrier: RecordingCarrier) -> list[tuple[str, Any, str]]:
    return [
        (f["payload"]["name"], f["payload"]["data"], f["payload"]["id"])
        for f in carrier.frames
        if f["type"] == "event"
    ]


async def created(mongo: ScriptedMongo) -> None:
    request = await mongo.receive("create")
    request.ok()


async def start_tailing(
    mongo: ScriptedMongo, newest: ObjectId, batch: list[dict[str, Any]], cursor_id: int = 42
) -> None:
    """Script a consumer's start: create, the newest document, the tailable find, locate."""
    await created(mongo)
    reply_cursor(await mongo.receive("find"), [{"_id": newest}])
    reply_cursor(await mongo.receive("find"), batch, cursor_id)
    if batch[0]["_id"] != newest:
        locate = await mongo.receive("find")
        reply_cursor(locate, [{"_id": i} for i in locate.doc["filter"]["_id"]["$in"]])


async def test_publish_creates_the_capped_collection_once_then_inserts(
    mongo: ScriptedMongo, db: Any
) -> None:
    channel = channel_of(db, capacity=500, size=65536)
    publishing = asyncio.ensure_future(channel.publish("resource_create", {"pk": 1, "é": [1.5]}))
    create = await mongo.receive("create")
    assert create.doc["create"] == COLLECTION
    assert (create.doc["capped"], create.doc["size"], create.doc["max"]) == (True, 65536, 500)
    assert create.doc["$db"] == "app"
    create.ok()
    insert = await mongo.receive("insert")
    assert insert.doc["insert"] == COLLECTION
    [stored] = insert.doc["documents"]
    assert set(stored) == {"_id", "key", "data", "v", "ts"}
    assert stored["v"] == 1  # data is the channel's own JSON text: spliced into frames as is
    assert (stored["key"], jsonenc.loads(stored["data"])) == (
        "resource_create",
        {"pk": 1, "é": [1.5]},
    )
    insert.ok(n=1)
    event = await asyncio.wait_for(publishing, 5)
    assert (event.name, event.data, event.id) == (
        "resource_create",
        {"pk": 1, "é": [1.5]},
        str(stored["_id"]),
    )
    assert event.channel == "feed"
    # The collection is known now: the next publish is one insert, nothing else.
    mongo.auto("insert", lambda r: r.ok(n=1))
    await asyncio.wait_for(channel.publish("resource_create", {"pk": 2}), 5)
    assert [next(iter(r)) for r in mongo.requests] == ["create", "insert", "insert"]
    assert channel.stats()["published"] == 2
    assert channel.stats()["consumer"] == "idle"  # publishing needs no subscriber


async def test_many_racing_publishers_send_one_create(mongo: ScriptedMongo, db: Any) -> None:
    channel = channel_of(db)
    mongo.auto("insert", lambda r: r.ok(n=1))
    publishing = asyncio.gather(*(channel.publish("e", i) for i in range(20)))
    (await mongo.receive("create")).ok()
    events = await asyncio.wait_for(publishing, 5)
    assert len(mongo.commands("create")) == 1
    inserted = [c["documents"][0] for c in mongo.commands("insert")]
    assert sorted(jsonenc.loads(d["data"]) for d in inserted) == list(range(20))
    assert {str(d["_id"]) for d in inserted} == {e.id for e in events}


async def test_another_process_created_the_collection_first(mongo: ScriptedMongo, db: Any) -> None:
    channel = channel_of(db)
    publishing = asyncio.ensure_future(channel.publish("e", 1))
    (await mongo.receive("create")).command_err(code=48, errmsg="Collection already exists")
    listing = await mongo.receive("listCollections")
    assert listing.doc["filter"] == {"name": COLLECTION}
    reply_cursor(
        listing,
        [{"name": COLLECTION, "type": "collection", "options": {"capped": True, "size": 4096}}],
    )
    (await mongo.receive("insert")).ok(n=1)
    assert (await asyncio.wait_for(publishing, 5)).data == 1


async def test_a_collection_that_is_not_capped_is_a_clear_error(
    mongo: ScriptedMongo, db: Any
) -> None:
    channel = channel_of(db)
    mongo.auto("create", lambda r: r.command_err(code=48, errmsg="Collection already exists"))
    mongo.auto(
        "listCollections",
        lambda r: reply_cursor(r, [{"name": COLLECTION, "type": "collection", "options": {}}]),
    )
    with pytest.raises(CollectionNotCapped, match="is not capped") as info:
        await asyncio.wait_for(channel.publish("e", 1), 5)
    assert (info.value.database, info.value.collection) == ("app", COLLECTION)
    assert "prefix=" in str(info.value)
    assert mongo.commands("insert") == []  # nothing written to the wrong collection
    # The consumer reports the same error and keeps retrying (someone may fix it).
    channel.subscribe("e", RecordingCarrier())
    await mongo.wait_count("listCollections", 3)  # publish's, then two consumer attempts
    stats = channel.stats()
    assert stats["errors"] >= 1
    assert stats["consumer"] == "reconnecting"
    assert stats["last_error"].startswith("CollectionNotCapped")


async def test_the_consumer_tails_from_now_with_a_tailable_await_cursor(
    mongo: ScriptedMongo, db: Any
) -> None:
    channel = channel_of(db, await_time=0.25)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    old, newest = doc("e", "old"), doc("e", "newest")
    await created(mongo)
    find_newest = await mongo.receive("find")
    # A reverse collection scan by hint, which servers that ignore a $natural sort honour too.
    assert find_newest.doc["hint"] == {"$natural": -1}
    assert "sort" not in find_newest.doc
    assert find_newest.doc["projection"] == {"_id": 1}
    assert find_newest.doc["limit"] == 1
    reply_cursor(find_newest, [{"_id": newest["_id"]}])
    tail = await mongo.receive("find")
    assert tail.doc["find"] == COLLECTION
    assert tail.doc["filter"] == {}
    assert (tail.doc["tailable"], tail.doc["awaitData"]) == (True, True)
    reply_cursor(tail, [old, newest], cursor_id=42)
    # The oldest document is not the position: is the position still kept?
    locate = await mongo.receive("find")
    assert locate.doc["filter"] == {"_id": {"$in": [newest["_id"], old["_id"]]}}
    reply_cursor(locate, [{"_id": old["_id"]}, {"_id": newest["_id"]}])
    await asyncio.wait_for(channel.ready(), 5)
    more = await mongo.receive("getMore")
    assert (more.doc["getMore"], more.doc["collection"], more.doc["maxTimeMS"]) == (
        42,
        COLLECTION,
        250,
    )
    new = [doc("e", 1), doc("other", 2), doc("e", {"x": [3]})]
    reply_cursor(more, new, cursor_id=42)
    await carrier.wait_for(2)
    assert payloads(carrier) == [
        ("e", 1, str(new[0]["_id"])),
        ("e", {"x": [3]}, str(new[2]["_id"])),
    ]
    # An idle getMore (empty batch, cursor alive) is just asked again.
    reply_cursor(await mongo.receive("getMore"), [], cursor_id=42)
    reply_cursor(await mongo.receive("getMore"), [doc("e", 4)], cursor_id=42)
    await carrier.wait_for(3)
    stats = channel.stats()
    assert (stats["consumer"], stats["cursors"], stats["reconnects"], stats["gaps"]) == (
        "running",
        1,
        0,
        0,
    )
    assert stats["position"] == stats["last_id"] == payloads(carrier)[-1][2]
    assert stats["collection"] == f"app.{COLLECTION}"


async def test_a_dead_cursor_is_reopened_after_the_last_delivered_document(
    mongo: ScriptedMongo, db: Any
) -> None:
    channel = channel_of(db)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    newest = ObjectId()
    await start_tailing(mongo, newest, [{"_id": newest, "key": None, "marker": "start"}])
    # ObjectIds are made by each client: a later insert may carry a smaller id.
    first, late = (
        doc("e", "first", ObjectId("ffffffffffffffffffffffff")),
        doc("e", "late", ObjectId("000000000000000000000001")),
    )
    reply_cursor(await mongo.receive("getMore"), [first], cursor_id=0)  # the cursor died
    # Re-opened: from the oldest document, skipping through the last one delivered.
    tail = await mongo.receive("find")
    assert (tail.doc["tailable"], tail.doc["filter"]) == (True, {})
    older = doc("e", "older")
    reply_cursor(tail, [older, first, late], cursor_id=43)
    locate = await mongo.receive("find")
    assert locate.doc["filter"] == {"_id": {"$in": [first["_id"], older["_id"]]}}
    reply_cursor(locate, [{"_id": older["_id"]}, {"_id": first["_id"]}])
    await carrier.wait_for(2)
    assert [p[1] for p in payloads(carrier)] == ["first", "late"]  # none lost, none repeated
    assert (await mongo.receive("getMore")).doc["getMore"] == 43
    stats = channel.stats()
    assert (stats["reconnects"], stats["errors"], stats["cursors"], stats["gaps"]) == (1, 0, 2, 0)


async def test_a_killed_cursor_and_a_hang_up_are_survived(mongo: ScriptedMongo, db: Any) -> None:
    channel = channel_of(db)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    newest = ObjectId()
    await start_tailing(mongo, newest, [{"_id": newest, "key": None, "marker": "start"}])
    one = doc("e", 1)
    reply_cursor(await mongo.receive("getMore"), [one], cursor_id=42)
    await carrier.wait_for(1)
    # An operator kills the cursor: CursorNotFound.
    (await mongo.receive("getMore")).command_err(code=43, errmsg="cursor id 42 not found")
    reopened = await mongo.receive("find")
    assert reopened.doc["tailable"] is True
    reply_cursor(reopened, [one], cursor_id=44)  # the position is the oldest: no lookup
    two = doc("e", 2)
    reply_cursor(await mongo.receive("getMore"), [two], cursor_id=44)
    await carrier.wait_for(2)
    # The server goes away mid-getMore: the driver reports a network error.
    (await mongo.receive("getMore")).hangup()
    reopened = await mongo.receive("find")
    reply_cursor(reopened, [one, two, doc("e", 3)], cursor_id=45)
    locate = await mongo.receive("find")
    assert locate.doc["filter"] == {"_id": {"$in": [two["_id"], one["_id"]]}}
    reply_cursor(locate, [{"_id": one["_id"]}, {"_id": two["_id"]}])
    await carrier.wait_for(3)
    assert [p[1] for p in payloads(carrier)] == [1, 2, 3]
    stats = channel.stats()
    assert (stats["errors"], stats["reconnects"], stats["consumer"]) == (1, 2, "running")
    assert stats["last_error"].split(":")[0] in {"AutoReconnect", "NetworkTimeout"}


async def test_a_position_rolled_out_is_a_gap_and_subscribers_are_told(
    mongo: ScriptedMongo, db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    channel = channel_of(db)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    newest = ObjectId()
    await start_tailing(mongo, newest, [{"_id": newest, "key": None, "marker": "start"}])
    one = doc("e", 1)
    reply_cursor(await mongo.receive("getMore"), [one], cursor_id=42)
    await carrier.wait_for(1)
    (await mongo.receive("getMore")).command_err(code=136, errmsg="CappedPositionLost")
    # The collection rolled over: ``one`` is gone, the oldest kept is ``five``.
    five, six = doc("e", 5), doc("e", 6)
    reply_cursor(await mongo.receive("find"), [five, six], cursor_id=46)
    locate = await mongo.receive("find")
    assert locate.doc["filter"] == {"_id": {"$in": [one["_id"], five["_id"]]}}
    reply_cursor(locate, [{"_id": five["_id"]}])
    # Whatever was between ``one`` and ``five`` is lost: the subscriber is closed with 1013
    # so that its client resumes and learns from ``recovered`` that history is incomplete.
    assert (await carrier.wait_closed())[0] == 1013
    assert [p[1] for p in payloads(carrier)] == [1]
    stats = channel.stats()
    assert (stats["gaps"], stats["closed_slow"]) == (1, 0)
    assert "rolled out" in caplog.text
    # The consumer goes on from what is kept (``later`` may come in before 5 and 6 go out).
    later = RecordingCarrier()
    channel.subscribe("e", later)
    reply_cursor(await mongo.receive("getMore"), [doc("e", 7)], cursor_id=46)
    await wait_until(lambda: 7 in [p[1] for p in payloads(later)], what="7 delivered")
    assert [p[1] for p in payloads(later)] in ([5, 6, 7], [6, 7], [7])


async def test_both_position_and_oldest_gone_is_retried(mongo: ScriptedMongo, db: Any) -> None:
    channel = channel_of(db)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    newest = ObjectId()
    await start_tailing(mongo, newest, [{"_id": newest, "key": None, "marker": "start"}])
    one = doc("e", 1)
    reply_cursor(await mongo.receive("getMore"), [one], cursor_id=0)
    seven = doc("e", 7)
    reply_cursor(await mongo.receive("find"), [doc("e", 5), seven], cursor_id=47)
    reply_cursor(await mongo.receive("find"), [])  # neither is kept any more
    reply_cursor(await mongo.receive("find"), [seven], cursor_id=48)
    reply_cursor(await mongo.receive("find"), [{"_id": seven["_id"]}])
    assert (await carrier.wait_closed())[0] == 1013  # a gap: the client resumes
    assert [p[1] for p in payloads(carrier)] == [1]
    stats = channel.stats()
    assert stats["last_error"].startswith("_PositionLost")
    assert stats["gaps"] == 1


async def test_an_empty_collection_gets_a_start_marker(mongo: ScriptedMongo, db: Any) -> None:
    channel = channel_of(db)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await created(mongo)
    reply_cursor(await mongo.receive("find"), [])  # no newest document
    marker = await mongo.receive("insert")
    [start] = marker.doc["documents"]
    assert (start["key"], start["marker"]) == (None, "start")
    assert "data" not in start
    marker.ok(n=1)
    reply_cursor(await mongo.receive("find"), [start], cursor_id=42)
    await asyncio.wait_for(channel.ready(), 5)
    reply_cursor(await mongo.receive("getMore"), [doc("e", "first")], cursor_id=42)
    await carrier.wait_for(1)
    assert payloads(carrier)[0][1] == "first"
    assert channel.stats()["skipped"] == 0  # the marker is not counted as a foreign document


async def test_foreign_documents_are_skipped_and_counted(
    mongo: ScriptedMongo, db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    channel = channel_of(db)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    newest = ObjectId()
    await start_tailing(mongo, newest, [{"_id": newest, "key": None, "marker": "start"}])
    foreign = [
        {"_id": ObjectId(), "key": "e", "data": {"bson": "not json text"}},
        {"_id": ObjectId(), "key": "e", "data": "{not json"},
        {"_id": ObjectId(), "something": "else"},
    ]
    reply_cursor(await mongo.receive("getMore"), [*foreign, doc("e", "ok")], cursor_id=42)
    await carrier.wait_for(1)
    assert [p[1] for p in payloads(carrier)] == ["ok"]
    assert channel.stats()["skipped"] == 3
    assert caplog.text.count("skipped document") == 1  # warned once, not per document


async def test_documents_are_delivered_without_decoding_their_data(
    mongo: ScriptedMongo, db: Any, parsed: list[str]
) -> None:
    carrier = RecordingCarrier()
    channel_of(db).subscribe("e", carrier)
    await start_tailing(mongo, newest := ObjectId(), [{"_id": newest, "marker": "start"}])
    own = doc("e", {"n": 1})
    # Written by something else (no "v"): its text is checked to be JSON before delivery.
    other = {key: value for key, value in doc("e", {"n": 2}).items() if key != "v"}
    reply_cursor(await mongo.receive("getMore"), [own, other], cursor_id=42)
    await carrier.wait_for(2)
    assert [p[1] for p in payloads(carrier)] == [{"n": 1}, {"n": 2}]
    assert own["data"] not in parsed
    assert parsed.count(other["data"]) == 1


async def test_history_comes_from_the_collection_in_insert_order(
    mongo: ScriptedMongo, db: Any
) -> None:
    channel = channel_of(db)
    mongo.auto("create", lambda r: r.ok())
    kept = [doc("e", 1), doc("f", 2), {"_id": ObjectId(), "marker": "start"}, doc("e", 3)]
    mongo.auto("find", lambda r: reply_cursor(r, kept))
    everything = await asyncio.wait_for(channel.history(), 5)
    assert everything.complete is True
    assert [e.data for e in everything] == [1, 2, 3]
    assert mongo.commands("find")[0]["sort"] == {"$natural": 1}
    after = await channel.history(since=str(kept[1]["_id"]))
    assert (after.complete, [e.id for e in after]) == (True, [str(kept[3]["_id"])])
    rolled_out = await channel.history(since=str(ObjectId()))
    assert (rolled_out.complete, [e.data for e in rolled_out]) == (False, [1, 2, 3])
    with pytest.raises(ValueError, match="not an event id of channel 'feed'"):
        await channel.history(since="1-2")


async def test_close_kills_the_cursor_and_a_restart_begins_at_now(
    mongo: ScriptedMongo, db: Any
) -> None:
    channel = channel_of(db)
    channel.subscribe("e", RecordingCarrier())
    newest = ObjectId()
    await start_tailing(mongo, newest, [{"_id": newest, "key": None, "marker": "start"}])
    reply_cursor(await mongo.receive("getMore"), [doc("e", 1)], cursor_id=42)
    await mongo.receive("getMore")  # left waiting, as a server holds an idle getMore
    await asyncio.wait_for(channel.close(), 5)
    assert channel.stats()["consumer"] == "closed"
    killed = mongo.commands("killCursors")
    assert [k["cursors"] for k in killed] == [[42]]
    # Subscribing again starts from "now" (the newest document), not from the old position.
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    again = await mongo.receive("find")
    assert again.doc["hint"] == {"$natural": -1}


async def test_options_are_checked(db: Any) -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        MongoChannel(name="bad", db=db, capacity=0)
    with pytest.raises(ValueError, match="at least 4096"):
        MongoChannel(name="bad", db=db, size=100)
    with pytest.raises(ValueError, match="await_time"):
        MongoChannel(name="bad", db=db, await_time=0)
    with pytest.raises(ValueError, match="probe_interval"):
        MongoChannel(name="bad", db=db, probe_interval=-1)
    with pytest.raises(TypeError, match="needs a database"):
        MongoChannel(name="bad", db=None)
    with pytest.raises(TypeError, match="not the client"):
        MongoChannel(name="bad", db=db.client)


def test_a_synchronous_database_is_refused(mongo: ScriptedMongo) -> None:
    from pymongo import MongoClient

    client: Any = MongoClient(mongo.uri, connect=False)
    try:
        with pytest.raises(TypeError, match="block the event loop"):
            MongoChannel(name="bad", db=client["app"])
    finally:
        client.close()


async def test_data_too_large_for_the_collection_is_refused_before_writing(
    mongo: ScriptedMongo, db: Any
) -> None:
    channel = channel_of(db, size=4096)
    with pytest.raises(ValueError, match="larger size="):
        await channel.publish("e", "x" * 5000)
    with pytest.raises(TypeError, match="not JSON serializable"):
        await channel.publish("e", object())
    assert mongo.requests == []


async def test_a_second_call_returns_the_first_channel(db: Any) -> None:
    channel = channel_of(db)
    assert MongoChannel(name="feed", db=db, capacity=3) is channel
    assert channel.capacity == 10_000  # the first call's options hold


async def test_a_failed_create_is_raised_and_tried_again(mongo: ScriptedMongo, db: Any) -> None:
    channel = channel_of(db)
    publishing = asyncio.ensure_future(channel.publish("e", 1))
    (await mongo.receive("create")).command_err(code=13, errmsg="not authorized on app")
    with pytest.raises(OperationFailure, match="not authorized"):
        await asyncio.wait_for(publishing, 5)
    assert mongo.commands("insert") == []
    publishing = asyncio.ensure_future(channel.publish("e", 2))
    (await mongo.receive("create")).ok()  # not cached: the next use asks again
    (await mongo.receive("insert")).ok(n=1)
    assert (await asyncio.wait_for(publishing, 5)).data == 2


async def test_a_dropped_collection_is_created_again(mongo: ScriptedMongo, db: Any) -> None:
    channel = channel_of(db)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    newest = ObjectId()
    await start_tailing(mongo, newest, [{"_id": newest, "key": None, "marker": "start"}])
    one = doc("e", 1)
    reply_cursor(await mongo.receive("getMore"), [one], cursor_id=0)  # dropped: cursor dead
    reply_cursor(await mongo.receive("find"), [], cursor_id=0)  # re-opened: nothing there
    # What was between could not be read: the subscriber is told (closed with 1013).
    assert (await carrier.wait_closed())[0] == 1013
    assert channel.stats()["gaps"] == 1
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    # Created again as a capped collection before anything is written to it.
    create = await mongo.receive("create")
    assert create.doc["capped"] is True
    create.ok()
    marker = await mongo.receive("insert")
    [start] = marker.doc["documents"]
    assert start["marker"] == "start"
    marker.ok(n=1)
    reply_cursor(await mongo.receive("find"), [start], cursor_id=51)
    reply_cursor(await mongo.receive("getMore"), [doc("e", 2)], cursor_id=51)
    await carrier.wait_for(1)
    assert [p[1] for p in payloads(carrier)] == [2]


async def test_a_server_that_stops_answering_is_given_up(mongo: ScriptedMongo, db: Any) -> None:
    channel = channel_of(db, probe_interval=0.2)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    newest = ObjectId()
    await start_tailing(mongo, newest, [{"_id": newest, "key": None, "marker": "start"}])
    stuck = await mongo.receive("getMore")  # never answered in time
    reopened = await mongo.receive("find", timeout=5)
    assert reopened.doc["tailable"] is True
    assert channel.stats()["last_error"].startswith("TimeoutError: MongoDB did not answer")
    # Let the abandoned request end (a Motor thread still waits on it).
    with contextlib.suppress(OSError):
        stuck.hangup()
    reply_cursor(reopened, [{"_id": newest}, doc("e", "after")], cursor_id=52)
    await carrier.wait_for(1)
    assert [p[1] for p in payloads(carrier)] == ["after"]


async def test_resume_while_the_consumer_lags_behind_since(mongo: ScriptedMongo, db: Any) -> None:
    # The client saw ``seen`` (through another process); this process's consumer has not
    # read it yet when the client resumes here. Nothing may be sent twice.
    channel = channel_of(db)
    channel.subscribe("other", RecordingCarrier())
    newest = ObjectId()
    await start_tailing(mongo, newest, [{"_id": newest, "key": None, "marker": "start"}])
    await asyncio.wait_for(channel.ready(), 5)
    lagging = await mongo.receive("getMore")  # held: the consumer has not seen what follows
    seen, missed, live = doc("e", "seen"), doc("e", "missed"), doc("e", "live")
    carrier = RecordingCarrier()
    resuming = asyncio.ensure_future(channel.resume(carrier, ["e"], since=str(seen["_id"])))
    # History is read a page at a time: first the ids and sizes, then the page itself.
    index = await mongo.receive("find")
    assert index.doc["sort"] == {"$natural": 1}
    assert index.doc["projection"] == {"_id": 1, "size": {"$bsonSize": "$$ROOT"}}
    reply_cursor(index, [{"_id": d["_id"], "size": 60} for d in ({"_id": newest}, seen, missed)])
    page = await mongo.receive("find")
    assert (page.doc["sort"], page.doc["skip"], page.doc["limit"]) == ({"$natural": 1}, 2, 1)
    reply_cursor(page, [missed])
    assert await asyncio.wait_for(resuming, 5) is True
    reply_cursor(lagging, [seen, missed, live], cursor_id=42)
    frames = await carrier.wait_for(3)
    assert [f["type"] for f in frames] == ["event", "recovered", "event"]
    assert [p[1] for p in payloads(carrier)] == ["missed", "live"]
    reply_cursor(await mongo.receive("getMore"), [doc("e", "later")], cursor_id=42)
    await carrier.wait_for(4)
    assert [p[1] for p in payloads(carrier)] == ["missed", "live", "later"]


async def test_listen_resumes_after_a_given_id_and_kills_its_cursor(
    mongo: ScriptedMongo, db: Any
) -> None:
    # What the consumer loop does after a fault, driven by hand.
    channel = channel_of(db)
    mongo.auto("create", lambda r: r.ok())
    given, after = doc("e", "given"), doc("e", "after")
    stream = channel.listen(str(given["_id"]))
    first = asyncio.ensure_future(stream.__anext__())
    tail = await mongo.receive("find")
    assert (tail.doc["tailable"], tail.doc["awaitData"]) == (True, True)
    reply_cursor(tail, [given, after], cursor_id=60)
    [event] = await asyncio.wait_for(first, 5)  # one batch: what the answer held after given
    assert (event.id, event.name, event.data) == (str(after["_id"]), "e", "after")
    assert len(mongo.commands("find")) == 1  # the position was the oldest: no look-up
    await stream.aclose()
    assert [k["cursors"] for k in mongo.commands("killCursors")] == [[60]]
    assert channel.cursor is None


async def test_the_documents_of_one_server_answer_are_one_batch(
    mongo: ScriptedMongo, db: Any
) -> None:
    channel = channel_of(db)
    mongo.auto("create", lambda r: r.ok())
    given = doc("e", "given")
    stream = channel.listen(str(given["_id"]))
    first = asyncio.ensure_future(stream.__anext__())
    reply_cursor(await mongo.receive("find"), [given, doc("e", 1), doc("e", 2)], cursor_id=61)
    assert [e.data for e in await asyncio.wait_for(first, 5)] == [1, 2]
    second = asyncio.ensure_future(stream.__anext__())
    reply_cursor(await mongo.receive("getMore"), [doc("e", 3), doc("e", 4)], cursor_id=61)
    assert [e.data for e in await asyncio.wait_for(second, 5)] == [3, 4]
    third = asyncio.ensure_future(stream.__anext__())
    reply_cursor(await mongo.receive("getMore"), [doc("e", 5)], cursor_id=61)
    assert [e.data for e in await asyncio.wait_for(third, 5)] == [5]  # not held for more
    await stream.aclose()


async def test_history_is_read_in_pages_checked_against_a_roll_over(
    mongo: ScriptedMongo, db: Any
) -> None:
    # Pages of at most 1,000 bytes (half of a 2,000-byte outbox): one 600-byte document per
    # page, each page two queries (ids and sizes, then the page).
    channel = channel_of(db)
    mongo.auto("create", lambda r: r.ok())
    since, one, two, three = doc("e", 0), doc("e", 1), doc("e", 2), doc("e", 3)
    kept = [since, one, two, three]

    async def index(docs: list[dict[str, Any]]) -> None:
        request = await mongo.receive("find")
        assert request.doc["projection"] == {"_id": 1, "size": {"$bsonSize": "$$ROOT"}}
        reply_cursor(request, [{"_id": d["_id"], "size": 600} for d in docs])

    async def page(skip: int, docs: list[dict[str, Any]]) -> None:
        request = await mongo.receive("find")
        assert (request.doc["skip"], request.doc["limit"]) == (skip, 1)
        reply_cursor(request, docs)

    resuming = asyncio.ensure_future(
        channel.history_page(str(since["_id"]), limit=1000, max_bytes=1000)
    )
    await index(kept)
    await page(1, [one])
    first = await asyncio.wait_for(resuming, 5)
    assert ([e.data for e in first], first.complete, first.more) == ([1], True, True)
    # Between the two queries the collection rolls over by one: the page found is not the
    # one planned, so both run again.
    resuming = asyncio.ensure_future(
        channel.history_page(str(one["_id"]), limit=1000, max_bytes=1000)
    )
    await index(kept)
    await page(2, [three])  # "two" moved to index 1: this is not it
    await index(kept[1:])
    await page(1, [two])
    second = await asyncio.wait_for(resuming, 5)
    assert ([e.data for e in second], second.complete, second.more) == ([2], True, True)
