"""Channel counters in the Prometheus text format, as a pure ASGI app or a Starlette route.

::

    app = Starlette(routes=[channel_route("/ws", "pubsub"), metrics_route("/metrics")])
    # or, in any ASGI app (Django, Quart...): mount MetricsApp() at a path of your choice

Every scrape reads :meth:`~tbone.dispatch.channels.Channel.stats` of the channels served (by
default every channel registered in the process, :func:`registered_channels`) and writes one
sample per channel, labelled ``channel`` and ``backend``:

====================================  =======  =============================================
metric                                type     from ``stats()``
====================================  =======  =============================================
``tbone_channel_subscribers``         gauge    ``subscribers`` (connections)
``tbone_channel_subscriptions``       gauge    ``subscriptions`` (event, connection) pairs
``tbone_channel_published_total``     counter  ``published`` (events this process stored)
``tbone_channel_delivered_total``     counter  ``delivered`` (frames handed to outboxes)
``tbone_channel_dropped_total``       counter  ``dropped`` (connections whose send failed)
``tbone_channel_closed_slow_total``   counter  ``closed_slow`` (connections closed with 1013)
``tbone_channel_reconnects_total``    counter  ``reconnects`` (consumer restarts)
``tbone_channel_errors_total``        counter  ``errors`` (backend failures)
``tbone_channel_consumer_running``    gauge    1 while ``consumer`` is ``running``, else 0
``tbone_channel_reader_lag_seconds``  gauge    ``lag_ms`` / 1000, for backends reporting it
``..._reader_last_answer_seconds``    gauge    ``last_answer_s`` (Redis), for dead-link alerts
``tbone_channel_gaps_total``          counter  ``gaps`` (MongoDB), for backends reporting it
====================================  =======  =============================================

A counter or gauge a backend does not report (say ``lag_ms`` of a MemoryChannel, or None
before the first read) is left out for that channel rather than written as 0: an absent sample
is "unknown" to Prometheus, a 0 would be a claim. The endpoint answers GET and HEAD only
(405 otherwise) and never creates a channel. It serves counters, not events or their data, but
channel names and counts may still be worth keeping private: mount it where only your
scraper can reach it (``docs/security.md``).

The format is Prometheus text exposition format 0.0.4, which is small enough to write here
without adding ``prometheus_client`` as a dependency; to merge these numbers into an existing
``prometheus_client`` registry, call :func:`render_metrics` from a custom collector.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tbone.dispatch.channels import Channel, get_channel, registered_channels
from tbone.dispatch.errors import CLOSE_POLICY_VIOLATION

__all__ = ["CONTENT_TYPE", "METRICS", "MetricsApp", "metrics_route", "render_metrics"]

logger = logging.getLogger("tbone_asgi.metrics")

#: The media type of the Prometheus text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: (metric name, type, stats() key, help text, scale applied to the value)
METRICS: tuple[tuple[str, str, str, str, float], ...] = (
    ("tbone_channel_subscribers", "gauge", "subscribers", "Connections subscribed.", 1.0),
    (
        "tbone_channel_subscriptions",
        "gauge",
        "subscriptions",
        "Subscriptions: (event, connection) pairs.",
        1.0,
    ),
    (
        "tbone_channel_published_total",
        "counter",
        "published",
        "Events this process stored.",
        1.0,
    ),
    (
        "tbone_channel_delivered_total",
        "counter",
        "delivered",
        "Event frames handed to subscribers' outboxes.",
        1.0,
    ),
    (
        "tbone_channel_dropped_total",
        "counter",
        "dropped",
        "Connections removed because a send failed.",
        1.0,
    ),
    (
        "tbone_channel_closed_slow_total",
        "counter",
        "closed_slow",
        "Connections closed with 1013 for falling too far behind.",
        1.0,
    ),
    (
        "tbone_channel_reconnects_total",
        "counter",
        "reconnects",
        "Restarts of the channel's consumer loop.",
        1.0,
    ),
    ("tbone_channel_errors_total", "counter", "errors", "Backend failures.", 1.0),
    (
        "tbone_channel_reader_lag_seconds",
        "gauge",
        "lag_ms",
        "Age of the newest event of the reader's last batch when it arrived.",
        0.001,
    ),
    (
        "tbone_channel_reader_last_answer_seconds",
        "gauge",
        "last_answer_s",
        "Seconds since the backend last answered the reader.",
        1.0,
    ),
    (
        "tbone_channel_gaps_total",
        "counter",
        "gaps",
        "Times the consumer found events lost before it read them (clients told with 1013).",
        1.0,
    ),
    (
        "tbone_channel_refused_total",
        "counter",
        "refused",
        "Publishes refused as over max_message_bytes.",
        1.0,
    ),
    (
        "tbone_channel_lagging",
        "gauge",
        "lagging",
        "Connections behind, catching up from the channel's window.",
        1.0,
    ),
    (
        "tbone_channel_lagged_total",
        "counter",
        "lagged",
        "Times a connection fell behind: its outbox past its high-water mark "
        "(docs/channels.md#flow-control).",
        1.0,
    ),
    (
        "tbone_channel_window_waits_total",
        "counter",
        "waits",
        "Times the consumer waited for a connection holding a full window.",
        1.0,
    ),
    (
        "tbone_channel_window_wait_seconds_total",
        "counter",
        "waited_s",
        "Seconds the consumer waited for connections holding a full window.",
        1.0,
    ),
    (
        "tbone_channel_publish_waits_total",
        "counter",
        "publish_waits",
        "Publishes that waited for the consumer (queue_size events ahead).",
        1.0,
    ),
)


def render_metrics(channels: Iterable[Channel | str] | None = None) -> str:
    """The Prometheus text for ``channels`` (None: every registered channel), one scrape.

    A name that no channel is registered under is skipped (a scrape must not create a
    channel); a channel whose ``stats()`` raises is skipped and logged, so one broken backend
    does not hide the others' numbers.
    """
    stats = []
    for channel in _resolve(channels):
        try:
            stats.append(channel.stats())
        except Exception:
            logger.exception("metrics: %r.stats() failed; leaving it out of this scrape", channel)
    lines: list[str] = []
    for metric, kind, key, help_text, scale in METRICS:
        samples = [
            f"{metric}{_labels(s)} {_number(s[key], scale)}" for s in stats if _has_number(s, key)
        ]
        if samples:
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}", *samples]
    running = [f"tbone_channel_consumer_running{_labels(s)} {int(_running(s))}" for s in stats]
    if running:
        lines += [
            "# HELP tbone_channel_consumer_running 1 while the consumer reads the backend.",
            "# TYPE tbone_channel_consumer_running gauge",
            *running,
        ]
    return "\n".join(lines) + "\n" if lines else ""


class MetricsApp:
    """A pure ASGI app serving :func:`render_metrics` on GET and HEAD (HTTP scopes only).

    ``channels``: Channels or names to serve (None: every registered channel, read at each
    scrape, so channels created later appear). Other methods get 405; websocket scopes are
    closed with 1008, lifespan scopes are ignored, so the app can be mounted anywhere.
    """

    def __init__(self, channels: Iterable[Channel | str] | None = None) -> None:
        if isinstance(channels, (str, Channel)):
            raise TypeError(
                f"channels is a list of channels or names, not {channels!r}: "
                f"use channels=[{channels!r}]"
            )
        self.channels = list(channels) if channels is not None else None

    def __repr__(self) -> str:
        return f"<MetricsApp {self.channels if self.channels is not None else 'all channels'}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return  # nothing to start: a lifespan-aware parent handles its own
        if scope["type"] == "websocket":
            refusal = {"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION}
            await send({**refusal, "reason": "metrics are HTTP"})
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"use GET\n", [(b"allow", b"GET, HEAD")])
            return
        body = render_metrics(self.channels).encode()
        await _respond(
            send,
            200,
            b"" if method == "HEAD" else body,
            [(b"content-type", CONTENT_TYPE.encode())],
            length=len(body),
        )


def metrics_route(
    path: str = "/metrics",
    *,
    channels: Iterable[Channel | str] | None = None,
    name: str | None = "tbone_metrics",
) -> Route:
    """A Starlette ``Route`` at ``path`` serving :class:`MetricsApp` (GET and HEAD)."""
    return Route(path, MetricsApp(channels), methods=["GET", "HEAD"], name=name)


# -- internals ---------------------------------------------------------------------------------


def _resolve(channels: Iterable[Channel | str] | None) -> list[Channel]:
    if channels is None:
        return registered_channels()
    found: list[Channel] = []
    for item in channels:
        channel = item if isinstance(item, Channel) else get_channel(item)
        if channel is not None:
            found.append(channel)
    return found


def _escape(value: str) -> str:
    # The exposition format's label-value escapes: backslash, double quote, line feed.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(stats: dict[str, Any]) -> str:
    channel = _escape(str(stats.get("name", "")))
    backend = _escape(str(stats.get("backend", "")))
    return f'{{channel="{channel}",backend="{backend}"}}'


def _has_number(stats: dict[str, Any], key: str) -> bool:
    value = stats.get(key)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: float, scale: float) -> str:
    scaled = value * scale
    if isinstance(scaled, float) and not math.isfinite(scaled):
        return "NaN" if math.isnan(scaled) else ("+Inf" if scaled > 0 else "-Inf")
    if scale == 1.0 and isinstance(value, int):
        return str(value)
    return repr(float(scaled))


def _running(stats: dict[str, Any]) -> bool:
    return stats.get("consumer") == "running"


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    length: int | None = None,
) -> None:
    size = len(body) if length is None else length
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(size).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
