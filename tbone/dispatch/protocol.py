"""The subscribe protocol, independent of any web framework.

One :class:`ProtocolSession` serves one websocket connection. The serving loop
(:func:`tbone.dispatch.serving.serve`, which every framework's glue calls) checks the
connection with :func:`check_connect`, then calls :meth:`~ProtocolSession.begin` once the
websocket is accepted, :meth:`~ProtocolSession.receive` for every client frame, and
:meth:`~ProtocolSession.end` on disconnect (:meth:`~ProtocolSession.start` does the check and
``begin`` in one call, for code that drives a session itself). ``docs/protocol.md`` has the
long form; in short:

Client to server (JSON text; binary frames must hold UTF-8 JSON)::

    {"type": "subscribe", "payload": {"events": ["a", "b"], "since": "<id>"}}   # since optional
    {"type": "unsubscribe", "payload": {"events": ["a"]}}
    {"type": "ping"}                                                           # -> {"type": "pong"}

Server to client: ``event`` frames, ``recovered`` after a resume, ``pong``, and
``{"type": "error", "payload": {"code": ..., "message": ...}}`` for a frame the server did not
take (the connection stays open). Answers go through the carrier's outbox, so they keep their
place among events: a ``pong`` received after a ``subscribe`` proves the subscription is on.

Rules:

* Event names are 1 to 200 characters of ``A-Z a-z 0-9 _ . : -`` (:func:`valid_event_name`).
* A ``subscribe`` frame is all or nothing: if one of its events is refused, none is subscribed.
* Client data is never published: clients only choose what they receive.
* :meth:`ProtocolSession.receive` never raises for bad input. It answers an error frame, or
  returns a close code: 1009 for a frame over ``Limits.max_frame_bytes``, 1008 after
  ``Limits.max_errors`` bad frames in a row or when the client sends faster than
  ``Limits.max_messages_per_second``.
* A resume (``since``) replays every event history holds after ``since``, however many,
  paced by the client's reading (``complete`` is false only when events were lost), and a
  connection may resume at most ``Limits.max_resumes_per_minute`` times a minute (then:
  error ``too_many_resumes``).
* A history the backend cannot read now (it is down) is the error ``unavailable``: the
  frame's subscriptions are not made; at connect the connection is closed with 1013.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tbone.dispatch import jsonenc
from tbone.dispatch.channels.resume import REPLAY_BYTES, REPLAY_EVENTS, warn_replay_cap
from tbone.dispatch.checks import number, whole_number
from tbone.dispatch.errors import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    CLOSE_REASONS,
    CLOSE_TRY_AGAIN_LATER,
    TBoneError,
)
from tbone.dispatch.events import MAX_EVENT_NAME, error_frame, pong_frame, valid_event_name

if TYPE_CHECKING:
    from tbone.dispatch.carriers import Carrier
    from tbone.dispatch.channels import Channel

__all__ = [
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_REASONS",
    "CLOSE_TRY_AGAIN_LATER",
    "MAX_EVENT_NAME",
    "Authorize",
    "Limits",
    "ProtocolSession",
    "Refused",
    "check_connect",
    "check_event_names",
    "close_reason",
    "valid_event_name",
]

logger = logging.getLogger("tbone.dispatch.protocol")

#: Event ids are opaque to the protocol, but bounded so a client cannot make us parse megabytes.
_MAX_ID = 200

#: ``authorize(connection, event)``: True lets the connection subscribe to ``event``.
Authorize = Callable[[Any, str], bool | Awaitable[bool]]


def check_event_names(events: Collection[str]) -> None:
    """Raise for a server-side list of event names that clients could not use.

    TypeError for a bare str (a common slip for ``["name"]``), ValueError naming the invalid
    names otherwise.
    """
    if isinstance(events, str):
        raise TypeError(f"events must be a collection of names, not the str {events!r}")
    bad = [name for name in events if not valid_event_name(name)]
    if bad:
        raise ValueError(
            f"invalid event names {bad!r}: names are 1 to {MAX_EVENT_NAME} characters "
            "of A-Z a-z 0-9 _ . : -"
        )


@dataclass(frozen=True)
class Limits:
    """What one connection may do. Every limit applies per connection.

    * ``max_frame_bytes`` (64 KiB): a bigger client frame closes the connection with 1009.
    * ``max_events_per_subscribe`` (100): events one subscribe/unsubscribe frame may name.
    * ``max_subscriptions`` (100): events one connection may be subscribed to at once.
    * ``max_errors`` (10): this many bad frames in a row close the connection with 1008; a good
      frame starts the count again.
    * ``max_messages_per_second`` (50): the sustained rate of client frames, a token bucket
      holding ``burst`` frames (default: one second's worth); a client that empties it is
      closed with 1008.
    * ``max_resumes_per_minute`` (10): resumes (``since``, at connect or in a subscribe) one
      connection may make, a token bucket of that many; one more is the error
      ``too_many_resumes`` and subscribes nothing. One resume is one, however long its
      replay.
    * ``max_replay_events`` and ``max_replay_bytes``: deprecated, without effect (a value
      other than the default warns). A resume replays everything history holds after
      ``since``; the channel's history (``history=``, Redis ``maxlen``, the capped
      collection) bounds that work.
    """

    max_frame_bytes: int = 64 * 1024
    max_events_per_subscribe: int = 100
    max_subscriptions: int = 100
    max_errors: int = 10
    max_messages_per_second: float = 50.0
    burst: float | None = None
    max_replay_events: int = REPLAY_EVENTS
    max_replay_bytes: int = REPLAY_BYTES
    max_resumes_per_minute: float = 10.0

    def __post_init__(self) -> None:
        if self.max_replay_events != REPLAY_EVENTS or self.max_replay_bytes != REPLAY_BYTES:
            # Called by the dataclass's __init__: the warning points at who made the Limits.
            warn_replay_cap("Limits.max_replay_events/max_replay_bytes", stacklevel=3)
        # The rule of tbone.dispatch.checks: TypeError for a wrong type, ValueError for a value.
        for field in (
            "max_frame_bytes",
            "max_events_per_subscribe",
            "max_subscriptions",
            "max_errors",
        ):
            whole_number(f"Limits.{field}", getattr(self, field))
        for field in ("max_replay_events", "max_replay_bytes"):  # deprecated: any count
            whole_number(f"Limits.{field}", getattr(self, field), minimum=0)
        for field in ("max_messages_per_second", "max_resumes_per_minute"):
            number(f"Limits.{field}", getattr(self, field), what="a number (float('inf'): none)")
        if self.burst is not None:
            number("Limits.burst", self.burst, what="a number of frames or None (the default)")
        if not self.max_messages_per_second > 0:
            raise ValueError(
                "Limits.max_messages_per_second must be > 0, got "
                f"{self.max_messages_per_second}; use float('inf') for no rate limit"
            )
        if self.burst is not None and not self.burst >= 1:
            raise ValueError(f"Limits.burst must be at least 1 frame, got {self.burst}")
        if not self.max_resumes_per_minute >= 1:
            raise ValueError(
                "Limits.max_resumes_per_minute must be at least 1, got "
                f"{self.max_resumes_per_minute}; use float('inf') for no limit"
            )


class Refused(TBoneError):
    """A connect-time subscription was refused; reject the connection (ASGI: HTTP 403).

    ``code`` is the error code a client would get in an error frame (``forbidden``,
    ``bad_event``, ``not_offered``, ``bad_since``, ``too_many_subscriptions``,
    ``unavailable``), ``event`` the event concerned (or None), ``reason`` a sentence for logs
    and the client. ``close_code``: the close code when the connection was already accepted
    (1008, or 1013 when the backend could not answer: the client should come back later).
    """

    def __init__(
        self,
        code: str,
        reason: str,
        event: str | None = None,
        *,
        close_code: int = CLOSE_POLICY_VIOLATION,
    ) -> None:
        self.code = code
        self.reason = reason
        self.event = event
        self.close_code = close_code
        super().__init__(f"{code}: {reason}")


class _BadFrame(Exception):
    """One client frame the session answers with an error frame (internal)."""

    def __init__(self, code: str, message: str, close_code: int = CLOSE_POLICY_VIOLATION) -> None:
        self.code = code
        self.message = message
        self.close_code = close_code
        super().__init__(f"{code}: {message}")


class ProtocolSession:
    """The subscribe protocol for one connection, whose frames ``carrier`` sends.

    ``events``: the route's fixed events; every client is subscribed to them at connect (when
    it names none) and may not subscribe to others. ``authorize(connection, event)`` (sync or
    async) decides each subscription; ``connection`` is what it is given (the framework's
    websocket or request). ``limits``: see :class:`Limits`.

    Calls for one session must not overlap: the glue awaits each :meth:`receive` before reading
    the next frame, which is also what keeps answers in the client's order.
    """

    def __init__(
        self,
        channel: Channel,
        carrier: Carrier,
        *,
        events: Collection[str] | None = None,
        authorize: Authorize | None = None,
        limits: Limits | None = None,
        connection: Any = None,
    ) -> None:
        if events is not None:
            check_event_names(events)
        self.channel = channel
        self.carrier = carrier
        self.fixed_events: tuple[str, ...] | None = (
            tuple(dict.fromkeys(events)) if events is not None else None
        )
        self.authorize = authorize
        self.limits = limits or Limits()
        self.connection = connection
        self.subscribed: dict[str, None] = {}  # in subscription order
        self.errors = 0  # bad frames in a row
        self.ended = False
        rate = self.limits.max_messages_per_second
        burst = self.limits.burst if self.limits.burst is not None else max(1.0, rate)
        self._frames = _Bucket(burst, rate)
        resumes = self.limits.max_resumes_per_minute
        self._resumes = _Bucket(resumes, resumes / 60.0)

    def __repr__(self) -> str:
        return f"<ProtocolSession {self.channel.name!r} events={list(self.subscribed)}>"

    # -- connect -----------------------------------------------------------------------------

    async def start(
        self,
        events: Iterable[str] = (),
        since: str | None = None,
        *,
        accept: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Subscribe at connect to ``events`` (the route's fixed events when none are named).

        Every event is checked (name, fixed events, ``authorize``) before anything happens;
        the first refusal raises :class:`Refused` and nothing is subscribed, so the caller can
        reject the connection before accepting it (ASGI: HTTP 403). ``accept`` (awaited after
        the checks, before subscribing) lets the glue accept the websocket at the right time:
        with ``since`` the history is sent at once, and a frame must not precede the accept.
        With ``since``, the client gets the missed events, then a ``recovered`` frame.

        One check needs the channel itself: a ``since`` it cannot read is found while resuming,
        after ``accept``. :class:`Refused` (``bad_since``) is raised then too, with nothing
        left subscribed; the glue closes the accepted connection (the ASGI endpoint: 1008).
        """
        names = await _check_connect(
            events, since, self.fixed_events, self.authorize, self.limits, self.connection, self
        )
        if accept is not None:
            await accept()
        await self.begin(names, since)

    async def begin(self, names: Iterable[str], since: str | None = None) -> None:
        """Subscribe at connect to ``names`` as :func:`check_connect` returned them.

        For glue that checks a connection before its websocket exists (Sanic answers HTTP 403
        from a request middleware, before the upgrade): it calls :func:`check_connect` there
        and this once the websocket is up. The names are not checked again, so ``authorize``
        runs once per event. With ``since`` the client gets the missed events, then a
        ``recovered`` frame; a ``since`` the channel cannot read raises :class:`Refused` as
        :meth:`start` does, with nothing left subscribed.
        """
        wanted = list(names)
        if not wanted:
            return
        if since is None:
            self._subscribe(wanted)
            return
        try:
            await self._resume(wanted, since)
        except _BadFrame as exc:
            raise Refused(exc.code, exc.message, close_code=exc.close_code) from None

    # -- client frames -----------------------------------------------------------------------

    async def receive(self, message: str | bytes) -> int | None:
        """Handle one client frame. Returns a close code (1008, 1009) or None to keep going.

        Never raises for bad input: a frame the session does not take is answered with an
        error frame (through the carrier, in order with events). Awaits ``authorize`` and, for
        a resume, the channel's history read.
        """
        if self.ended:
            return None
        if not self._frames.take():
            logger.info(
                "%r: over %s frames/s; closing with 1008", self, self.limits.max_messages_per_second
            )
            return CLOSE_POLICY_VIOLATION
        if _too_big(message, self.limits.max_frame_bytes):
            return CLOSE_MESSAGE_TOO_BIG
        try:
            await self._handle(message)
        except _BadFrame as exc:
            self.errors += 1
            self.carrier.offer(error_frame(exc.code, exc.message))
            if self.errors >= self.limits.max_errors:
                logger.info("%r: %d bad frames in a row; closing with 1008", self, self.errors)
                return CLOSE_POLICY_VIOLATION
            return None
        self.errors = 0
        return None

    # -- disconnect --------------------------------------------------------------------------

    def end(self) -> None:
        """Unsubscribe the connection from the channel entirely. Safe to call again.

        Also clears a subscription that a resume made before it was cut short (the client
        left while history was read), which ``subscribed`` does not list yet.
        """
        self.ended = True
        self.subscribed = {}
        self.channel.unsubscribe_all(self.carrier)

    async def close(
        self, code: int, reason: str | None = None, *, flush_timeout: float = 5.0
    ) -> None:
        """End the session and close the connection with ``code``.

        Frames already queued (the error frames that explain a 1008) are sent first, waiting
        at most ``flush_timeout`` seconds; ``reason`` defaults to the code's usual one.
        """
        self.end()
        await self.carrier.flush(flush_timeout)
        await self.carrier.close(code, close_reason(reason or CLOSE_REASONS.get(code, "")))

    async def reject(self, refused: Refused, *, flush_timeout: float = 5.0) -> None:
        """Refuse after the handshake was accepted: an error frame, then close 1008."""
        self.carrier.offer(error_frame(refused.code, refused.reason))
        await self.close(refused.close_code, refused.code, flush_timeout=flush_timeout)

    # -- internals ---------------------------------------------------------------------------

    async def _handle(self, message: str | bytes) -> None:
        try:
            frame = jsonenc.loads(message)
        except (ValueError, RecursionError, UnicodeDecodeError) as exc:
            # RecursionError: the standard library's parser on very deep nesting.
            raise _BadFrame("bad_json", f"the frame is not valid JSON ({_short(exc)})") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            raise _BadFrame("bad_frame", 'a frame is a JSON object with a "type": {"type": "ping"}')
        kind = frame["type"]
        if kind == "ping":
            self.carrier.offer(pong_frame())
        elif kind == "subscribe":
            await self._on_subscribe(frame.get("payload"))
        elif kind == "unsubscribe":
            self._on_unsubscribe(frame.get("payload"))
        else:
            raise _BadFrame(
                "unknown_type",
                f"unknown frame type {kind[:40]!r}; expected subscribe, unsubscribe or ping",
            )

    def _event_list(self, payload: Any, kind: str) -> list[str]:
        if not isinstance(payload, dict):
            raise _BadFrame(
                "bad_payload", f'{kind} needs a payload object: {{"events": ["name", ...]}}'
            )
        events = payload.get("events")
        if not isinstance(events, list) or not events:
            raise _BadFrame("bad_payload", f'{kind} needs "events": a non-empty list of names')
        if len(events) > self.limits.max_events_per_subscribe:
            raise _BadFrame(
                "too_many_events",
                f"{len(events)} events in one frame, at most "
                f"{self.limits.max_events_per_subscribe}",
            )
        for name in events:
            problem = self._check_name(name, fixed=False)
            if problem is not None:
                raise problem
        return list(dict.fromkeys(events))

    async def _on_subscribe(self, payload: Any) -> None:
        names = self._event_list(payload, "subscribe")
        since = payload.get("since")
        if since is not None and not _valid_id(since):
            raise _BadFrame(
                "bad_since", f'"since" must be an event id (a str of at most {_MAX_ID} chars)'
            )
        for name in names:
            problem = self._check_name(name)
            if problem is not None:
                raise problem
        new = [name for name in names if name not in self.subscribed]
        if len(self.subscribed) + len(new) > self.limits.max_subscriptions:
            raise _BadFrame(
                "too_many_subscriptions",
                f"a connection may hold {self.limits.max_subscriptions} subscriptions; "
                "unsubscribe from some first",
            )
        for name in names:
            if not await self._allowed(name):
                raise _BadFrame("forbidden", f"subscribing to {name!r} is not allowed")
        if since is None:
            self._subscribe(new)
        else:
            await self._resume(names, since)

    def _on_unsubscribe(self, payload: Any) -> None:
        # Names never subscribed are ignored: unsubscribing is idempotent.
        for name in self._event_list(payload, "unsubscribe"):
            if name in self.subscribed:
                del self.subscribed[name]
                self.channel.unsubscribe(name, self.carrier)

    def _subscribe(self, names: Iterable[str]) -> None:
        for name in names:
            try:
                self.channel.subscribe(name, self.carrier)
            except ValueError:  # the carrier closed meanwhile (too slow, or gone)
                return
            self.subscribed[name] = None

    async def _resume(self, names: list[str], since: str) -> None:
        if self.carrier.closed:  # too slow or gone meanwhile: nothing to resume for
            return
        if not self._resumes.take():
            limit = self.limits.max_resumes_per_minute
            raise _BadFrame(
                "too_many_resumes",
                f"at most {limit:g} resumes (subscribe with since) per minute per connection "
                "(Limits.max_resumes_per_minute); subscribe without since, or wait",
            )
        new = [name for name in names if name not in self.subscribed]
        try:
            await self.channel.resume(self.carrier, names, since)
        except ValueError as exc:
            # An id this channel cannot read: undo what resume() subscribed before reading.
            self._undo(new)
            raise _BadFrame("bad_since", f"{_short(exc)}; send an id from an event frame") from None
        except Exception as exc:
            # The backend could not answer (down, timed out): nothing of this frame stays.
            self._undo(new)
            logger.warning("%r: history could not be read: %s: %s", self, type(exc).__name__, exc)
            raise _BadFrame(
                "unavailable",
                "history could not be read now; subscribe again with since, a little later",
                close_code=CLOSE_TRY_AGAIN_LATER,
            ) from None
        for name in names:
            self.subscribed[name] = None

    def _undo(self, names: Iterable[str]) -> None:
        for name in names:
            self.channel.unsubscribe(name, self.carrier)

    def _check_name(self, name: object, *, fixed: bool = True) -> _BadFrame | None:
        return _name_problem(name, self.fixed_events if fixed else None)

    async def _allowed(self, name: str) -> bool:
        return await _allowed(self.authorize, self.connection, name, self)


