"""The Python client's sans-I/O part: what a connection asks for, what each frame means, and
what to do when a connection ends. No socket, no task: :mod:`tbone_asgi.client` does the I/O
around it, and tests feed it frames.

The rules are :mod:`tbone_asgi.client`'s (``docs/client.md`` has the long form): events are
taken in order, each once, and ``last_id`` moves only once an event is queued; a reconnect
asks for every event after ``last_id``; a close with a policy code is a refusal; a server that
cannot read our id (1008 after a ``bad_since`` error) makes the client start from now, saying
so with a ``Recovered(complete=False)``.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tbone.dispatch.checks import whole_number
from tbone.dispatch.events import Event

__all__ = [
    "REFUSING_CLOSE_CODES",
    "Backoff",
    "ClientState",
    "Recovered",
    "check_events",
    "check_url",
]

logger = logging.getLogger("tbone_asgi.client")

#: Close codes that mean "do not come back with the same request": retrying cannot help.
REFUSING_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})

# The protocol's rule for event names (tbone.dispatch.protocol.valid_event_name), checked here
# so a bad name fails at once instead of being refused by the server at every reconnect.
_EVENT_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,200}")


@dataclass(frozen=True)
class Recovered:
    """The end of a resume: every event after ``since`` that the server still held came first.

    ``complete`` is False only when events were lost: the server's history did not reach
    back to ``since`` (the server restarted with in-memory history, or it was trimmed), or
    was trimmed past the replay before it could be sent. A long replay is never cut short.
    It is also False, with ``channel`` empty, when the server could not read ``since`` at all
    (a ``bad_since`` error: say, the channel's backend changed): the client then starts again
    from the current events.
    """

    channel: str
    complete: bool
    since: str


def check_events(events: Iterable[str] | None) -> list[str]:
    """The event names as a list; TypeError for a str, ValueError for a name the protocol
    does not allow."""
    if events is None:
        return []
    if isinstance(events, str):
        raise TypeError(
            f"events must be a list of event names, not the string {events!r}: events=[{events!r}]"
        )
    names = list(events)
    for name in names:
        if not isinstance(name, str) or not _EVENT_NAME.fullmatch(name):
            raise ValueError(
                f"bad event name {name!r}: names are 1 to 200 characters of A-Z a-z 0-9 _ . : -"
            )
    return names


def check_url(url: str) -> str:
    """``url`` if it is a ws:// or wss:// URL; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(
            f"{url!r} is not a websocket URL: use ws://host:port/path (or wss:// for TLS)"
        )
    return url


def call(callback: Callable[[Any], Any], value: Any) -> None:
    """Call a user's callback; a failing one is the caller's bug: log it and go on."""
    try:
        callback(value)
    except Exception:
        logger.exception("%r raised; the subscription goes on", callback)


class Backoff:
    """Reconnect timing: exponential backoff with full jitter, and the retries left.

    ``retries`` failed attempts in a row are retried (None: forever); an attempt that opens a
    connection starts the count again. The delay starts afresh only after a connection that
    worked (:meth:`worked`): a server that accepts and closes at once gets no reconnect storm.
    """

    def __init__(self, backoff: tuple[float, float], retries: int | None) -> None:
        whole_number("retries", retries, minimum=0, optional=True)
        if not 0 < backoff[0] <= backoff[1]:
            raise ValueError(f"backoff must be (first, max) with 0 < first <= max, got {backoff}")
        self.backoff = backoff
        self.retries = retries
        self.failures = 0
        self.delay = backoff[0]

    def opened(self) -> None:
        """A connection opened: failed attempts are counted afresh."""
        self.failures = 0

    def worked(self) -> None:
        """A connection brought something or stayed up: the delay starts afresh."""
        self.delay = self.backoff[0]

    def failed(self) -> None:
        """An attempt failed to open a connection."""
        self.failures += 1

    def exhausted(self) -> bool:
        """More attempts failed in a row than ``retries`` allows."""
        return self.retries is not None and self.failures > self.retries

    def next_wait(self) -> float:
        """Seconds to wait before the next attempt (full jitter: clients that lost the same
        server do not come back in step); the delay doubles up to ``backoff[1]``."""
        delay = self.delay
        self.delay = min(delay * 2, self.backoff[1])
        return random.uniform(delay / 2, delay)


#: What :meth:`ClientState.receive` found in a frame besides an event.
Pong = Literal["pong"]
#: What to do when a connection ended (:meth:`ClientState.closed`).
Next = Literal["start over", "refused", "retry"]


