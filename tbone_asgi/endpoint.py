"""ChannelEndpoint: the pure ASGI app that serves one subscribe websocket for a channel.

:func:`tbone_asgi.channel_route` and :class:`tbone_asgi.ChannelMiddleware` both hand websocket
connections to it. For one connection, in order:

1. The handshake's ``Origin`` is checked (:mod:`tbone.dispatch.origin`); a refused one gets HTTP 403
   before accept.
2. Connect-time subscriptions (``?events=a,b&since=<id>``, or the route's ``events``) are
   checked with ``authorize``; a refusal gets HTTP 403 with the reason, before accept.
3. The websocket is accepted, subscriptions start (history first with ``since``), and every
   client frame goes to :class:`tbone.dispatch.protocol.ProtocolSession`.
4. On disconnect, on a protocol violation (closed with 1008 or 1009) or when the connection
   falls too far behind (closed with 1013 by the carrier), every subscription ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from tbone.dispatch.carriers.asgi_websocket import ASGIWebSocketCarrier, find_server_protocol
from tbone.dispatch.channels import Channel, get_channel
from tbone.dispatch.channels.mem import MemoryChannel
from tbone.dispatch.origin import OriginPolicy, header
from tbone.dispatch.protocol import (
    Authorize,
    Limits,
    ProtocolSession,
    Refused,
    check_event_names,
    close_reason,
)

__all__ = ["ChannelEndpoint", "resolve_channel"]

logger = logging.getLogger("tbone_asgi")

# Open connections per channel in this process, for ChannelEndpoint.max_connections.
_open: dict[Channel, int] = {}

# Whether the server's own frame limit was checked: once per process (see _check_server).
_server_checked = False


def resolve_channel(channel: Channel | str) -> Channel:
    """``channel`` itself, or the channel registered under that name (a new MemoryChannel if none).

    A name is looked up on every connection, so a channel created at startup (say a
    RedisChannel made in the app's lifespan) is the one used.
    """
    if isinstance(channel, Channel):
        return channel
    return get_channel(channel) or MemoryChannel(name=channel)


class ChannelEndpoint:
    """ASGI app serving the subscribe protocol for ``channel`` on websocket scopes.

    Options (all keyword): ``events`` (the fixed events every client gets, others refused),
    ``authorize(connection, event)`` (sync or async; ``connection`` is a Starlette
    ``HTTPConnection`` with headers, cookies, query params, and ``user``/``session`` when
    those middlewares run), ``allowed_origins`` (see :mod:`tbone.dispatch.origin`), ``limits``
    (:class:`~tbone.dispatch.protocol.Limits`), ``max_messages``/``max_bytes`` (the
    connection's outbox: past half of either it reads from the channel's window) and
    ``slow_timeout`` (seconds it may stay behind without sending before it is closed with
    1013; see :class:`~tbone.dispatch.carriers.Carrier`), ``close_timeout`` and
    ``max_connections`` (10,000: open connections per channel in this process, counted across
    endpoints; one more is accepted and closed at once with 1013, try again later, so clients
    back off and retry instead of treating it as a refusal).
    """

    def __init__(
        self,
        channel: Channel | str,
        *,
        events: Collection[str] | None = None,
        authorize: Authorize | None = None,
        allowed_origins: Collection[str] | None = None,
        limits: Limits | None = None,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        slow_timeout: float | None = None,
        close_timeout: float = 5.0,
        max_connections: int = 10_000,
    ) -> None:
        if not isinstance(channel, (Channel, str)) or channel == "":
            raise TypeError(
                f"channel must be a Channel or a channel name, got {channel!r}; "
                "e.g. channel_route('/ws', 'pubsub')"
            )
        self.channel = channel
        if events is not None:
            # A bad configuration fails when the app is built, not at the first connection.
            check_event_names(events)
        self.events = tuple(events) if events is not None else None
        self.authorize = authorize
        self.origins = OriginPolicy(allowed_origins)
        self.limits = limits or Limits()
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.slow_timeout = slow_timeout
        self.close_timeout = close_timeout
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.max_connections = max_connections

    def __repr__(self) -> str:
        name = self.channel if isinstance(self.channel, str) else self.channel.name
        return f"<ChannelEndpoint {name!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise RuntimeError(
                f"{self!r} serves websocket connections only, got a {scope['type']!r} scope; "
                "mount it with channel_route() or ChannelMiddleware"
            )
        _check_server(send, self.limits.max_frame_bytes)
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client left before the handshake completed
        if not self.origins.allows(scope):
            await _deny(scope, send, f"origin {header(scope, b'origin')!r} not allowed")
            return
        try:
            events, since = _query(scope)
        except ValueError as exc:
            await _deny(scope, send, str(exc))
            return

        channel = resolve_channel(self.channel)
        if _open.get(channel, 0) >= self.max_connections:
            logger.info(
                "refused websocket %s: channel %r has max_connections=%d open; closing with 1013",
                scope.get("path"),
                channel.name,
                self.max_connections,
            )
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1013, "reason": "too many connections"})
            return
        _open[channel] = _open.get(channel, 0) + 1
        try:
            await self._connect(scope, receive, send, channel, events, since)
        finally:
            _open[channel] -= 1
            if not _open[channel]:
                del _open[channel]

    async def _connect(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        channel: Channel,
        events: list[str],
        since: str | None,
    ) -> None:
        carrier = ASGIWebSocketCarrier(
            send,
            max_messages=self.max_messages,
            max_bytes=self.max_bytes,
            slow_timeout=self.slow_timeout,
            close_timeout=self.close_timeout,
            accepted=False,  # frames (history, with since) wait for the accept below
        )
        session = ProtocolSession(
            channel,
            carrier,
            events=self.events,
            authorize=self.authorize,
            limits=self.limits,
            connection=HTTPConnection(scope, receive),
        )

        async def accept() -> None:
            await send({"type": "websocket.accept"})
            carrier.accepted()

        try:
            await session.start(events, since, accept=accept)
        except Refused as exc:
            if carrier.accepted_yet:
                # Only the channel can tell that it cannot read `since`, after the accept: say
                # why in an error frame (as the Sanic and aiohttp glue do), then close.
                logger.info("closing websocket %s with 1008: %s", scope.get("path"), exc)
                await session.reject(exc, flush_timeout=self.close_timeout)
            else:
                await _deny(scope, send, str(exc))
            return
        try:
            await self._serve(session, carrier, receive)
        finally:
            session.end()

    async def _serve(
        self, session: ProtocolSession, carrier: ASGIWebSocketCarrier, receive: Receive
    ) -> None:
        # The carrier may close on its own (too slow, send failed) while we wait for a client
        # frame; racing receive() with that lets the endpoint end at once instead of at the
        # next client frame.
        ended = asyncio.ensure_future(carrier.wait_ended())
        try:
            while True:
                incoming = asyncio.ensure_future(receive())
                await asyncio.wait({incoming, ended}, return_when=asyncio.FIRST_COMPLETED)
                if not incoming.done():
                    incoming.cancel()
                    await asyncio.wait([incoming])
                    if carrier.close_code is not None:  # closed as too slow: let 1013 go out
                        await carrier.wait_close_sent(self.close_timeout + 1.0)
                    return
                message = incoming.result()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    carrier.disconnected()
                    return
                if kind != "websocket.receive":
                    continue
                text = message.get("text")
                data = text if text is not None else message.get("bytes") or b""
                code = await session.receive(data)
                if code is not None:
                    # The error frames that explain why go out first.
                    await session.close(code, flush_timeout=self.close_timeout)
                    return
        finally:
            ended.cancel()
            if not carrier.closed or carrier.close_code is None:
                # Unsubscribed or gone: stop the writer and release the connection.
                await carrier.close(1000)


def _check_server(send: Send, max_frame_bytes: int) -> None:
    """At the first connection of the process, warn if uvicorn buffers frames we refuse.

    uvicorn reads a whole client frame, up to its ``ws_max_size`` (16 MiB by default), before
    the endpoint sees it and closes with 1009 past ``max_frame_bytes``: memory the limit does
    not protect. A server this cannot inspect is left alone, and the check never raises.
    """
    global _server_checked
    if _server_checked:
        return
    _server_checked = True
    try:
        protocol = find_server_protocol(send)
        if protocol is None or not type(protocol).__module__.startswith("uvicorn."):
            return
        ws_max_size = getattr(getattr(protocol, "config", None), "ws_max_size", None)
    except Exception:  # a server we do not know: nothing to say about it
        return
    if isinstance(ws_max_size, int) and ws_max_size > max_frame_bytes:
        logger.warning(
            "uvicorn reads client frames of up to ws_max_size=%d bytes before this endpoint "
            "refuses those over max_frame_bytes=%d: run uvicorn with --ws-max-size %d (or "
            "ws_max_size=%d in uvicorn.run/Config) so bigger frames are refused before uvicorn "
            'buffers them (docs/asgi.md, "Server settings")',
            ws_max_size,
            max_frame_bytes,
            max_frame_bytes,
            max_frame_bytes,
        )


def _query(scope: Mapping[str, Any]) -> tuple[list[str], str | None]:
    """Events and ``since`` from ``?events=a,b&since=<id>`` (``events`` may repeat)."""
    raw = scope.get("query_string", b"")
    try:
        params = parse_qs(bytes(raw).decode("latin-1"), max_num_fields=200)
    except ValueError as exc:
        raise ValueError(f"bad query string: {exc}") from None
    events = [name for value in params.get("events", ()) for name in value.split(",") if name]
    sinces = params.get("since", [])
    if len(sinces) > 1:
        raise ValueError("give since at most once")
    return events, (sinces[0] if sinces else None)


async def _deny(scope: Mapping[str, Any], send: Send, reason: str) -> None:
    """Refuse the handshake: servers answer a close before accept with HTTP 403.

    The reason goes to the log, not the client. (The ASGI denial-response extension could carry
    it, but uvicorn 0.54 logs a spurious "returned without completing handshake" error for it.)
    """
    logger.info("refused websocket %s: %s", scope.get("path"), reason)
    await send({"type": "websocket.close", "code": 1008, "reason": close_reason(reason)})
