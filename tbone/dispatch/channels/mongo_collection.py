"""MongoChannel's capped collection and its documents.

The collection is created on first use, once per process (a concurrent ``create`` from another
process is fine); an existing one must be capped (:class:`CollectionNotCapped`). A document is
``{_id, key, data, v, ts}`` with ``data`` as JSON text; a marker document (``marker:
"start"``) is no event and every reader skips it; a document written by something else is
skipped when it is not an event (counted, logged once at WARNING).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

from tbone.dispatch.errors import TBoneError
from tbone.dispatch.events import Event
from tbone.dispatch.extras import requires

with requires(__name__, "PyMongo", extra="mongo"):
    from bson import ObjectId
    from bson.errors import InvalidId
    from pymongo.errors import OperationFailure

__all__ = ["FORMAT", "CappedCollection", "CollectionNotCapped", "Documents", "utcnow"]

logger = logging.getLogger("tbone.dispatch.channels.mongo")

#: Server error code of ``create`` when the collection already exists.
NAMESPACE_EXISTS = 48
#: A document's ``v``: its ``data`` is tbone.dispatch.jsonenc's text, written by store() and
#: spliced into frames as it is. Documents without it were written by something else: their
#: ``data`` is parsed first, so text that is not JSON never reaches a client.
FORMAT = 1


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


class CappedCollection:
    """The capped collection ``name`` of ``db``, made with ``size`` bytes and ``capacity``
    documents when it is missing."""

    def __init__(self, channel: str, db: Any, name: str, *, size: int, capacity: int) -> None:
        self.channel = channel
        self.db = db
        self.name = name
        self.size = size
        self.capacity = capacity
        #: The driver's collection.
        self.collection = db[name]
        self._ensured = False
        #: The create under way (shared by concurrent callers), if any.
        self.ensuring: asyncio.Task[None] | None = None

    async def ensure(self) -> None:
        """Create the capped collection if it is missing; check that it is capped.

        Concurrent callers share one attempt, so one process sends one ``create``. Raises
        :class:`CollectionNotCapped`, or the driver's error (a failed attempt is retried by
        the next call), and ``ConnectionError`` when the channel closes meanwhile.
        """
        if self._ensured:
            return
        loop = asyncio.get_running_loop()
        task = self.ensuring
        if task is None or task.get_loop() is not loop or (task.done() and not self._ensured):
            task = self.ensuring = loop.create_task(self._create())
        try:
            # Shielded: a caller that gives up must not cancel the attempt the others wait for.
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled() or _cancelling():
                raise  # the caller's own cancellation
            # close() stopped the attempt (stop): an error, not a cancellation.
            raise ConnectionError(
                f"channel {self.channel!r} closed while it created its collection"
            ) from None

    def forget(self) -> None:
        """The collection may have been dropped: check (or create) it again at next use."""
        self._ensured = False

    async def _create(self) -> None:
        name = self.name
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
            logger.debug("channel %r: using the existing capped collection %s", self.channel, name)
        self._ensured = True

    async def newest(self) -> Any:
        """The id of the newest document (a marker put in when there is none)."""
        # A reverse collection scan, asked for with hint() (MongoDB's documented way): some
        # wire-compatible servers ignore a $natural sort and would answer the oldest document.
        cursor = self.collection.find({}, {"_id": 1}).hint([("$natural", -1)]).limit(1)
        newest = [doc async for doc in cursor]
        if not newest:
            return await self.insert_marker()
        return newest[0]["_id"]

    async def insert_marker(self) -> Any:
        """Insert a document that is no event (every reader skips it); return its id."""
        oid = ObjectId()
        await self.collection.insert_one(
            {"_id": oid, "key": None, "marker": "start", "ts": utcnow()}
        )
        return oid

    def on_new_loop(self) -> None:
        """A create of a previous event loop cannot be awaited from this one."""
        self.ensuring = None

    async def stop(self) -> None:
        """Stop a create in flight: a server that does not answer holds it up to the driver's
        serverSelectionTimeoutMS (30 s by default), and it must not outlive the channel."""
        ensuring, self.ensuring = self.ensuring, None
        if ensuring is not None and ensuring.get_loop() is asyncio.get_running_loop():
            await _stop(ensuring)


class Documents:
    """The collection's documents as events, for channel ``channel``."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        #: Documents skipped because they were not events.
        self.skipped = 0

    def event(self, doc: Any) -> Event | None:
        """The event of ``doc``, or None for a marker or a document that is not an event."""
        if doc.get("marker") == "start":
            return None
        key, text = doc.get("key"), doc.get("data")
        if not isinstance(key, str) or not key or not isinstance(text, str):
            self._skip(doc, "it has no str key and JSON text data")
            return None
        try:
            # The frame splices the stored text in; data is decoded only if someone reads it.
            event = Event.from_json(key, text, str(doc["_id"]), self.channel)
            if doc.get("v") != FORMAT:
                event.data  # noqa: B018 - not written by store(): check that it is JSON
        except ValueError as exc:
            self._skip(doc, f"its data is not JSON ({exc})")
            return None
        return event

    def _skip(self, doc: Any, why: str) -> None:
        # Written by something else than a MongoChannel: nothing to deliver, say so once.
        self.skipped += 1
        log = logger.warning if self.skipped == 1 else logger.debug
        log("channel %r: skipped document %s: %s", self.channel, doc.get("_id"), why)

    def object_id(self, value: str) -> Any:
        """The ObjectId of the event id ``value``; ValueError for one that is not."""
        try:
            return ObjectId(value)
        except (InvalidId, TypeError):
            raise ValueError(
                f"{value!r} is not an event id of channel {self.channel!r} "
                "(MongoChannel ids are 24-digit hex ObjectIds)"
            ) from None


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


def utcnow() -> datetime.datetime:
    """Now, in UTC (a document's ``ts``)."""
    return datetime.datetime.now(datetime.timezone.utc)
