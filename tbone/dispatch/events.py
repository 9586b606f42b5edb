"""Events and the JSON frames that carry them to clients.

Server-to-client frames (``docs/protocol.md``)::

    {"type": "event", "payload": {"name": ..., "data": ..., "id": ..., "channel": ...}}
    {"type": "recovered", "payload": {"channel": ..., "complete": true|false}}
    {"type": "error", "payload": {"code": ..., "message": ...}}
    {"type": "pong"}
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tbone.dispatch import jsonenc
from tbone.dispatch.errors import MessageTooLarge
from tbone.dispatch.wire import prepare

__all__ = [
    "EVENT_NAME_RULE",
    "MAX_EVENT_NAME",
    "Event",
    "History",
    "MessageTooLarge",
    "error_frame",
    "event_frame",
    "pong_frame",
    "recovered_frame",
    "valid_event_name",
]

#: The longest event name the protocol carries.
MAX_EVENT_NAME = 200
_EVENT_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,200}")
#: The rule, in the words of the errors that enforce it.
EVENT_NAME_RULE = f"1 to {MAX_EVENT_NAME} characters of A-Z a-z 0-9 _ . : -"


def valid_event_name(name: object) -> bool:
    """True for a str of 1 to 200 characters, each one of ``A-Z a-z 0-9 _ . : -``.

    The protocol's rule (docs/protocol.md, "Event names"): a client can subscribe to such a
    name only, so channels refuse to publish any other.
    """
    return isinstance(name, str) and _EVENT_NAME.fullmatch(name) is not None


# The parts of an event frame around its name, data, id and channel (``jsonenc``'s output for
# Event.to_dict(): compact, keys in that order). All ASCII: lengths are the same in str and bytes.
_HEAD = b'{"type":"event","payload":{"name":'
_DATA = b',"data":'
_ID = b',"id":'
_CHANNEL = b',"channel":'
_END = b"}}"

#: Event._data of an event made by Event.from_json until its data is read.
_UNDECODED: Any = object()


class Event:
    """One published event: its ``name``, ``data``, channel-ordered ``id`` and ``channel``.

    The wire frame is encoded once, the first time :attr:`frame` is read, and then shared by
    every subscriber. Events are immutable by convention: do not change ``data`` after
    publishing. Backends that hold the data as JSON text already make events with
    :meth:`from_json`, which builds the frame from that text and decodes ``data`` only when
    it is read.
    """

    # Few slots on purpose: channels hold thousands of events (history, catch-up windows).
    __slots__ = ("_data", "_frame", "_size", "_wire", "channel", "id", "name")

    def __init__(self, name: str, data: Any, id: str, channel: str) -> None:
        self.name = name
        self._data = data
        self.id = id
        self.channel = channel
        self._frame: str | None = None
        self._size = 0
        self._wire: dict[int | None, bytes] | None = None  # wire(): the variants built

    @classmethod
    def from_json(
        cls, name: str, payload: bytes | str, id: str, channel: str, *, data: Any = _UNDECODED
    ) -> Event:
        """An event whose data is the JSON text ``payload``, as :mod:`~tbone.dispatch.jsonenc`
        encodes it (compact, UTF-8 as is): what a backend stored.

        The frame is built from ``payload`` without decoding it (:func:`event_frame`), byte
        for byte what encoding the decoded data gives, so fan-out never decodes. ``data`` is
        decoded on first read and kept; pass ``data=`` when the value is at hand (the
        publisher's), and it is used as is. Raises UnicodeDecodeError for bytes that are not
        UTF-8; JSON that does not parse raises ValueError only when ``data`` is read.
        """
        raw = event_frame(
            name, payload.encode() if isinstance(payload, str) else payload, id, channel
        )
        event = cls(name, data, id, channel)
        event._frame = raw.decode()
        event._size = len(raw)
        return event

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

    @property
    def data(self) -> Any:
        """The event's data; for an event made by :meth:`from_json`, decoded on first read."""
        data = self._data
        if data is _UNDECODED:
            data = self._data = jsonenc.loads(self._payload())
        return data

    def _payload(self) -> str:
        # The data's JSON text is in the frame, between the name and the id: cut it out
        # rather than keep a second copy of it in every event.
        frame = self.frame
        start = len(_HEAD) + len(jsonenc.dumps(self.name)) + len(_DATA)
        after = len(_ID) + len(jsonenc.dumps(self.id)) + len(_CHANNEL)
        return frame[start : -(after + len(jsonenc.dumps(self.channel)) + len(_END))]

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

    def wire(self, window_bits: int | None) -> bytes:
        """The frame's websocket wire bytes, built once per event and variant (see
        :mod:`tbone.dispatch.wire`): plain for None, else deflated with a ``window_bits``
        window, for connections without context takeover."""
        built = self._wire
        if built is None:
            built = self._wire = {}
        data = built.get(window_bits)
        if data is None:
            data = built[window_bits] = prepare(self.frame, window_bits)
        return data

    @property
    def size(self) -> int:
        """Size of :attr:`frame` in UTF-8 bytes."""
        if self._frame is None:
            self.frame  # noqa: B018 - encodes and records the size
        return self._size


def event_frame(name: str, payload: bytes, id: str, channel: str) -> bytes:
    """The event frame for data already encoded as JSON (``payload``), without re-encoding it.

    Byte for byte what :attr:`Event.frame` gives for the decoded data when ``payload`` is
    what :mod:`~tbone.dispatch.jsonenc` encodes (see :meth:`Event.from_json`).
    """
    return b"".join(
        (
            _HEAD,
            jsonenc.dumps_bytes(name),
            _DATA,
            payload,
            _ID,
            jsonenc.dumps_bytes(id),
            _CHANNEL,
            jsonenc.dumps_bytes(channel),
            _END,
        )
    )


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