async def check_connect(
    events: Iterable[str] = (),
    since: str | None = None,
    *,
    fixed_events: Collection[str] | None = None,
    authorize: Authorize | None = None,
    limits: Limits | None = None,
    connection: Any = None,
) -> list[str]:
    """The checks :meth:`ProtocolSession.start` makes before ``accept``, without a session.

    Returns the event names to subscribe (the fixed events when none are named); raises
    :class:`Refused` for the first problem, as ``start`` does. Nothing is subscribed and no
    frame is sent, so it runs before the websocket exists; pass what it returns to
    :meth:`ProtocolSession.begin` once the connection is up. The options mean what they
    mean for :class:`ProtocolSession` (``fixed_events`` is its ``events``).
    """
    if fixed_events is not None:
        check_event_names(fixed_events)
        fixed_events = tuple(dict.fromkeys(fixed_events))
    return await _check_connect(
        events, since, fixed_events, authorize, limits or Limits(), connection, "at connect"
    )


async def _check_connect(
    events: Iterable[str],
    since: str | None,
    fixed_events: Collection[str] | None,
    authorize: Authorize | None,
    limits: Limits,
    connection: Any,
    who: object,
) -> list[str]:
    if isinstance(events, str):
        events = [events] if events else []
    names = list(dict.fromkeys(events))
    if not names and fixed_events is not None:
        names = list(fixed_events)
    if since is not None and not names:
        raise Refused("bad_since", "since needs events to resume: add events=a,b")
    if since is not None and not _valid_id(since):
        raise Refused("bad_since", f"since must be an event id of at most {_MAX_ID} chars")
    if len(names) > limits.max_subscriptions:
        raise Refused(
            "too_many_subscriptions",
            f"{len(names)} events asked, at most {limits.max_subscriptions} allowed",
        )
    for name in names:
        problem = _name_problem(name, fixed_events)
        if problem is not None:
            raise Refused(problem.code, problem.message, name if isinstance(name, str) else None)
        if not await _allowed(authorize, connection, name, who):
            raise Refused("forbidden", f"subscribing to {name!r} is not allowed", name)
    return names


