"""MongoChannel's tail: the consumer's tailable cursor and the read position across cursors.

Rules (``docs/mongo.md``): the cursor starts at the oldest document and skips up to and
including the read position (the last document a cursor of this channel passed; with none
yet, the id the consumer resumes after, else "now"; after a close, "now"), so resuming never
relies on ObjectId order. A position rolled out of the collection before it was read past is a
gap (the channel reports it). Every read is bounded by ``await_time + probe_interval``: a server
that stops answering without closing the socket fails the read, and the consumer re-opens the
cursor with backoff.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol, TypeVar

from tbone.dispatch.channels.mongo_collection import CappedCollection, Documents
from tbone.dispatch.events import Event
from tbone.dispatch.extras import requires
from tbone.dispatch.timeouts import wait_at_most

with requires(__name__, "PyMongo", extra="mongo"):
    from pymongo import CursorType

__all__ = ["Tail"]

logger = logging.getLogger("tbone.dispatch.channels.mongo")

T = TypeVar("T")

#: Seconds allowed for killing a cursor when it is dropped.
CLOSE_TIMEOUT = 5.0


class _PositionLost(RuntimeError):
    """Neither the read position nor the oldest document was found while re-opening."""


class _Channel(Protocol):
    """What the tail needs of its channel."""

    def mark_ready(self) -> None: ...

    def report_gap(self, reason: str) -> None: ...


class Tail:
    """The reading side of one MongoChannel (see the module docstring)."""

    def __init__(
        self,
        channel: _Channel,
        collection: CappedCollection,
        docs: Documents,
        *,
        await_time: float,
        probe_interval: float,
    ) -> None:
        self.channel = channel
        self.collection = collection
        self.docs = docs
        self.await_time = await_time
        self.probe_interval = probe_interval
        # The last document the cursor passed (delivered or not), in insert order: where the
        # next cursor resumes. None: start from "now".
        self.position: Any = None
        self._from_now = False
        # Closed or moved to another event loop: the next cursor starts from "now", not
        # after the last event the old subscribers got.
        self._restarted = False
        #: The driver's tailing cursor while one is open (for diagnostics), else None.
        self.cursor: Any = None
        #: Cursors opened so far.
        self.cursors = 0

    async def read(self, after: str | None) -> AsyncIterator[list[Event]]:
        """Tail the collection from the read position; see the module docstring.

        The position is the last document a cursor of this channel passed; with none yet,
        ``after`` (an event id), else "now" (the newest document); after a close, "now". The
        cursor starts at the oldest document and this skips up to and including the
        position, so resuming never relies on ObjectId order. The documents the driver holds
        at once (one server answer) are yielded as one batch. Returning or raising ends one
        cursor: the consumer loop re-opens it with backoff.
        """
        await self.collection.ensure()
        if self.position is None:
            if after is not None and not self._restarted:
                self.position, self._from_now = self.docs.object_id(after), False
            else:
                self.position, self._from_now = await self._bounded(self.collection.newest()), True
            self._restarted = False
        marker = self.position
        cursor = self.collection.collection.find({}, cursor_type=CursorType.TAILABLE_AWAIT)
        cursor = cursor.max_await_time_ms(int(self.await_time * 1000))
        self.cursors += 1
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
                        self.collection.forget()
                        await self.collection.ensure()
                        marker = await self._bounded(self.collection.insert_marker())
                        self.position, self._from_now = marker, True
                    return
                taken += 1
                if state == "opening":
                    state = await self._bounded(self._locate(marker, doc["_id"]))
                    self.channel.mark_ready()
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
                self.position, self._from_now = docs[-1]["_id"], False
                events = [e for e in map(self.docs.event, docs) if e is not None]
                if events:
                    yield events
        finally:
            self.cursor = None
            await _close_cursor(cursor)

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
        cursor = self.collection.collection.find({"_id": {"$in": [marker, first]}}, {"_id": 1})
        kept = {doc["_id"] async for doc in cursor}
        if marker in kept:
            return "skipping"
        if first in kept:
            self._note_gap(marker)
            return "delivering"
        raise _PositionLost(
            f"channel {self.docs.channel!r}: the read position {marker} and the oldest document "
            "were both rolled out while the cursor opened (the collection turns over very fast: "
            "raise capacity/size); retrying"
        )

    def _note_gap(self, marker: Any) -> None:
        if self._from_now:
            return  # nothing was delivered from there yet: no event is missed
        self.channel.report_gap(
            f"the last document read ({marker}) was rolled out of {self.collection.name} "
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
                f"MongoDB did not answer within {timeout:g}s (collection {self.collection.name})"
            ) from None

    def restart_from_now(self) -> None:
        """The next cursor starts from "now" (the channel closed, or moved to a new loop)."""
        self.position = None
        self._from_now = False
        self._restarted = True


def _retrieved(cursor: Any) -> int:
    """Documents the driver received for ``cursor`` so far (PyMongo's, or Motor's PyMongo one)."""
    retrieved: Any = getattr(cursor, "retrieved", None)
    if retrieved is None:
        retrieved = getattr(getattr(cursor, "delegate", None), "retrieved", 0)
    return int(retrieved)


async def _close_cursor(cursor: Any) -> None:
    # Kills the server cursor; bounded so an unreachable server cannot hold up a close.
    try:
        await wait_at_most(cursor.close(), CLOSE_TIMEOUT)
    except Exception as exc:  # the cursor is gone with its connection anyway
        logger.debug("closing a cursor failed: %s: %s", type(exc).__name__, exc)
