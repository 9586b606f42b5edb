"""The serving loop: one websocket connection speaking the subscribe protocol, on any server.

The ASGI endpoint (:mod:`tbone_asgi.endpoint`) and the Sanic and aiohttp glue
(:mod:`tbone.dispatch.glue.sanic`, :mod:`tbone.dispatch.glue.aiohttp`)
each wrap a connection in a small adapter (:class:`WebSocketAdapter`: accept, deny, receive a
frame) and call :func:`serve` with the route's :class:`ServeOptions`. For one connection, in
order:

1. :func:`check`: the ``Origin`` (:mod:`tbone.dispatch.origin`), the query
   (``?events=a,b&since=<id>``) and each connect-time subscription (fixed ``events``,
   ``authorize``). A refusal is HTTP 403 before the upgrade, or, where the server upgraded
   before the handler ran (Sanic's ``serve`` in a handler), an error frame and close 1008.
2. The channel: a Channel, or the one registered under a name (:func:`channel_for`).
3. ``max_connections``: one connection more is accepted and closed at once with 1013.
4. The websocket is accepted and the subscriptions start (history first with ``since``; a
   ``since`` the channel cannot read gets an error frame and 1008, a backend that is down 1013).
5. Each client frame goes to :class:`~tbone.dispatch.protocol.ProtocolSession` until the
   client leaves, breaks the protocol (1008, 1009) or falls too far behind (1013, by the
   carrier). Every subscription ends when :func:`serve` returns or is cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from tbone.dispatch.carriers import Carrier
from tbone.dispatch.carriers.options import CarrierOptions
from tbone.dispatch.channels import Channel, get_channel
from tbone.dispatch.channels.mem import MemoryChannel
from tbone.dispatch.checks import seconds, whole_number
from tbone.dispatch.errors import CLOSE_NORMAL, CLOSE_TRY_AGAIN_LATER
from tbone.dispatch.origin import OriginPolicy, header
from tbone.dispatch.protocol import (
    Authorize,
    Limits,
    ProtocolSession,
    Refused,
    check_connect,
    check_event_names,
)
from tbone.dispatch.refusals import log_refusal

__all__ = [
    "Checked",
    "Handshake",
    "ServeKeywords",
    "ServeOptions",
    "WebSocketAdapter",
    "channel_for",
    "check",
    "check_channel",
    "resolve_channel",
    "serve",
]

logger = logging.getLogger("tbone.dispatch.serving")

# Open connections per channel in this process, for ServeOptions.max_connections.
_open: dict[Channel, int] = {}

# Channel names already warned about (channel_for): once per name and process.
_warned: set[str] = set()


class ServeKeywords(CarrierOptions, total=False):
    """The keyword options of every entry point that serves the protocol, as one type.

    ``channel_route``, ``ChannelMiddleware``, ``ChannelEndpoint`` and the Sanic and aiohttp
    ``serve`` and ``add_route`` take ``**options: Unpack[ServeKeywords]``, so a misspelt option
    is a type error. What each means, and its default: :class:`ServeOptions`.
    """

    events: Collection[str] | None
    authorize: Authorize | None
    allowed_origins: Collection[str] | None
    limits: Limits
    close_timeout: float
    max_connections: int


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """How the connections of one endpoint are served; checked when it is made.

    * ``events``: the fixed events every client gets when it names none; others are refused.
    * ``authorize(connection, event)``: sync or async, asked for every subscription; only
      ``True`` allows. ``connection`` is the framework's request (ASGI: a Starlette
      ``HTTPConnection``).
    * ``allowed_origins``: ``scheme://host[:port]`` origins that may connect (default: the
      same site only; ``["*"]``: any). ``origins`` is the :class:`OriginPolicy` made of it.
    * ``limits``: what one connection may do (:class:`~tbone.dispatch.protocol.Limits`).
    * ``max_messages``, ``max_bytes``, ``slow_timeout``: the connection's outbox and the slow
      rule (None: the carrier's defaults, 1,000 frames, 1 MiB, 5 s).
    * ``close_timeout`` (5 s): how long a close may wait for a peer that does not read before
      its connection is aborted.
    * ``max_connections`` (10,000): open connections per channel in this process, counted
      across endpoints; one more is accepted and closed at once with 1013 (try again later).

    A bad value raises (TypeError or ValueError, naming the option) here, so when the app or
    route is built rather than at the first connection.
    """

    events: Collection[str] | None = None
    authorize: Authorize | None = None
    allowed_origins: Collection[str] | None = None
    limits: Limits = field(default_factory=Limits)
    max_messages: int | None = None
    max_bytes: int | None = None
    slow_timeout: float | None = None
    close_timeout: float = 5.0
    max_connections: int = 10_000
    origins: OriginPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen: the normalised values are set through object.__setattr__, once, here.
        if self.events is not None:
            check_event_names(self.events)
            object.__setattr__(self, "events", tuple(dict.fromkeys(self.events)))
        if self.authorize is not None and not callable(self.authorize):
            raise TypeError(
                f"authorize must be a function (connection, event) -> bool, got {self.authorize!r}"
            )
        object.__setattr__(self, "origins", OriginPolicy(self.allowed_origins))
        if self.allowed_origins is not None:
            object.__setattr__(self, "allowed_origins", tuple(self.allowed_origins))
        if self.limits is None:
            object.__setattr__(self, "limits", Limits())  # what limits=None always meant
        elif not isinstance(self.limits, Limits):
            raise TypeError(f"limits must be a Limits(...), got {self.limits!r}")
        whole_number("max_messages", self.max_messages, optional=True)
        whole_number("max_bytes", self.max_bytes, optional=True)
        seconds("slow_timeout", self.slow_timeout, optional=True)
        seconds("close_timeout", self.close_timeout)
        whole_number("max_connections", self.max_connections)

    def carrier_options(self) -> CarrierOptions:
        """The outbox options a carrier of these connections is made with."""
        return {
            "max_messages": self.max_messages,
            "max_bytes": self.max_bytes,
            "slow_timeout": self.slow_timeout,
        }


class Handshake(Protocol):
    """A websocket handshake as :func:`check` reads it; the upgrade may not have happened yet."""

    @property
    def request(self) -> Any:
        """What ``authorize(connection, event)`` is given: the framework's request."""

    @property
    def path(self) -> str:
        """The request's path, for logs (never the query: it may hold a token)."""

    @property
    def logger(self) -> logging.Logger:
        """Where refusals are logged (each framework has its own logger)."""

    def scope(self) -> Mapping[str, Any]:
        """The handshake's ``headers`` as an ASGI scope holds them: (name, value) bytes pairs."""

    def query(self) -> tuple[list[str], str | None]:
        """Events and ``since`` from the query; ValueError for one that cannot be read."""


class WebSocketAdapter(Handshake, Protocol):
    """One framework's websocket connection, as :func:`serve` drives it."""

    @property
    def carrier(self) -> Carrier:
        """The connection's carrier, made with :meth:`ServeOptions.carrier_options`."""

    @property
    def accepted(self) -> bool:
        """True once the websocket is open (Sanic's handlers run after the upgrade)."""

    async def accept(self) -> None:
        """Accept (upgrade) the websocket; frames may go out from then on."""

    async def deny(self, reason: str) -> None:
        """Refuse the handshake with HTTP 403; called only while :attr:`accepted` is False."""

    async def receive(self) -> str | bytes | None:
        """The next client frame; None once the peer left or the carrier closed."""


class Checked(NamedTuple):
    """What :func:`check` let through: the events to subscribe at connect, and ``since``."""

    events: list[str]
    since: str | None


def check_channel(channel: Channel | str) -> Channel | str:
    """``channel`` itself; TypeError unless it is a Channel or a channel name."""
    if not isinstance(channel, (Channel, str)) or channel == "":
        raise TypeError(
            f"channel must be a Channel or a channel name such as 'pubsub', got {channel!r}"
        )
    return channel


def resolve_channel(channel: Channel | str) -> Channel:
    """``channel`` itself, or the channel registered under that name (a new MemoryChannel if none).

    A name is looked up on every call, so a channel created at startup (say a RedisChannel
    made in the app's lifespan) is the one used.
    """
    if isinstance(channel, Channel):
        return channel
    return get_channel(channel) or MemoryChannel(name=channel)


def channel_for(channel: Channel | str) -> Channel:
    """The channel a connection is served from, as :func:`resolve_channel` finds it.

    A name that no channel of this process is registered under gets a new MemoryChannel, and
    a warning, once per name: an endpoint meant to serve a RedisChannel whose creation was
    forgotten (or comes too late) would otherwise serve an empty channel without a word.
    """
    if isinstance(channel, str) and channel not in _warned and get_channel(channel) is None:
        _warned.add(channel)
        logger.warning(
            "no channel named %r was created in this process; serving a new "
            "MemoryChannel(%r): create the channel at startup so the endpoint serves the "
            "channel you publish on: ASGI: lifespan=channels_lifespan(%r); aiohttp: "
            "app.cleanup_ctx; Sanic: @app.before_server_start; or at import, "
            'MemoryChannel(name=%r) (tbone-asgi docs: Carriers, "Serving the protocol")',
            channel,
            channel,
            channel,
            channel,
        )
    return resolve_channel(channel)


async def check(handshake: Handshake, options: ServeOptions) -> Checked:
    """Check a handshake: its Origin, its query, then each connect-time subscription.

    Returns what to subscribe once the websocket is up. Raises :class:`Refused` for the first
    problem (``forbidden_origin``, ``bad_query``, or those of
    :func:`~tbone.dispatch.protocol.check_connect`), logged on the handshake's logger without
    the query (it may hold a token): at WARNING with what to do, once a minute per kind, else at
    INFO (:func:`~tbone.dispatch.refusals.log_refusal`). Nothing is subscribed and no channel
    is made.
    """
    try:
        scope = handshake.scope()
        if not options.origins.allows(scope):
            origin = header(scope, b"origin")
            raise Refused("forbidden_origin", f"origin {origin!r} is not allowed")
        try:
            events, since = handshake.query()
        except ValueError as exc:
            raise Refused("bad_query", str(exc)) from None
        names = await check_connect(
            events,
            since,
            fixed_events=options.events,
            authorize=options.authorize,
            limits=options.limits,
            connection=handshake.request,
        )
    except Refused as refused:
        log_refusal(handshake.logger, handshake.path, refused)
        raise
    return Checked(names, since)


async def serve(
    adapter: WebSocketAdapter,
    channel: Channel | str,
    options: ServeOptions,
    *,
    checked: Checked | None = None,
) -> None:
    """Serve the subscribe protocol for ``channel`` on one connection; return when it is over.

    The steps are those of the module docstring. ``checked``: what :func:`check` returned
    for this connection earlier (Sanic checks in a request middleware, before the upgrade);
    without it the checks run here. Never raises for what a client does; cancellation (the
    server dropping the connection) ends every subscription too.
    """
    if checked is None:
        try:
            checked = await check(adapter, options)
        except Refused as refused:
            if not adapter.accepted:
                await adapter.deny(str(refused))
            else:  # upgraded before the handler ran: say why in an error frame, then 1008
                session = _session(adapter, channel_for(channel), options)
                await session.reject(refused, flush_timeout=options.close_timeout)
            return
    resolved = channel_for(channel)
    if _open.get(resolved, 0) >= options.max_connections:
        adapter.logger.info(
            "refused websocket %s: channel %r has max_connections=%d open; closing with 1013",
            adapter.path,
            resolved.name,
            options.max_connections,
        )
        # Accepted, then closed with "try again later": clients back off and retry, where an
        # HTTP refusal would read as "not allowed".
        if not adapter.accepted:
            await adapter.accept()
        await adapter.carrier.close(CLOSE_TRY_AGAIN_LATER, "too many connections")
        return
    _open[resolved] = _open.get(resolved, 0) + 1
    try:
        await _run(adapter, _session(adapter, resolved, options), checked, options)
    finally:
        _open[resolved] -= 1
        if not _open[resolved]:
            del _open[resolved]


def _session(adapter: WebSocketAdapter, channel: Channel, options: ServeOptions) -> ProtocolSession:
    return ProtocolSession(
        channel,
        adapter.carrier,
        events=options.events,
        authorize=options.authorize,
        limits=options.limits,
        connection=adapter.request,
    )


async def _run(
    adapter: WebSocketAdapter, session: ProtocolSession, checked: Checked, options: ServeOptions
) -> None:
    carrier = adapter.carrier
    try:
        if not adapter.accepted:
            await adapter.accept()
        await session.begin(checked.events, checked.since)  # with since, history first
    except Refused as refused:  # a since the channel cannot read, or a backend that is down
        log_refusal(adapter.logger, adapter.path, refused)
        await session.reject(refused, flush_timeout=options.close_timeout)
        return
    except BaseException:
        session.end()  # also clears what a resume cut short had subscribed
        raise
    try:
        while not carrier.closed:
            message = await adapter.receive()
            if message is None:
                return  # the client left, or the carrier closed (too slow, send failed)
            code = await session.receive(message)
            if code is not None:
                # The error frames that explain why go out first.
                await session.close(code, flush_timeout=options.close_timeout)
                return
    finally:
        session.end()
        if not carrier.closed or carrier.close_code is None:
            # The client left (or its sends failed): stop the writer, release the connection.
            await carrier.close(CLOSE_NORMAL)
