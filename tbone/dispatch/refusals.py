"""Logging a refused websocket so that a developer sees why, without flooding the log.

A refusal is the client's mistake or a missing setting (an Origin not allowed, an event the
route does not offer), and the client only sees HTTP 403. So the reason is logged at WARNING,
which a server's default logging shows, with what to do about it: once per kind of refusal
(its code) and logger every :data:`WARN_EVERY` seconds. The others in between go to INFO, so a
scanner or a page reloading in a loop cannot flood the log. The query string is never logged
(it may hold a token).
"""

from __future__ import annotations

import logging
import time

from tbone.dispatch.protocol import Refused

__all__ = ["HINTS", "WARN_EVERY", "log_refusal"]

#: Seconds between two WARNING lines for the same kind of refusal on the same logger.
WARN_EVERY = 60.0

#: What to do about each kind of refusal, by its code (docs/security.md, docs/protocol.md).
HINTS: dict[str, str] = {
    "forbidden_origin": (
        "a page may subscribe only from the endpoint's own site or an origin listed in the "
        "route's allowed_origins=[...]; for a front-end dev server add its origin, e.g. "
        "allowed_origins=['http://localhost:5173'] (tbone-asgi docs, Security, "
        '"Allowed origins in development")'
    ),
    "bad_query": 'the query is ?events=a,b&since=<id> (tbone-asgi docs, Protocol, "Connecting")',
    "not_offered": (
        "the route was created with events=[...] and serves only those: ask for one of them, "
        "or add the event to the route"
    ),
    "bad_event": (
        "event names are 1 to 200 characters of A-Z a-z 0-9 _ . : - "
        '(tbone-asgi docs, Protocol, "Event names")'
    ),
    "forbidden": "the route's authorize hook did not allow it (it returned False or raised)",
    "bad_since": "since= must be an event id this channel gave, with events= to resume",
    "too_many_subscriptions": "ask for fewer events, or raise the route's Limits",
    "unavailable": "the channel's backend did not answer; clients retry later",
    "not_found": (
        "check the client's URL against the app's websocket routes "
        '(tbone-asgi docs, ASGI, "A websocket to a wrong path")'
    ),
}

# (logger name, refusal code) -> when it was last logged at WARNING (time.monotonic()).
_warned_at: dict[tuple[str, str], float] = {}


def log_refusal(logger: logging.Logger, path: str, refused: Refused) -> None:
    """Log that the websocket at ``path`` was refused, at WARNING or INFO (see the module).

    ``path`` is the request's path without its query.
    """
    key = (logger.name, refused.code)
    now = time.monotonic()
    last = _warned_at.get(key)
    if last is not None and now - last < WARN_EVERY:
        logger.info("refused websocket %s: %s", path, refused)
        return
    _warned_at[key] = now
    hint = HINTS.get(refused.code, "")
    logger.warning(
        "refused websocket %s: %s%s (the next %s refusals within %.0fs are logged at INFO)",
        path,
        refused,
        f". Fix: {hint}" if hint else "",
        refused.code,
        WARN_EVERY,
    )


def forget() -> None:
    """Warn again at the next refusal of every kind (for tests)."""
    _warned_at.clear()
