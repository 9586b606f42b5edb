"""The demo's resource: a small in-memory item store that signals every change.

This is TBone's ``MongoCollectionMixin`` pattern in miniature: the store sends ``post_save``
after an item is stored and ``post_delete`` after one is removed; it knows nothing of
channels. :func:`publish_changes` connects receivers that turn those signals into
``resource_create`` / ``resource_delete`` events on a channel, which every subscribed browser
receives.

Each process keeps its own store. With a shared backend (``uvicorn demo:app --workers 2`` and
Redis) :func:`mirror_changes` keeps every process's store in step: an in-process subscription
to the same events applies those made by other processes (the channel's history first, at
startup), so a page gets the same list from any worker.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from tbone.dispatch import Channel, Signal
from tbone.dispatch.channels import EventStream

__all__ = [
    "Item",
    "ItemError",
    "ItemStore",
    "StoreFull",
    "mirror_changes",
    "post_delete",
    "post_save",
    "publish_changes",
]

#: Sent as ``send(sender=store, instance=item, created=True)`` after an item is stored.
post_save = Signal("post_save", doc="An item was stored (created=True for a new one).")
#: Sent as ``send(sender=store, instance=item)`` after an item is removed.
post_delete = Signal("post_delete", doc="An item was removed.")

logger = logging.getLogger("demo")

MAX_NAME = 80
MAX_NOTE = 200


class ItemError(ValueError):
    """An item's fields are not acceptable; ``field`` names the one at fault."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class StoreFull(RuntimeError):
    """The store holds ``limit`` items already; delete some first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the demo store holds at most {limit} items; delete some first")


@dataclass(frozen=True)
class Item:
    """One stored item. ``id`` is unique across processes (workers share the channel)."""

    id: str
    name: str
    note: str
    created: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate(fields: Any) -> tuple[str, str]:
    """Check a client's fields and return ``(name, note)``; raise :class:`ItemError`.

    ``name`` is required (1 to 80 characters once trimmed); ``note`` is optional (at most 200);
    nothing else is accepted, so a typo in a field name is an error rather than lost input.
    """
    if not isinstance(fields, dict):
        raise ItemError("", 'send a JSON object, e.g. {"name": "milk", "note": "2 litres"}')
    unknown = sorted(set(fields) - {"name", "note"})
    if unknown:
        raise ItemError(unknown[0], f"unknown field(s) {unknown}; an item has 'name' and 'note'")
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ItemError("name", "'name' is required: a non-empty string")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise ItemError("name", f"'name' has {len(name)} characters; the limit is {MAX_NAME}")
    note = fields.get("note", "")
    if note is None:
        note = ""
    if not isinstance(note, str):
        raise ItemError("note", "'note' must be a string")
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise ItemError("note", f"'note' has {len(note)} characters; the limit is {MAX_NOTE}")
    return name, note


class ItemStore:
    """Items in insertion order, at most ``limit`` of them.

    ``create`` and ``delete`` await their signal's receivers before returning, so once an
    HTTP response is sent the event is in the channel (published, not necessarily delivered).
    """

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit
        self._items: dict[str, Item] = {}
        self._ids = itertools.count(1)
        # Ids carry a per-process prefix, so two workers never hand out the same one.
        self._prefix = uuid.uuid4().hex[:6]

    def __len__(self) -> int:
        return len(self._items)

    def list(self) -> list[Item]:
        return list(self._items.values())

    def get(self, pk: str) -> Item | None:
        return self._items.get(pk)

    async def create(self, fields: Any) -> Item:
        """Validate ``fields``, store the item and send ``post_save``; return the item.

        Raises :class:`ItemError` for bad fields and :class:`StoreFull` at the limit.
        """
        name, note = validate(fields)
        if len(self._items) >= self.limit:
            raise StoreFull(self.limit)
        item = Item(f"{self._prefix}-{next(self._ids)}", name, note, round(time.time(), 3))
        self._items[item.id] = item
        await post_save.send(sender=self, instance=item, created=True)
        return item

    def apply(self, event: str, data: Any) -> None:
        """Apply a change another process made (no signal: that process published it).

        Idempotent: a create of a known id or a delete of an unknown one does nothing, so this
        process's own events, which come back through a shared backend, change nothing.
        """
        if event == "resource_create" and isinstance(data, dict):
            pk = data.get("id")
            if isinstance(pk, str) and pk not in self._items:
                self._items[pk] = Item(
                    pk, str(data.get("name", "")), str(data.get("note", "")), data.get("created", 0)
                )
        elif event == "resource_delete" and isinstance(data, dict):
            self._items.pop(str(data.get("id")), None)

    async def delete(self, pk: str) -> Item | None:
        """Remove the item ``pk`` and send ``post_delete``; return it (None if unknown)."""
        item = self._items.pop(pk, None)
        if item is not None:
            await post_delete.send(sender=self, instance=item)
        return item


def publish_changes(store: ItemStore, channel: Channel) -> None:
    """Publish ``store``'s changes on ``channel``: the receivers of the demo's signals.

    ``resource_create`` carries the item; ``resource_delete`` carries ``{"id", "name"}``.
    Connected for this store only (``sender=store``), so two apps in one process (tests) do
    not publish each other's items.
    """

    async def on_save(sender: ItemStore, instance: Item, created: bool, **_: Any) -> None:
        if created:
            await channel.publish("resource_create", instance.to_dict())

    async def on_delete(sender: ItemStore, instance: Item, **_: Any) -> None:
        await channel.publish("resource_delete", {"id": instance.id, "name": instance.name})

    # weak=False: the closures live only here; the store (the sender) is held weakly, so the
    # connections go away with it.
    post_save.connect(on_save, sender=store, weak=False)
    post_delete.connect(on_delete, sender=store, weak=False)


async def mirror_changes(
    store: ItemStore, events: EventStream, caught_up: asyncio.Event | None = None
) -> None:
    """Apply the ``resource_create`` / ``resource_delete`` events of ``events`` to ``store``.

    ``events`` is an in-process subscription (``channel.subscription(*EVENTS, history=True)``):
    the store first catches up with the channel's history, then follows live events, so
    every process of a shared backend lists the same items. ``caught_up`` is set once the
    history is applied. Returns when the subscription ends.
    """
    async for event in events:
        store.apply(event.name, event.data)
        if caught_up is not None and not events.queued and events.complete is not None:
            caught_up.set()
