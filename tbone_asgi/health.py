"""Readiness for a load balancer: is each channel's backend reachable from this process?

::

    app = Starlette(routes=[channel_route("/ws", "pubsub"), health_route("/healthz")])

``GET /healthz`` answers **200** when every channel served reads its backend, and **503**
otherwise, with a JSON body a person can read::

    {"status": "ok", "channels": {"pubsub": {"backend": "redis", "reachable": true,
                                             "consumer": "running"}}}

The rule, per channel: its consumer is started if it is not running
(:meth:`~tbone.dispatch.channels.Channel.ready`, at most ``timeout`` seconds), then the channel
is reachable while its consumer is ``running``; ``reconnecting`` (the backend stopped
answering, the consumer retries) or a ``ready`` that fails or times out is unreachable, with
the channel's own one-line reason in ``error``. A channel name that no channel is registered
under is unreachable too ("no channel named ..."): a worker whose startup did not create its
channel must not take traffic. The answer is computed per request: point the load balancer's
check at it every few seconds, not every few milliseconds. ``HEAD`` gives the status alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tbone.dispatch.channels import Channel, get_channel, registered_channels
from tbone.dispatch.errors import CLOSE_POLICY_VIOLATION

__all__ = ["HealthApp", "check_channels", "health_route"]


async def check_channels(
    channels: Iterable[Channel | str] | None = None, *, timeout: float = 2.0
) -> tuple[bool, dict[str, dict[str, Any]]]:
    """(all reachable, a report per channel name) for ``channels`` (None: every registered one).

    Each channel is checked at the same time, for at most ``timeout`` seconds.
    """
    targets: list[Channel | str] = (
        list(registered_channels()) if channels is None else list(channels)
    )
    reports = await asyncio.gather(*(_check(target, timeout) for target in targets))
    named = dict(reports)
    return all(report["reachable"] for report in named.values()), named


async def _check(target: Channel | str, timeout: float) -> tuple[str, dict[str, Any]]:
    channel = target if isinstance(target, Channel) else get_channel(target)
    if channel is None:
        error = f"no channel named {target!r} was created in this process"
        return str(target), {"reachable": False, "error": error}
    report: dict[str, Any] = {"backend": channel.stats().get("backend")}
    try:
        await channel.ready(timeout=timeout)
    except Exception as exc:  # ChannelUnavailable, or a backend's own error: not reachable
        report["error"] = str(exc)
    state = channel.stats().get("consumer")
    report["consumer"] = state
    report["reachable"] = "error" not in report and state == "running"
    if not report["reachable"] and "error" not in report:
        report["error"] = f"the consumer is {state}: the backend does not answer"
    return channel.name, report


class HealthApp:
    """A pure ASGI app answering :func:`check_channels` on GET (JSON) and HEAD.

    ``channels``: Channels or names (None: every registered channel, read at each request).
    ``timeout``: seconds one request may wait for a channel to read its backend. Other methods
    get 405; websocket scopes are closed with 1008; lifespan scopes are ignored.
    """

    def __init__(
        self, channels: Iterable[Channel | str] | None = None, *, timeout: float = 2.0
    ) -> None:
        if isinstance(channels, (str, Channel)):
            raise TypeError(f"channels is a list, not {channels!r}: use channels=[{channels!r}]")
        if not timeout > 0:
            raise ValueError(f"timeout must be more than 0 seconds, got {timeout!r}")
        self.channels = list(channels) if channels is not None else None
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b'{"error": "use GET"}\n', [(b"allow", b"GET, HEAD")])
            return
        ok, channels = await check_channels(self.channels, timeout=self.timeout)
        body = json.dumps({"status": "ok" if ok else "unavailable", "channels": channels})
        await _respond(send, 200 if ok else 503, (body + "\n").encode(), head=method == "HEAD")


def health_route(
    path: str = "/healthz",
    *,
    channels: Iterable[Channel | str] | None = None,
    timeout: float = 2.0,
    name: str | None = "tbone_health",
) -> Route:
    """A Starlette ``Route`` at ``path`` serving :class:`HealthApp` (GET and HEAD)."""
    return Route(path, HealthApp(channels, timeout=timeout), methods=["GET", "HEAD"], name=name)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    head: bool = False,
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
