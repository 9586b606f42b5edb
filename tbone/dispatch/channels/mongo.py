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

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from tbone.dispatch import jsonenc
from tbone.dispatch.channels import MAX_MESSAGE_BYTES, WINDOW_BYTES, Channel, ChannelOptions
from tbone.dispatch.checks import seconds, whole_number
from tbone.dispatch.events import Event, History, MessageTooLarge

try:
    from bson import ObjectId
    from pymongo import AsyncMongoClient, MongoClient
    from pymongo.database import Database as _SyncDatabase
    from pymongo.errors import ConfigurationError, InvalidName, OperationFailure
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "MongoChannel needs PyMongo: pip install 'tbone-asgi[mongo]' "
        "(or 'tbone-asgi[motor]' to use a Motor database)"
    ) from exc

from tbone.dispatch.channels.mongo_collection import (
    FORMAT,
    CappedCollection,
    CollectionNotCapped,
    Documents,
    utcnow,
)
from tbone.dispatch.channels.mongo_history import StoredHistory
from tbone.dispatch.channels.mongo_tail import Tail

if TYPE_CHECKING:
    import asyncio

    from typing_extensions import Unpack

__all__ = ["CollectionNotCapped", "MongoChannel"]

#: Bytes a document takes beyond its key and data text (``_id``, field names, ``v``, ``ts``).
_DOC_OVERHEAD = 96
#: Server error codes retrying cannot fix: the credentials, or the user's rights.
AUTHENTICATION_FAILED = 18
UNAUTHORIZED = 13


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
        # The parts: the collection, its documents as events, its history, the tail.
        self._collection = CappedCollection(
            name, db, self.collection_name, size=size, capacity=capacity
        )
        self._docs = Documents(name)
        self._history = StoredHistory(self._collection, self._docs)
        self._tail = Tail(
            self,
            self._collection,
            self._docs,
            await_time=self.await_time,
            probe_interval=self.probe_interval,
        )

    @property
    def cursor(self) -> Any:
        """The driver's tailing cursor while one is open (for diagnostics), else None."""
        return self._tail.cursor

    @property
    def _ensuring(self) -> asyncio.Task[None] | None:
        # The collection's create under way, if any (tests watch it).
        return self._collection.ensuring

    async def ensure_collection(self) -> None:
        """Create the capped collection if it is missing; check that it is capped.

        Concurrent callers share one attempt, so one process sends one ``create``. Raises
        :class:`CollectionNotCapped`, or the driver's error (a failed attempt is retried by
        the next call), and ``ConnectionError`` when the channel closes meanwhile.
        """
        await self._collection.ensure()

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
        await self._collection.ensure()
        # Expected before the insert: the tailing cursor may see it before the insert answers.
        self.expect(event)
        try:
            await self._collection.collection.insert_one(
                {"_id": oid, "key": name, "data": payload.decode(), "v": FORMAT, "ts": utcnow()}
            )
        except BaseException:
            self.unexpect(event)
            raise
        return event

    def listen(self, after: str | None) -> AsyncIterator[list[Event]]:
        """Tail the collection from the read position: the rules (where a cursor starts, what
        one batch is, how a cursor ends) are :meth:`Tail.read
        <tbone.dispatch.channels.mongo_tail.Tail.read>`'s."""
        return self._tail.read(after)

    async def read_history(self, since: str | None) -> History:
        """The events kept in the collection after ``since``, in insert order.

        ``complete`` is False when the document ``since`` names is no longer kept (rolled out,
        or an id this collection never held): every kept event is returned then. Raises
        ValueError for an id that is not an ObjectId.
        """
        return await self._history.read(since)

    async def history_page(self, since: str | None, *, limit: int, max_bytes: int) -> History:
        """One page of history in insert order, read with two bounded queries.

        The first lists the kept documents' ids and sizes only (a small answer even for a
        full collection) to find where the page starts and ends; the second fetches that page
        (``skip``/``limit`` in ``$natural`` order) and is checked against a roll-over in
        between (then both run again). Needs MongoDB 4.4 or later (``$bsonSize``).
        """
        return await self._history.page(since, limit=limit, max_bytes=max_bytes)

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

    # -- lifecycle ---------------------------------------------------------------------------

    def on_new_loop(self) -> None:
        self._collection.on_new_loop()  # a task of the old loop
        self._tail.restart_from_now()

    async def close_backend(self) -> None:
        # The cursor is killed by listen() as the consumer stops. A channel started again
        # serves new subscribers: it starts from "now", not where the old ones left.
        self._tail.restart_from_now()
        # A create in flight is stopped too, else it outlives the channel and the process
        # waits for it as it exits.
        await self._collection.stop()

    def stats(self) -> dict[str, Any]:
        """The base counters plus ``collection``, ``cursors`` (opened), ``skipped`` (documents
        that were not events) and ``position`` (the last document read). ``gaps`` counts the
        times the read position had rolled out (see :meth:`Channel.report_gap`)."""
        position = self._tail.position
        return {
            **super().stats(),
            "collection": f"{self.db.name}.{self.collection_name}",
            "cursors": self._tail.cursors,
            "skipped": self._docs.skipped,
            "position": None if position is None else str(position),
        }


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