class ClientState:
    """One subscription's state across its connections (see the module docstring)."""

    def __init__(self, url: str, events: Iterable[str] | None, since: str | None) -> None:
        self.url = check_url(url)
        self.events = check_events(events)
        #: Id of the last event queued; a reconnect resumes after it.
        self.last_id: str | None = since
        #: Every ``recovered`` frame received, oldest first.
        self.recoveries: list[Recovered] = []
        #: Every ``error`` frame's payload received, oldest first.
        self.errors: list[dict[str, Any]] = []
        #: Connections opened so far.
        self.connections = 0
        #: The current connection brought an event or a resume's end.
        self.progress = False
        self._bad_since = False  # the server could not read our since on this connection
        self._resumed_from: str | None = None

    def connect_url(self) -> str:
        """The URL of the next connection: ``events`` and, to resume, ``since`` in the query."""
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("events", "since")]
        if self.events:
            query.append(("events", ",".join(self.events)))
        if self.last_id is not None:
            query.append(("since", self.last_id))
        return urlunsplit(parts._replace(query=urlencode(query, safe=",")))

    def opened(self) -> None:
        """A connection opened (made with :meth:`connect_url`)."""
        self.connections += 1
        self.progress = False
        self._bad_since = False
        self._resumed_from = self.last_id

    def changes(self, asked: list[str]) -> list[dict[str, Any]]:
        """The frames that bring the server from ``asked`` (the URL's events) to ``events``:
        subscribe()/unsubscribe() calls made during the handshake missed the URL."""
        added = [n for n in self.events if n not in asked]
        removed = [n for n in asked if n not in self.events]
        frames = []
        if added:
            frames.append({"type": "subscribe", "payload": {"events": added}})
        if removed:
            frames.append({"type": "unsubscribe", "payload": {"events": removed}})
        return frames

    def receive(self, message: str | bytes) -> Event | Recovered | Pong | dict[str, Any] | None:
        """What the frame ``message`` means: an event to queue (then :meth:`queued`), the end
        of a resume (recorded), a pong, an error frame's payload (recorded), or None (a frame
        this client ignores)."""
        frame = self._decode(message)
        if frame is None:
            return None
        kind = frame.get("type")
        payload = frame.get("payload")
        if kind == "event" and isinstance(payload, dict):
            return Event(
                str(payload.get("name")),
                payload.get("data"),
                str(payload.get("id")),
                str(payload.get("channel")),
            )
        if kind == "recovered" and isinstance(payload, dict):
            self.progress = True
            return self.recovered(payload, self._resumed_from)
        if kind == "pong":
            return "pong"
        if kind == "error" and isinstance(payload, dict):
            if payload.get("code") == "bad_since":
                self._bad_since = True
            self.errors.append(payload)
            logger.warning("%s: server error frame: %s", self.url, payload)
            return payload
        return None

    def queued(self, event: Event) -> None:
        """``event`` is queued for the reader: it counts as seen."""
        self.last_id = event.id
        self.progress = True

    def closed(self, code: int | None) -> Next:
        """The server closed the connection with ``code``: what to do next ("start over"
        records a :class:`Recovered`, the last of :attr:`recoveries`)."""
        if code == 1008 and self._bad_since and self.last_id is not None:
            # The server cannot read our id (another backend, or a bad since= given to us):
            # history cannot be checked, so say so and start from now.
            self.recovered({"channel": "", "complete": False}, self.last_id)
            self.last_id = None
            return "start over"
        if code is not None and (code in REFUSING_CLOSE_CODES or 4000 <= code <= 4999):
            return "refused"
        return "retry"

    def recovered(self, payload: dict[str, Any], since: str | None) -> Recovered:
        """Record a ``recovered`` frame (or the client's own, starting over)."""
        rec = Recovered(str(payload.get("channel")), bool(payload.get("complete")), since or "")
        self.recoveries.append(rec)
        if not rec.complete:
            logger.warning(
                "%s: history did not reach back to %s; events were lost", self.url, since
            )
        return rec

    def _decode(self, message: str | bytes) -> dict[str, Any] | None:
        try:
            frame = json.loads(message)
        except ValueError:
            logger.warning("%s: ignoring a frame that is not JSON: %.80r", self.url, message)
            return None
        if not isinstance(frame, dict):
            logger.warning("%s: ignoring a frame that is not an object: %.80r", self.url, frame)
            return None
        return frame
