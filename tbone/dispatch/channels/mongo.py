"""MongoChannel: a channel on a MongoDB capped collection, read with a tailable cursor.

Every process that makes ``MongoChannel(name="pubsub", db=db)`` on the same database shares
the collection ``tbone_channel_pubsub``: ``publish`` inserts one document, and each process's
consumer tails the collection and hands the documents to its own subscribers. No component
other than MongoDB is needed.

Rules (``docs/mongo.md`` has the long form):

* Order is the collection's insert order (``$natural``), the same in every process. Event ids
  are the documents' ObjectIds; they are unique but, being made by each client, are NOT
  ordered across processes, so the channel never compares them: it resumes by finding the
  last document it delivered in insert order.
* Each consumer delivers every document once, in order, across cursor deaths, killed cursors,
  hang-ups and fail-overs. Only a document rolled out of the capped collection before the
  consumer read it is missed; that is counted (``stats()["gaps"]``) and logged.
* History (``since``) is read from the collection itself: it is complete while the document
  with that id is still kept.
* Errors retrying cannot fix (failed authentication, missing rights, a configuration the
  driver refuses, a collection that is not capped) make ``ready()`` fail at once
  (:meth:`MongoChannel.fatal_error`).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from tbone.dispatch import jsonenc
from tbone.dispatch.channels import MAX_MESSAGE_BYTES, WINDOW_BYTES, Channel, ChannelOptions
from tbone.dispatch.checks import seconds, whole_number
from tbone.dispatch.errors import TBoneError
from tbone.dispatch.events import Event, History, MessageTooLarge
from tbone.dispatch.timeouts import wait_at_most

try:
    from bson import ObjectId
    from bson.errors import InvalidId
    from pymongo import AsyncMongoClient, CursorType, MongoClient
    from pymongo.database import Database as _SyncDatabase
    from pymongo.errors import ConfigurationError, InvalidName, OperationFailure
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "MongoChannel needs PyMongo: pip install 'tbone-asgi[mongo]' "
        "(or 'tbone-asgi[motor]' to use a Motor database)"
    ) from exc

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["CollectionNotCapped", "MongoChannel"]

logger = logging.getLogger("tbone.dispatch.channels.mongo")

T = TypeVar("T")

#: Server error code of ``create`` when the collection already exists.
NAMESPACE_EXISTS = 48
#: Bytes a document takes beyond its key and data text (``_id``, field names, ``v``, ``ts``).
_DOC_OVERHEAD = 96
#: A document's ``v``: its ``data`` is tbone.dispatch.jsonenc's text, written by store() and
#: spliced into frames as it is. Documents without it were written by something else: their
#: ``data`` is parsed first, so text that is not JSON never reaches a client.
_FORMAT = 1
#: Server error codes retrying cannot fix: the credentials, or the user's rights.
AUTHENTICATION_FAILED = 18
UNAUTHORIZED = 13
#: Seconds allowed for killing a cursor when it is dropped.
_CLOSE_TIMEOUT = 5.0
#: Tries to read one history page when the collection keeps rolling over meanwhile.
_PAGE_ATTEMPTS = 3


class CollectionNotCapped(TBoneError, RuntimeError):
    """The channel's collection exists but is not a capped collection.

    A tailable cursor needs a capped collection, so the channel cannot use it. Carries
    ``database``, ``collection`` and the server's ``info`` about it (from listCollections).
    """

    database: str
    collection: str
    info: dict[str, Any]

    def __init__(self, database: str, collection: str, info: dict[str, Any]) -> None:
        super().__init__(
            f"collection {database}.{collection} exists but is not capped "
            f"(type {info.get('type', 'collection')!r}, options {info.get('options', {})!r}); "
            "MongoChannel tails a capped collection. Drop it if it holds nothing you need "
            f"(db.{collection}.drop()), convert it (convertToCapped), or give the channel "
            "another collection with MongoChannel(..., prefix=...).",
            database=database,
            collection=collection,
            info=info,
        )


class _PositionLost(RuntimeError):
    """Neither the read position nor the oldest document was found while re-opening."""


class MongoChannel(Channel):
    """A channel stored in the capped collection ``prefix + name`` of ``db``.

    ``db``: a database of PyMongo's asyncio API (``pymongo.AsyncMongoClient(url)["app"]``) or
    a Motor database (``motor.motor_asyncio.AsyncIOMotorClient(url)["app"]``; Motor is
    deprecated by MongoDB but supported). Options:

    * ``capacity``: most documents the collection keeps (its ``max``); defaults to ``history``
      (10,000).
    * ``size``: most bytes it keeps (its ``size``; MongoDB needs one); 64 MiB by default, at
      least ``window_bytes``. Whichever limit is reached first rolls the oldest documents out.
    * ``prefix``: the collection is ``prefix + name`` (TBone's ``tbone_channel_``).
    * ``await_time``: seconds the server holds an idle ``getMore`` before answering empty.
    * ``probe_interval``: seconds a read of the consumer (a ``getMore``, a position look-up)
      may take beyond ``await_time`` before the link is taken for dead (a server that stops
      answering with the socket still open) and the cursor is re-opened.
    * ``max_message_bytes``, ``window``, ``window_bytes``, ``queue_size``, ``queue_bytes``,
      ``publish_timeout``, ``backoff``: as for every :class:`Channel`.

    ``capacity`` and ``size`` apply when this channel creates the collection; an existing
    capped collection keeps its own limits. The collection is created on first use (publish,
    subscribe or history), once per process; a concurrent ``create`` from another process is
    fine. An existing collection that is not capped raises :class:`CollectionNotCapped`.
    """

    backend = "mongo"
    checks_size = True
    expects_in_store = True

    def __init__(
        self,
        name: str,
        *,
        db: Any,
        capacity: int | None = None,
        size: int = 64 * 1024 * 1024,
        prefix: str = "tbone_channel_",
        await_time: float = 1.0,
        probe_interval: float = 10.0,
        history: int = 10_000,
        **options: Unpack[ChannelOptions],
    ) -> None:
        _check_database(name, db)
        capacity = history if capacity is None else capacity
        whole_number("capacity", capacity, why=" (documents)")
        smallest = " (bytes; MongoDB's smallest capped collection)"
        whole_number("size", size, minimum=4096, why=smallest)
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {prefix!r}")
        seconds("await_time", await_time)
        if not await_time <= 60:
            raise ValueError(f"await_time must be seconds in (0, 60], got {await_time!r}")
        seconds("probe_interval", probe_interval)
        # Nothing bigger than the collection can be stored anyway.
        options["max_message_bytes"] = min(
            options.get("max_message_bytes", MAX_MESSAGE_BYTES), size
        )
        options["window_bytes"] = min(options.get("window_bytes", WINDOW_BYTES), size)
        super().__init__(name, history=capacity, **options)
        self.db = db
        self.capacity = capacity
        self.size = size
        self.await_time = float(await_time)
        self.probe_interval = float(probe_interval)
        self.collection_name = prefix + name
        self._collection = db[self.collection_name]
        self._ensured = False
        self._ensuring: asyncio.Task[None] | None = None
        # The last document the cursor passed (delivered or not), in insert order: where the
        # next cursor resumes. None: start from "now".
        self._position: Any = None
        self._position_is_now = False
        # Closed or moved to another event loop: the next cursor starts from "now", not
        # after the last event the old subscribers got.
        self._restarted = False
        #: The driver's tailing cursor while one is open (for diagnostics), else None.
        self.cursor: Any = None
        self._mongo_counts = dict.fromkeys(("cursors", "skipped"), 0)

    # -- the collection ----------------------------------------------------------------------

    async def ensure_collection(self) -> None:
        """Create the capped collection if it is missing; check that it is capped.

        Concurrent callers share one attempt, so one process sends one ``create``. Raises
        :class:`CollectionNotCapped`, or the driver's error (a failed attempt is retried by
        the next call), and ``ConnectionError`` when the channel closes meanwhile.
        """
        if self._ensured:
            return
        loop = asyncio.get_running_loop()
        task = self._ensuring
        if task is None or task.get_loop() is not loop or (task.done() and not self._ensured):
            task = self._ensuring = loop.create_task(self._create_collection())
        try:
            # Shielded: a caller that gives up must not cancel the attempt the others wait for.
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled() or _cancelling():
                raise  # the caller's own cancellation
            # close() stopped the attempt (close_backend): an error, not a cancellation.
            raise ConnectionError(
                f"channel {self.name!r} closed while it created its collection"
            ) from None

    async def _create_collection(self) -> None:
        name = self.collection_name
        try:
            await self.db.command("create", name, capped=True, size=self.size, max=self.capacity)
        except OperationFailure as exc:
            if exc.code != NAMESPACE_EXISTS:
                raise
            # Made earlier or by another process just now: usable if it is capped.
            reply = await self.db.command("listCollections", filter={"name": name})
            found = reply["cursor"]["firstBatch"]
            if not found:  # dropped in between: the next attempt creates it
                raise
            info = dict(found[0])
            if info.get("type", "collection") != "collection" or not info.get("options", {}).get(
                "capped"
            ):
                raise CollectionNotCapped(self.db.name, name, info) from None
            logger.debug("channel %r: using the existing capped collection %s", self.name, name)
        self._ensured = True

    # -- backend hooks -----------------------------------------------------------------------

    async def store(self, name: str, data: Any) -> Event:
        """Insert one document ``{_id, key, data, v, ts}``; ``data`` is kept as JSON text.

        JSON text, not BSON, so every process's subscribers get exactly the frame the
        publisher's data encodes to (no BSON type changes, no 64-bit or key-type limits).
        Raises TypeError/ValueError for data that cannot be encoded, MessageTooLarge over
        ``max_message_bytes`` or the collection's ``size``, and the driver's error when the
        insert fails (an insert that failed on the way back may still have been stored).
        """
        payload = jsonenc.dumps_bytes(data)
        needed = len(payload) + len(name.encode()) + _DOC_OVERHEAD
        if needed > self.size:
            self._count("refused")
            raise MessageTooLarge(
                self.name,
                name,
                needed,
                self.size,
                fix="create the channel with a larger size= (the capped collection's bytes)",
            )
        self.check_size(name, payload)
        oid = ObjectId()
        event = Event.from_json(name, payload, str(oid), self.name, data=data)
        await self.ensure_collection()
        # Expected before the insert: the tailing cursor may see it before the insert answers.
        self.expect(event)
        try:
            await self._collection.insert_one(
                {"_id": oid, "key": name, "data": payload.decode(), "v": _FORMAT, "ts": _utcnow()}
            )
        except BaseException:
            self.unexpect(event)
            raise
        return event

    async def listen(self, after: str | None) -> AsyncIterator[list[Event]]:
        """Tail the collection from the read position; see the module docstring.

        The position is the last document a cursor of this channel passed; with none yet,
        ``after`` (an event id), else "now" (the newest document); after a close, "now". The
        cursor starts at the oldest document and this skips up to and including the
        position, so resuming never relies on ObjectId order. The documents the driver holds
        at once (one server answer) are yielded as one batch. Returning or raising ends one
        cursor: the consumer loop re-opens it with backoff.
        """
        await self.ensure_collection()
        if self._position is None:
            if after is not None and not self._restarted:
                self._position, self._position_is_now = self._object_id(after), False
            else:
                self._position, self._position_is_now = await self._bounded(self._now()), True
            self._restarted = False
        marker = self._position
        cursor = self._collection.find({}, cursor_type=CursorType.TAILABLE_AWAIT)
        cursor = cursor.max_await_time_ms(int(self.await_time * 1000))
        self._mongo_counts["cursors"] += 1
        self.cursor = cursor
        state = "opening"
        taken = 0  # documents taken from the cursor
        try:
            while True:
                doc = await self._fetch(cursor)
                if doc is None:
                    if cursor.alive:
                        continue  # nothing new within await_time
                    if state == "opening":
                        # Empty, or dropped (then an insert would make it uncapped): check the
                        # collection again, then put a marker document in and start after it,
                        # as MongoDB kills a tailable cursor that matches nothing.
                        self._note_gap(marker)
                        self._ensured = False
                        await self.ensure_collection()
                        marker = await self._bounded(self._insert_marker())
                        self._position, self._position_is_now = marker, True
                    return
                taken += 1
                if state == "opening":
                    state = await self._bounded(self._locate(marker, doc["_id"]))
                    self.mark_ready()
                if state == "skipping":
                    if doc["_id"] == marker:
                        state = "delivering"
                    continue
                docs = [doc]
                while _retrieved(cursor) > taken:  # held by the driver: no read waits
                    doc = await self._fetch(cursor)
                    if doc is None:
                        break
                    taken += 1
                    docs.append(doc)
                self._position, self._position_is_now = docs[-1]["_id"], False
                events = [e for e in map(self._event, docs) if e is not None]
                if events:
                    yield events
        finally:
            self.cursor = None
            await _close_cursor(cursor)

    async def read_history(self, since: str | None) -> History:
        """The events kept in the collection after ``since``, in insert order.

        ``complete`` is False when the document ``since`` names is no longer kept (rolled out,
        or an id this collection never held): every kept event is returned then. Raises
        ValueError for an id that is not an ObjectId.
        """
        marker = None if since is None else self._object_id(since)
        await self.ensure_collection()
        found = marker is None
        kept: list[Event] = []
        async for doc in self._collection.find({}).sort("$natural", 1):
            if marker is not None and doc["_id"] == marker:
                found, kept = True, []
                continue
            event = self._event(doc)
            if event is not None:
                kept.append(event)
        return History(kept, complete=found)

    async def history_page(self, since: str | None, *, limit: int, max_bytes: int) -> History:
        """One page of history in insert order, read with two bounded queries.

        The first lists the kept documents' ids and sizes only (a small answer even for a
        full collection) to find where the page starts and ends; the second fetches that page
        (``skip``/``limit`` in ``$natural`` order) and is checked against a roll-over in
        between (then both run again). Needs MongoDB 4.4 or later (``$bsonSize``).
        """
        marker = None if since is None else self._object_id(since)
        await self.ensure_collection()
        for _attempt in range(_PAGE_ATTEMPTS):
            sizes = self._collection.find(
                {}, {"_id": 1, "size": {"$bsonSize": "$$ROOT"}}, sort=[("$natural", 1)]
            )
            index = [(doc["_id"], int(doc.get("size") or 0)) async for doc in sizes]
            start, found = 0, marker is None
            if marker is not None:
                for position, (oid, _size) in enumerate(index):
                    if oid == marker:
                        start, found = position + 1, True
                        break
            page = await self._page_from(index, start, limit, max_bytes)
            if page is not None:
                return History(page[0], found, more=page[1])
        raise TimeoutError(
            f"channel {self.name!r}: the collection {self.collection_name} rolled over while "
            f"a history page was read, {_PAGE_ATTEMPTS} times in a row (raise capacity/size)"
        )

    async def _page_from(
        self, index: list[tuple[Any, int]], start: int, limit: int, max_bytes: int
    ) -> tuple[list[Event], bool] | None:
        """The events of the next page at ``start`` of ``index``, and whether more follow.

        Documents that are not events (markers, foreign documents) are skipped, and a page of
        nothing but those is read past: a page that says more holds an event. None when the
        collection rolled over meanwhile (the caller reads the index again).
        """
        while True:
            stop, total = start, 0
            while stop < len(index) and stop - start < limit:
                if stop > start and total + index[stop][1] > max_bytes:
                    break
                total += index[stop][1]
                stop += 1
            if stop == start:
                return [], False
            page = self._collection.find({}, sort=[("$natural", 1)], skip=start, limit=stop - start)
            docs = [doc async for doc in page]
            if not docs or docs[0]["_id"] != index[start][0]:
                return None
            events = [e for e in map(self._event, docs) if e is not None]
            more = stop < len(index)
            if events or not more:
                return events, more
            start = stop

    def fatal_error(self, exc: Exception) -> str | None:
        """The fix for errors retrying cannot fix: failed authentication, a user without the
        rights the channel needs, a configuration the driver refuses (a URI option, an SRV
        name that does not resolve), a collection that is not capped, an invalid name."""
        if isinstance(exc, OperationFailure):
            if exc.code == AUTHENTICATION_FAILED:
                return (
                    "check the user name, password and authSource "
                    "(in the URI: mongodb://user:password@host/db?authSource=admin)"
                )
            if exc.code == UNAUTHORIZED:
                return (
                    f"grant the user find, insert and createCollection on "
                    f"{self.db.name}.{self.collection_name} (readWrite on the database)"
                )
            return None
        if isinstance(exc, CollectionNotCapped):
            return "drop the collection, convert it (convertToCapped), or pass another prefix="
        if isinstance(exc, (ConfigurationError, InvalidName)):
            return "fix the client's configuration (the MongoDB URI and its options)"
        return None

    # -- reading helpers ---------------------------------------------------------------------

    async def _now(self) -> Any:
        """The id of the newest document: the consumer starts after it."""
        # A reverse collection scan, asked for with hint() (MongoDB's documented way): some
        # wire-compatible servers ignore a $natural sort and would answer the oldest document.
        cursor = self._collection.find({}, {"_id": 1}).hint([("$natural", -1)]).limit(1)
        newest = [doc async for doc in cursor]
        if not newest:
            return await self._insert_marker()
        return newest[0]["_id"]

    async def _insert_marker(self) -> Any:
        # A document that is no event: every reader skips it.
        oid = ObjectId()
        await self._collection.insert_one(
            {"_id": oid, "key": None, "marker": "start", "ts": _utcnow()}
        )
        return oid

    async def _locate(self, marker: Any, first: Any) -> str:
        """Decide, from the cursor's first (oldest) document, where the position is.

        Capped collections remove documents oldest first. If the position is still kept now,
        it was kept when the cursor opened, so it lies at or after ``first`` and the cursor
        reaches it (if it were removed first, ``first``'s removal would kill the cursor). If
        it is gone but ``first`` is kept, it was gone before the cursor opened, so every
        document the cursor returns is newer: deliver all (a gap). Both gone: undecidable.
        """
        if first == marker:
            return "skipping"
        cursor = self._collection.find({"_id": {"$in": [marker, first]}}, {"_id": 1})
        kept = {doc["_id"] async for doc in cursor}
        if marker in kept:
            return "skipping"
        if first in kept:
            self._note_gap(marker)
            return "delivering"
        raise _PositionLost(
            f"channel {self.name!r}: the read position {marker} and the oldest document were "
            "both rolled out while the cursor opened (the collection turns over very fast: "
            "raise capacity/size); retrying"
        )

    def _note_gap(self, marker: Any) -> None:
        if self._position_is_now:
            return  # nothing was delivered from there yet: no event is missed
        self.report_gap(
            f"the last document read ({marker}) was rolled out of {self.collection_name} "
            "before the next ones were read (raise capacity/size)"
        )

    async def _fetch(self, cursor: Any) -> Any:
        """The cursor's next document, or None when it has none now (or is dead)."""
        try:
            return await self._bounded(cursor.next())
        except StopAsyncIteration:
            return None

    async def _bounded(self, step: Awaitable[T]) -> T:
        # Every read of the consumer is bounded: a server that stops answering without
        # closing the socket must not stall the consumer forever.
        timeout = self.await_time + self.probe_interval
        try:
            return await wait_at_most(step, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"MongoDB did not answer within {timeout:g}s (collection {self.collection_name})"
            ) from None

    def _event(self, doc: Any) -> Event | None:
        if doc.get("marker") == "start":
            return None
        key, text = doc.get("key"), doc.get("data")
        if not isinstance(key, str) or not key or not isinstance(text, str):
            self._skip(doc, "it has no str key and JSON text data")
            return None
        try:
            # The frame splices the stored text in; data is decoded only if someone reads it.
            event = Event.from_json(key, text, str(doc["_id"]), self.name)
            if doc.get("v") != _FORMAT:
                event.data  # noqa: B018 - not written by store(): check that it is JSON
        except ValueError as exc:
            self._skip(doc, f"its data is not JSON ({exc})")
            return None
        return event

    def _skip(self, doc: Any, why: str) -> None:
        # Written by something else than a MongoChannel: nothing to deliver, say so once.
        self._mongo_counts["skipped"] += 1
        log = logger.warning if self._mongo_counts["skipped"] == 1 else logger.debug
        log("channel %r: skipped document %s: %s", self.name, doc.get("_id"), why)

    def _object_id(self, value: str) -> Any:
        try:
            return ObjectId(value)
        except (InvalidId, TypeError):
            raise ValueError(
                f"{value!r} is not an event id of channel {self.name!r} "
                "(MongoChannel ids are 24-digit hex ObjectIds)"
            ) from None

    # -- lifecycle ---------------------------------------------------------------------------

    def on_new_loop(self) -> None:
        self._ensuring = None  # a task of the old loop
        self._restart_from_now()

    async def close_backend(self) -> None:
        # The cursor is killed by listen() as the consumer stops. A channel started again
        # serves new subscribers: it starts from "now", not where the old ones left.
        self._restart_from_now()
        # A create in flight (a server that does not answer: the driver waits for one up to
        # serverSelectionTimeoutMS, 30 s by default) is stopped too, else it outlives the
        # channel and the process waits for it as it exits.
        ensuring, self._ensuring = self._ensuring, None
        if ensuring is not None and ensuring.get_loop() is asyncio.get_running_loop():
            await _stop(ensuring)

    def _restart_from_now(self) -> None:
        self._position = None
        self._position_is_now = False
        self._restarted = True

    def stats(self) -> dict[str, Any]:
        """The base counters plus ``collection``, ``cursors`` (opened), ``skipped`` (documents
        that were not events) and ``position`` (the last document read). ``gaps`` counts the
        times the read position had rolled out (see :meth:`Channel.report_gap`)."""
        return {
            **super().stats(),
            "collection": f"{self.db.name}.{self.collection_name}",
            **self._mongo_counts,
            "position": None if self._position is None else str(self._position),
        }


def _retrieved(cursor: Any) -> int:
    """Documents the driver received for ``cursor`` so far (PyMongo's, or Motor's PyMongo one)."""
    retrieved: Any = getattr(cursor, "retrieved", None)
    if retrieved is None:
        retrieved = getattr(getattr(cursor, "delegate", None), "retrieved", 0)
    return int(retrieved)


async def _close_cursor(cursor: Any) -> None:
    # Kills the server cursor; bounded so an unreachable server cannot hold up a close.
    try:
        await wait_at_most(cursor.close(), _CLOSE_TIMEOUT)
    except Exception as exc:  # the cursor is gone with its connection anyway
        logger.debug("closing a cursor failed: %s: %s", type(exc).__name__, exc)


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for its end, cancelling again every 0.1 s: the driver waits
    with ``asyncio.wait_for``, which before Python 3.12 can lose a cancellation (see
    :mod:`tbone.dispatch.timeouts`). The caller bounds the wait (``Channel.close``)."""
    while not task.done():
        task.cancel()
        await asyncio.wait((task,), timeout=0.1)
    if not task.cancelled():
        task.exception()  # retrieved: the attempt's error is the consumer's to report


def _cancelling() -> bool:
    # Whether this task is being cancelled itself (Python 3.11+; 3.10 cannot tell).
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling is not None and cancelling())


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _check_database(name: str, db: Any) -> None:
    # Type checks, not hasattr(): databases answer any attribute with a collection.
    example = f"MongoChannel(name={name!r}, db=pymongo.AsyncMongoClient(url)['app'])"
    if db is None:
        raise TypeError(f"MongoChannel needs a database: {example}")
    if isinstance(db, _SyncDatabase):
        raise TypeError(
            "MongoChannel needs an asyncio database; a synchronous pymongo Database would "
            f"block the event loop: {example}"
        )
    kind = type(db).__name__
    if isinstance(db, (MongoClient, AsyncMongoClient)) or kind.endswith("MotorClient"):
        raise TypeError(f"MongoChannel needs a database, not the client {kind}: {example}")
