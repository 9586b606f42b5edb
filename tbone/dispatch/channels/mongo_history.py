"""MongoChannel's history: the events kept in the collection after an id, whole or in pages.

Read in insert order (``$natural``), never by ObjectId order: ids are made by each client and
are not ordered across processes. History after an id is complete while the document with that
id is still kept.
"""

from __future__ import annotations

from typing import Any

from tbone.dispatch.channels.mongo_collection import CappedCollection, Documents
from tbone.dispatch.events import Event, History

__all__ = ["PAGE_ATTEMPTS", "StoredHistory"]

#: Tries to read one history page when the collection keeps rolling over meanwhile.
PAGE_ATTEMPTS = 3


class StoredHistory:
    """The history of ``collection``, its documents read as ``docs``."""

    def __init__(self, collection: CappedCollection, docs: Documents) -> None:
        self.collection = collection
        self.docs = docs

    async def read(self, since: str | None) -> History:
        """The events kept in the collection after ``since``, in insert order.

        ``complete`` is False when the document ``since`` names is no longer kept (rolled out,
        or an id this collection never held): every kept event is returned then. Raises
        ValueError for an id that is not an ObjectId.
        """
        marker = None if since is None else self.docs.object_id(since)
        await self.collection.ensure()
        found = marker is None
        kept: list[Event] = []
        async for doc in self.collection.collection.find({}).sort("$natural", 1):
            if marker is not None and doc["_id"] == marker:
                found, kept = True, []
                continue
            event = self.docs.event(doc)
            if event is not None:
                kept.append(event)
        return History(kept, complete=found)

    async def page(self, since: str | None, *, limit: int, max_bytes: int) -> History:
        """One page of history in insert order, read with two bounded queries.

        The first lists the kept documents' ids and sizes only (a small answer even for a
        full collection) to find where the page starts and ends; the second fetches that page
        (``skip``/``limit`` in ``$natural`` order) and is checked against a roll-over in
        between (then both run again). Needs MongoDB 4.4 or later (``$bsonSize``).
        """
        marker = None if since is None else self.docs.object_id(since)
        await self.collection.ensure()
        for _attempt in range(PAGE_ATTEMPTS):
            sizes = self.collection.collection.find(
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
            f"channel {self.docs.channel!r}: the collection {self.collection.name} rolled over "
            f"while a history page was read, {PAGE_ATTEMPTS} times in a row (raise capacity/size)"
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
            page = self.collection.collection.find(
                {}, sort=[("$natural", 1)], skip=start, limit=stop - start
            )
            docs = [doc async for doc in page]
            if not docs or docs[0]["_id"] != index[start][0]:
                return None
            events = [e for e in map(self.docs.event, docs) if e is not None]
            more = stop < len(index)
            if events or not more:
                return events, more
            start = stop
