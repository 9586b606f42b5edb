"""The package's exceptions and websocket close codes, in one place.

Every exception the package raises on purpose derives from :class:`TBoneError`, so
``except TBoneError`` catches them all; each also derives from the built-in exception that
says what kind of mistake it is (a ``ValueError`` for a value over a limit, ...), so code
written against those keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_REASONS",
    "CLOSE_TRY_AGAIN_LATER",
    "ChannelNameConflict",
    "ChannelUnavailable",
    "MessageTooLarge",
    "StartupStopped",
    "TBoneError",
]

#: Websocket close codes the package sends (RFC 6455, section 7.4.1).
CLOSE_NORMAL = 1000
#: The server (or the channel) is going away: reconnect later.
CLOSE_GOING_AWAY = 1001
#: The client broke the protocol (bad frames, too many, refused after accept).
CLOSE_POLICY_VIOLATION = 1008
#: A client frame over ``Limits.max_frame_bytes``.
CLOSE_MESSAGE_TOO_BIG = 1009
#: Too slow, too many connections, or events lost upstream: resume a little later.
CLOSE_TRY_AGAIN_LATER = 1013

#: The reason sent with each close code.
CLOSE_REASONS = {
    CLOSE_NORMAL: "",
    CLOSE_GOING_AWAY: "going away",
    CLOSE_POLICY_VIOLATION: "policy violation",
    CLOSE_MESSAGE_TOO_BIG: "frame too big",
    CLOSE_TRY_AGAIN_LATER: "try again later",
}


class TBoneError(Exception):
    """Base class of the exceptions this package raises.

    ``details`` become attributes: every exception carries the data that explains it.
    """

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        for key, value in details.items():
            setattr(self, key, value)


class MessageTooLarge(TBoneError, ValueError):
    """An event is over its channel's ``max_message_bytes``; nothing was stored.

    Raised by ``publish`` on every channel, before the backend is contacted. Carries
    ``channel``, ``event``, ``size`` (the event name plus its JSON data, in UTF-8 bytes) and
    ``limit``.
    """

    channel: str
    event: str
    size: int
    limit: int

    def __init__(
        self, channel: str, event: str, size: int, limit: int, *, fix: str | None = None
    ) -> None:
        fix = fix or (
            "raise the channel's max_message_bytes, keeping it at most half of the "
            "subscribers' outbox (Carrier max_bytes, 1 MiB by default)"
        )
        super().__init__(
            f"event {event!r} on channel {channel!r} is {size} bytes encoded, over the limit of "
            f"{limit} bytes; nothing was published. Publish a smaller payload (for example the "
            f"id of a record clients can fetch), or {fix}.",
            channel=channel,
            event=event,
            size=size,
            limit=limit,
        )


class ChannelNameConflict(TBoneError, TypeError):
    """A channel name is already bound to a channel of another class."""

    name: str
    existing: type
    wanted: type

    def __init__(self, name: str, existing: type, wanted: type) -> None:
        super().__init__(
            f"channel {name!r} is already a {existing.__name__} in this process; "
            f"cannot make it a {wanted.__name__}. Use another name, or close the first one "
            "(await channel.close(forget=True)) before creating the new one.",
            name=name,
            existing=existing,
            wanted=wanted,
        )


class ChannelUnavailable(TBoneError, ConnectionError):
    """A channel's consumer could not read its backend, and ``Channel.ready()`` gave up.

    ``reason`` says why: ``"timeout"`` (no answer within the time given: the backend is down,
    or the address is wrong), ``"refused"`` (the backend answered with an error that retrying
    cannot fix: a bad password, a database that does not exist) or ``"closed"`` (the channel
    closed meanwhile). Carries ``channel`` (its name), ``backend``, ``last_error`` (the
    consumer's last error as text; None when it had none yet), ``waited`` (seconds) and
    ``fix``, what to do. The message is one line that says all of it.
    """

    channel: str
    backend: str
    reason: str
    last_error: str | None
    waited: float
    fix: str

    def __init__(
        self,
        channel: str,
        backend: str,
        reason: str,
        *,
        last_error: str | None,
        waited: float,
        fix: str,
    ) -> None:
        error = f"last error: {last_error}" if last_error else "no answer from it yet"
        what = {
            "timeout": f"its backend did not answer within {waited:g}s ({error})",
            "refused": f"its backend refused it ({last_error}), and retrying cannot fix that",
            "closed": f"it was closed before its backend answered ({error})",
        }[reason]
        super().__init__(
            f"channel {channel!r} ({backend}) is not ready: {what}; {fix}",
            channel=channel,
            backend=backend,
            reason=reason,
            last_error=last_error,
            waited=waited,
            fix=fix,
        )


class StartupStopped(TBoneError, InterruptedError):
    """SIGINT or SIGTERM arrived while an app's startup waited (``channels_lifespan``).

    The startup gives up at once, so the server exits instead of finishing a startup it was
    asked to abandon. Carries ``signal`` (its name, ``"SIGINT"``), ``waited`` (seconds since
    the startup began) and ``waiting_for``, what the startup was waiting for.
    """

    signal: str
    waited: float
    waiting_for: str

    def __init__(self, signal: str, waited: float, waiting_for: str) -> None:
        super().__init__(
            f"{signal} stopped the startup after {waited:.1f}s, while it waited for {waiting_for}",
            signal=signal,
            waited=waited,
            waiting_for=waiting_for,
        )
