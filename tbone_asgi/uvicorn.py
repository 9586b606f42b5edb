"""A uvicorn websocket protocol that writes each event's prepared frame to every subscriber.

Turn it on with one uvicorn option::

    uvicorn app:app --ws tbone_asgi.uvicorn:WebSocketProtocol
    uvicorn.run(app, ws="tbone_asgi.uvicorn:WebSocketProtocol")   # or ws=WebSocketProtocol

It is uvicorn's own websockets-sansio protocol (:class:`WebSocketsSansIOProtocol`), with two
changes:

* **permessage-deflate without context takeover.** It answers every client that offers
  permessage-deflate with ``server_no_context_takeover`` (RFC 7692 7.1.1.1 lets a server do
  so unasked), so each message it sends is compressed on its own, and the same compressed
  bytes are valid on every connection with the same window size. uvicorn's other deflate
  settings are kept (a 12-bit window, ``--ws-per-message-deflate false`` turns it off).
* **Prepared frames.** It advertises the ASGI extension ``"tbone.prepared"`` in
  ``scope["extensions"]`` (:class:`Prepared`): ``window_bits`` (None without deflate),
  ``write_message(message)``, ``write(data)`` and ``wait_writable()``. ``write_message``
  writes ``message.wire(window_bits)``, the bytes of one whole frame built once for every
  connection with that variant (``tbone.dispatch.events.Event.wire``), straight to the
  transport; ``write`` writes bytes of whole frames so built. Both write and return True only
  while the connection is open, the close frame has not gone out and the transport is not
  paused; otherwise they write nothing and return False, and the sender waits (``await
  wait_writable()``) or uses ``send``. The tbone_asgi endpoint uses it for events.

* **A lingering close after a frame that breaks the rules** (too big for ``--ws-max-size``,
  malformed). uvicorn writes the close frame (1009, 1002...) and closes the socket at once,
  with the rest of the peer's frame still unread; the kernel then answers with a reset, which
  can reach a proxy before the close frame, so that its client sees 1006 instead of 1009.
  Here the write side is shut after the close frame, and what the peer still sends is read and
  dropped until it closes too, or for uvicorn's close timeout at most (HTTP servers call this
  a lingering close).

Everything else (the handshake, pings and pongs, error frames, the close handshake, and any
other ASGI app or route on the same server) goes through uvicorn's own code, so an app that
never asks for the extension behaves as on stock uvicorn.

uvicorn's protocol class is not a public API: this module reaches into it (its ``conn``,
``transport``, ``writable``, ``close_sent``, ``queue``, ``close_timer``, ``scope``...). The
list, and the releases it was tested on (:data:`TESTED_UVICORN`), are in
:mod:`tbone.dispatch._private.uvicorn`; on a uvicorn without that surface it logs one line and
serves as the stock protocol, never failing a connection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypedDict

from tbone.dispatch._private import uvicorn as _private

try:
    import uvicorn
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.extensions.permessage_deflate import (
        PerMessageDeflate,
        ServerPerMessageDeflateFactory,
    )
    from websockets.server import ServerProtocol
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "tbone_asgi.uvicorn needs uvicorn with the websockets library: "
        "pip install 'uvicorn[standard]'"
    ) from exc

__all__ = [
    "EXTENSION",
    "TESTED_UVICORN",
    "Message",
    "Prepared",
    "WebSocketProtocol",
    "surface_problem",
]

logger = logging.getLogger("tbone_asgi")

#: The ASGI extension's key in ``scope["extensions"]``.
EXTENSION = "tbone.prepared"
#: The uvicorn releases whose protocol class this module was tested against
#: (:mod:`tbone.dispatch._private.uvicorn`, where what it uses of that class is listed). The
#: surface itself is checked on every instance (surface_problem).
TESTED_UVICORN = _private.TESTED

# uvicorn's own deflate settings (websockets_sansio_impl), with server_no_context_takeover.
_SERVER_WINDOW_BITS = 12
_CLIENT_WINDOW_BITS = 12
_COMPRESS_SETTINGS = {"memLevel": 5}

# What this module uses of uvicorn's protocol object, checked on each instance.
_SURFACE = _private.PROTOCOL_SURFACE

_warned = False


class Message(Protocol):
    """A message whose frames are built once: ``wire(None)`` plain, ``wire(bits)`` deflated."""

    def wire(self, window_bits: int | None) -> bytes: ...


class Prepared(TypedDict):
    """The value of ``scope["extensions"]["tbone.prepared"]`` (see the module docstring)."""

    window_bits: int | None
    write_message: Callable[[Message], bool]
    write: Callable[[bytes], bool]
    wait_writable: Callable[[], Awaitable[object]]


def surface_problem(protocol: object) -> str | None:
    """What this module needs of uvicorn's protocol and ``protocol`` lacks, or None."""
    return _private.protocol_problem(protocol, _SURFACE)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol plus prepared frames (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        problem = surface_problem(self)
        self._prepared_ok = problem is None
        self._bits: int | None = None
        self._lingering = False
        if problem is not None:
            _warn_once(problem)
            return
        if self.config.ws_per_message_deflate:
            # The connection uvicorn made, remade with server_no_context_takeover.
            self.conn = ServerProtocol(
                extensions=[
                    ServerPerMessageDeflateFactory(
                        server_no_context_takeover=True,
                        server_max_window_bits=_SERVER_WINDOW_BITS,
                        client_max_window_bits=_CLIENT_WINDOW_BITS,
                        compress_settings=dict(_COMPRESS_SETTINGS),
                    )
                ],
                max_size=self.config.ws_max_size,
                logger=logging.getLogger("uvicorn.error"),
            )

    def handle_parser_exception(self) -> None:
        """The peer's frame broke the rules: send the close frame, then linger (module doc)."""
        transport = self.transport
        if self._lingering:
            return  # more of what the peer sent after the fault: read and dropped
        if not self._prepared_ok or not transport.can_write_eof():
            super().handle_parser_exception()
            return
        self._lingering = True
        close = self.conn.close_sent
        code, reason = (close.code, close.reason) if close is not None else (1006, "")
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        transport.write_eof()  # the peer reads the close frame, then EOF; it closes, we close
        # The transport closes itself on the peer's EOF (eof_received returns None); uvicorn's
        # own close timer bounds the wait, and connection_lost and shutdown cancel it.
        self.close_timer = self.loop.call_later(self.close_timeout, transport.close)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # made only when the handshake is accepted
        if not self._prepared_ok or scope is None:
            return
        # The app's task is created but has not run yet: it sees the extension.
        window_bits = self._window_bits()
        if window_bits is False:
            return  # a deflate that cannot share frames (context takeover): stock behaviour
        extensions = scope.setdefault("extensions", {})
        if extensions is not None:
            self._bits = window_bits
            extensions[EXTENSION] = Prepared(
                window_bits=window_bits,
                write_message=self.write_message,
                write=self.write_frames,
                wait_writable=self.writable.wait,
            )

    def _window_bits(self) -> int | bool | None:
        """The deflate window of this connection, None without deflate, False if unusable."""
        deflate = [e for e in self.conn.extensions if isinstance(e, PerMessageDeflate)]
        if not deflate:
            return None
        if not deflate[0].local_no_context_takeover:
            return False
        bits: int = deflate[0].local_max_window_bits
        return bits

    # Both writers check, in the order of their cost: our close frame went out (or the
    # connection failed: uvicorn then sets close_sent too), the handshake is not done or was
    # answered with an HTTP response, the transport is paused, or it is closing (uvicorn
    # closes it once a close frame comes in, and when the connection is lost).

    def write_message(self, message: Message) -> bool:
        """Write ``message.wire(window_bits)`` now, if the connection may take it; else False."""
        transport = self.transport
        if (
            self.close_sent
            or not self.handshake_complete
            or self.initial_response is not None
            or not self.writable.is_set()
            or transport.is_closing()
        ):
            return False
        transport.write(message.wire(self._bits))
        return True

    def write_frames(self, data: bytes) -> bool:
        """Write whole prepared frames now, if the connection may take them; else False."""
        transport = self.transport
        if (
            self.close_sent
            or not self.handshake_complete
            or self.initial_response is not None
            or not self.writable.is_set()
            or transport.is_closing()
        ):
            return False
        transport.write(data)
        return True


def _warn_once(problem: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning(
            "tbone_asgi.uvicorn:WebSocketProtocol: uvicorn %s is not one it knows (%s; tested "
            "on %s): serving as uvicorn's own websockets-sansio protocol, without prepared "
            "frames",
            uvicorn.__version__,
            problem,
            ", ".join(TESTED_UVICORN),
        )