def _name_problem(name: object, fixed_events: Collection[str] | None) -> _BadFrame | None:
    if not valid_event_name(name):
        return _BadFrame(
            "bad_event",
            f"event names are 1 to {MAX_EVENT_NAME} characters of A-Z a-z 0-9 _ . : -, "
            f"got {_clip(name)}",
        )
    if fixed_events is not None and name not in fixed_events:
        return _BadFrame(
            "not_offered",
            f"this endpoint offers only {list(fixed_events)!r}, not {name!r}",
        )
    return None


async def _allowed(authorize: Authorize | None, connection: Any, name: str, who: object) -> bool:
    if authorize is None:
        return True
    try:
        verdict = authorize(connection, name)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except Exception:
        # A bug in the hook: refuse (never let a failing check through) and say why in logs.
        logger.exception("%s: authorize(%r) failed; refusing the subscription", who, name)
        return False
    return verdict is True


class _Bucket:
    """A token bucket of ``size`` tokens, refilled at ``rate`` a second (inf: no limit)."""

    __slots__ = ("rate", "size", "stamp", "tokens")

    def __init__(self, size: float, rate: float) -> None:
        self.size = size
        self.rate = rate
        self.tokens = size
        self.stamp = time.monotonic()

    def take(self) -> bool:
        if self.rate == float("inf"):
            return True
        now = time.monotonic()
        self.tokens = min(self.size, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def close_reason(text: str) -> str:
    """``text`` cut to the 123 UTF-8 bytes a websocket close reason may hold (RFC 6455 5.5)."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= 123:
        return text
    return raw[:120].decode("utf-8", "ignore") + "..."


def _valid_id(since: object) -> bool:
    return isinstance(since, str) and 0 < len(since) <= _MAX_ID


def _too_big(message: str | bytes, limit: int) -> bool:
    size = len(message)
    if size > limit:
        return True
    # A str of n characters is up to 4n bytes in UTF-8; encode only when that could matter.
    if isinstance(message, str) and size * 4 > limit:
        return len(message.encode("utf-8", "surrogatepass")) > limit
    return False


def _clip(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
