"""Events and the JSON frames that carry them to clients.

Server-to-client frames (``docs/protocol.md``)::

    {"type": "event", "payload": {"name": ..., "data": ..., "id": ..., "channel": ...}}
    {"type": "recovered", "payload": {"channel": ..., "complete": true|false}}
    {"type": "error", "payload": {"code": ..., "message": ...}}
    {"type": "pong"}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tbone.dispatch import jsonenc
from tbone.dispatch.errors import MessageTooLarge

__all__ = [
    "Event",
    "History",
    "MessageTooLarge",
    "error_frame",
    "event_frame",
    "pong_frame",
    "recovered_frame",
]


class Event:
    """One published event: its ``name``, ``data``, channel-ordered ``id`` and ``channel``.

    The wire frame is encoded once, the first time :attr:`frame` is read, and then shared by
    every subscriber. Events are immutable by convention: do not change ``data`` after
    publishing.
    """

    __slots__ = ("_frame", "_size", "channel", "data", "id", "name")

    def __init__(self, name: str, data: Any, id: str, channel: str) -> None:
        self.name = name
        self.data = data
        self.id = id
        self.channel = channel
        self._frame: str | None = None
        self._size = 0

    def __repr__(self) -> str:
        return f"Event(name={self.name!r}, id={self.id!r}, channel={self.channel!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.id, self.channel, self.name, self.data) == (
            other.id,
            other.channel,
            other.name,
            other.data,
        )

    __hash__ = None  # type: ignore[assignment]  # data may be unhashable

    def to_dict(self) -> dict[str, Any]:
        """The frame as a dict (what a client receives, decoded)."""
        return {
            "type": "event",
            "payload": {
                "name": self.name,
                "data": self.data,
                "id": self.id,
                "channel": self.channel,
            },
        }

    @property
    def frame(self) -> str:
        """The JSON text of the wire frame, encoded on first use and cached."""
        if self._frame is None:
            raw = jsonenc.dumps_bytes(self.to_dict())
            self._size = len(raw)
            self._frame = raw.decode()
        return self._frame

    @property
    def size(self) -> int:
        """Size of :attr:`frame` in UTF-8 bytes."""
        if self._frame is None:
            self.frame  # noqa: B018 - encodes and records the size
        return self._size


def event_frame(name: str, payload: bytes, id: str, channel: str) -> bytes:
    """The event frame for data already encoded as JSON (``payload``), without re-encoding it.

    Byte for byte what :attr:`Event.frame` gives for the decoded data: backends that store
    the JSON text (Redis, MongoDB) and MemoryChannel build frames with it.
    """
    return b"".join(
        (
            b'{"type":"event","payload":{"name":',
            jsonenc.dumps_bytes(name),
            b',"data":',
            payload,
            b',"id":',
            jsonenc.dumps_bytes(id),
            b',"channel":',
            jsonenc.dumps_bytes(channel),
            b"}}",
        )
    )


def stored_event(name: str, data: Any, payload: bytes, id: str, channel: str) -> Event:
    """An Event whose frame is built from its stored JSON ``payload`` (see :func:`event_frame`)."""
    event = Event(name, data, id, channel)
    frame = event_frame(name, payload, id, channel)
    event._size = len(frame)
    event._frame = frame.decode()
    return event


class History:
    """What a channel still holds after a given id: ``events`` and whether that is ``complete``.

    ``complete`` is False when the channel's history no longer reaches back to the id asked
    for (it was trimmed, or the id belongs to an earlier life of the channel), so events may
    have been missed. ``more`` is True when this is one page of a longer history (the events
    after the last one here are read with another call). Iterating a History iterates its
    events.
    """

    __slots__ = ("complete", "events", "more")

    def __init__(self, events: Sequence[Event], complete: bool, *, more: bool = False) -> None:
        self.events = list(events)
        self.complete = complete
        self.more = more

    def __iter__(self) -> Any:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        more = ", more=True" if self.more else ""
        return f"History(events={len(self.events)}, complete={self.complete}{more})"


def recovered_frame(channel: str, complete: bool) -> str:
    """The frame that ends a resume: every event after ``since`` that history held came first."""
    return jsonenc.dumps(
        {"type": "recovered", "payload": {"channel": channel, "complete": complete}}
    )


def error_frame(code: str, message: str) -> str:
    """An error answer to a client frame; the connection stays open."""
    return jsonenc.dumps({"type": "error", "payload": {"code": code, "message": message}})


def pong_frame() -> str:
    """The answer to ``{"type": "ping"}``."""
    return '{"type":"pong"}'
