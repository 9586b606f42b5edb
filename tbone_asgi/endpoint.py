"""ChannelEndpoint: the pure ASGI app that serves one subscribe websocket for a channel.

:func:`tbone_asgi.channel_route` and :class:`tbone_asgi.ChannelMiddleware` both hand websocket
connections to it. It wraps each in an adapter for the serving loop of
:mod:`tbone.dispatch.serving`, which Sanic and aiohttp share; for one connection, in order:

1. The handshake's ``Origin`` (:mod:`tbone.dispatch.origin`), its query (``?events=a,b&since=<id>``)
   and the connect-time subscriptions (``authorize``, the route's ``events``) are checked; a
   refusal gets HTTP 403, the reason going to the log (WARNING, once a minute per kind) and,
   where the server takes a denial response, to the client as the 403's body.
2. ``max_connections`` per channel: one connection more is accepted and closed with 1013.
3. The websocket is accepted, subscriptions start (history first with ``since``), and every
   client frame goes to :class:`tbone.dispatch.protocol.ProtocolSession`.
4. On disconnect, on a protocol violation (closed with 1008 or 1009) or when the connection
   falls too far behind (closed with 1013 by the carrier), every subscription ends.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from tbone.dispatch._private import uvicorn as _uvicorn
from tbone.dispatch.carriers.asgi_websocket import ASGIWebSocketCarrier
from tbone.dispatch.channels import Channel
from tbone.dispatch.errors import CLOSE_POLICY_VIOLATION
from tbone.dispatch.protocol import close_reason
from tbone.dispatch.refusals import HINTS
from tbone.dispatch.serving import (
    ServeKeywords,
    ServeOptions,
    check_channel,
    resolve_channel,
    serve,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ChannelEndpoint", "deny", "resolve_channel"]

logger = logging.getLogger("tbone_asgi")

# Whether the server's own frame limit was checked: once per process (see _check_server).
_server_checked = False
# Whether the log said how to turn prepared frames on: once per process.
_prepared_advised = False

#: The ASGI extension of servers that take prepared frames (tbone_asgi.uvicorn).
PREPARED = "tbone.prepared"


class ChannelEndpoint:
    """ASGI app serving the subscribe protocol for ``channel`` on websocket scopes.

    ``channel`` is a Channel or a channel name (looked up at each connection: the channel
    registered under it, else a new MemoryChannel, with a warning once per name). The keyword
    options are those of :class:`~tbone.dispatch.serving.ServeOptions` (``events``,
    ``authorize``, ``allowed_origins``, ``limits``, ``max_messages``, ``max_bytes``,
    ``slow_timeout``, ``close_timeout``, ``max_connections``), checked here: a bad one raises
    when the app is built. ``authorize(connection, event)`` gets a Starlette
    ``HTTPConnection`` (headers, cookies, query params, and ``user``/``session``/``state`` when
    those are set). ``options`` holds the checked :class:`ServeOptions`.
    """

    def __init__(self, channel: Channel | str, **options: Unpack[ServeKeywords]) -> None:
        self.channel = check_channel(channel)
        self.options = ServeOptions(**options)

    def __repr__(self) -> str:
        name = self.channel if isinstance(self.channel, str) else self.channel.name
        return f"<ChannelEndpoint {name!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise RuntimeError(
                f"{self!r} serves websocket connections only, got a {scope['type']!r} scope; "
                "mount it with channel_route() or ChannelMiddleware"
            )
        _check_server(send, self.options.limits.max_frame_bytes)
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client left before the handshake completed
        await serve(_Connection(scope, receive, send, self.options), self.channel, self.options)


class _Connection:
    """One ASGI websocket connection, as the serving loop drives it."""

    logger = logger

    def __init__(self, scope: Scope, receive: Receive, send: Send, options: ServeOptions) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self.path: str = scope.get("path", "")
        self.request = HTTPConnection(scope, receive)
        self.close_timeout = options.close_timeout
        extensions = scope.get("extensions") or {}
        prepared = extensions.get(PREPARED)
        if prepared is None:
            _advise_prepared(send)
        self.carrier = ASGIWebSocketCarrier(
            send,
            close_timeout=options.close_timeout,
            accepted=False,  # frames wait for the accept
            prepared=prepared,
            **options.carrier_options(),
        )

    def scope(self) -> Scope:
        return self._scope

    def query(self) -> tuple[list[str], str | None]:
        return _query(self._scope)

    @property
    def accepted(self) -> bool:
        return self.carrier.is_accepted

    async def accept(self) -> None:
        await self._send({"type": "websocket.accept"})
        self.carrier.mark_accepted()

    async def deny(self, reason: str) -> None:
        """Refuse the handshake with HTTP 403, saying why where the server lets us.

        With the ASGI ``websocket.http.response`` extension (uvicorn 0.55+, Hypercorn), the 403
        carries a text body: the reason and what to do. Elsewhere a close before the accept,
        which servers answer with a bare 403; the log says why either way (serving loop).
        """
        hint = HINTS.get(reason.split(":", 1)[0])
        body = f"websocket refused: {reason}\n" + (f"{hint}\n" if hint else "")
        await deny(self._scope, self._send, body, close_reason(reason))

    async def receive(self) -> str | bytes | None:
        carrier = self.carrier
        task = asyncio.current_task()
        assert task is not None
        interrupted = False

        def interrupt() -> None:
            nonlocal interrupted
            interrupted = True
            task.cancel()

        while True:
            # The carrier may close on its own (too slow, send failed) while we wait for a
            # client frame: it then cancels this wait, which ends the connection at once
            # instead of at the next client frame. (A callback, not a second task racing the
            # receive: an idle connection holds no task or future of ours.)
            if carrier.closed:
                await self._ended()
                return None
            carrier.when_ended(interrupt)
            try:
                message = await self._receive()
            except asyncio.CancelledError:
                # Python 3.11+ counts cancellations: one from outside (the server shutting
                # down) as well as ours goes on. 3.10 cannot tell them apart.
                uncancel = getattr(task, "uncancel", None)
                if not interrupted or (uncancel is not None and uncancel() > 0):
                    raise
                await self._ended()
                return None
            finally:
                carrier.when_ended(None)
            kind = message["type"]
            if kind == "websocket.disconnect":
                carrier.disconnected()
                return None
            if kind == "websocket.receive":
                text = message.get("text")
                data: str | bytes = text if text is not None else message.get("bytes") or b""
                return data

    async def _ended(self) -> None:
        if self.carrier.close_code is not None:  # closed as too slow: let 1013 go out
            await self.carrier.wait_close_sent(self.close_timeout + 1.0)


async def deny(scope: Scope, send: Send, body: str, reason: str = "") -> None:
    """Refuse a websocket handshake with HTTP 403 and ``body`` as text where the server allows.

    Elsewhere (no ``websocket.http.response``) a close before the accept, which servers
    answer with a bare 403; ``reason`` goes in that close message (servers drop it).
    """
    if _http_response_ok(scope, send):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body.encode()})
    else:
        await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION, "reason": reason})


def _http_response_ok(scope: Scope, send: Send) -> bool:
    """Whether the server takes a denial response (ASGI ``websocket.http.response``).

    uvicorn before 0.55 offers the extension but logs a spurious "ASGI callable returned
    without completing handshake" error for it on websockets-sansio: there, a bare 403.
    """
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        return False
    try:
        protocol = _uvicorn.server_protocol(send)
    except Exception:  # a server we do not know: it offered the extension
        return True
    if protocol is None or not any(
        c.__module__.startswith("uvicorn.") for c in type(protocol).__mro__
    ):
        return True
    return _uvicorn_version() >= (0, 55)


@functools.cache
def _uvicorn_version() -> tuple[int, ...]:
    import uvicorn

    numbers = re.findall(r"\d+", uvicorn.__version__)[:2]
    return tuple(int(n) for n in numbers)


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
        protocol = _uvicorn.server_protocol(send)
        if not _uvicorn.is_uvicorn(protocol):
            return
        ws_max_size = _uvicorn.ws_max_size(protocol)
    except Exception:  # a server we do not know: nothing to say about it
        return
    if isinstance(ws_max_size, int) and ws_max_size > max_frame_bytes:
        logger.warning(
            "uvicorn reads client frames of up to ws_max_size=%d bytes before this endpoint "
            "refuses those over max_frame_bytes=%d: run uvicorn with --ws-max-size %d (or "
            "ws_max_size=%d in uvicorn.run/Config) so bigger frames are refused before uvicorn "
            'buffers them (tbone-asgi docs: ASGI, "Server settings")',
            ws_max_size,
            max_frame_bytes,
            max_frame_bytes,
            max_frame_bytes,
        )


def _advise_prepared(send: Send) -> None:
    """Once per process: say how each event's frame can be built once for every subscriber."""
    global _prepared_advised
    if _prepared_advised:
        return
    _prepared_advised = True
    try:
        protocol = _uvicorn.server_protocol(send)
        on_uvicorn = _uvicorn.is_uvicorn(protocol)
    except Exception:  # a server we do not know
        on_uvicorn = False
    if on_uvicorn:
        logger.info(
            "each event is framed (and compressed) once per connection by uvicorn; run uvicorn "
            "with --ws tbone_asgi.uvicorn:WebSocketProtocol to build each event's frame once "
            'for every subscriber (tbone-asgi docs: ASGI, "Prepared frames")'
        )
    else:
        logger.info(
            "this server frames (and compresses) each event once per connection; under "
            "uvicorn, --ws tbone_asgi.uvicorn:WebSocketProtocol builds each event's frame once "
            'for every subscriber (tbone-asgi docs: ASGI, "Prepared frames")'
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
