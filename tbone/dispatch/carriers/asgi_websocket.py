"""ASGIWebSocketCarrier: a carrier for an ASGI websocket (Starlette ``WebSocket`` or raw ``send``).

Frames go straight through the ASGI ``send`` callable as ``{"type": "websocket.send", "text":
...}``, pre-encoded by the channel. The rules of :mod:`tbone.dispatch.carriers` hold; what is
special here:

* **One call per frame.** Once the websocket is accepted, a frame is one call of ``send``
  itself (no ``send_text`` coroutine around it), and Starlette's exception-handling wrapper,
  which only watches ``http.response.start``, is skipped (:func:`server_send`). Any other
  wrapper, such as an application's middleware, still sees every frame.

* **Gone peers.** Servers report a closed connection differently: an ``OSError`` (uvicorn's
  ``ClientDisconnected``, the ASGI spec's advice), Starlette's ``WebSocketDisconnect``, or a
  ``RuntimeError`` when a close frame already went out. Each means "the peer left": the carrier
  returns False and is dropped, and no traceback is logged.
* **Backpressure.** Behind uvicorn, ``send`` may return before the bytes leave, so they pile up
  in the transport's write buffer. :meth:`ASGIWebSocketCarrier.backlog` reads that buffer where
  the server lets it be reached (uvicorn: the transport of the protocol object behind ``send``,
  found through wrappers such as Starlette's exception middleware); a peer that stops reading
  is then closed with 1013. Servers whose ``send`` waits for the buffer to drain (Hypercorn, and
  uvicorn's protocols once their buffer passes the high-water mark) make our own outbox fill
  instead, with the same result. ``docs/asgi.md`` lists what holds per server.
* **Closing a stuck peer.** A close frame cannot pass a full buffer; after ``close_timeout``
  seconds the transport is aborted when it can be reached, so the server frees the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from tbone.dispatch._private import starlette as _starlette
from tbone.dispatch._private import uvicorn as _uvicorn
from tbone.dispatch.carriers import Carrier
from tbone.dispatch.carriers.options import CarrierOptions
from tbone.dispatch.timeouts import wait_at_most

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tbone.dispatch.events import Event

__all__ = ["ASGIWebSocketCarrier", "find_server_protocol", "find_transport", "server_send"]

logger = logging.getLogger("tbone.dispatch.carriers.asgi")

ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _disconnect_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, OSError]
    try:  # Starlette is an optional extra: only its own exception is needed from it.
        from starlette.websockets import WebSocketDisconnect
    except ImportError:  # pragma: no cover - depends on the environment
        pass
    else:
        errors.append(WebSocketDisconnect)
    return tuple(errors)


class ASGIWebSocketCarrier(Carrier):
    """Carrier for an ASGI websocket: a Starlette ``WebSocket`` or a raw ASGI ``send`` callable.

    Two carriers are equal when they wrap the same object. ``close_timeout``: seconds a close
    frame may wait for a peer that does not read before the connection is aborted (default 5).
    ``transport``: the ``asyncio.Transport`` behind the connection, when the server exposes it
    in a way :func:`find_transport` does not know; it is used for :meth:`backlog` and aborts.
    ``max_messages``, ``max_bytes`` and ``slow_timeout``
    (:class:`~tbone.dispatch.carriers.options.CarrierOptions`) are those of :class:`Carrier`.

    When frames may go out: a Starlette ``WebSocket`` must be accepted before frames are sent
    to it (one sent earlier fails with a RuntimeError saying so). A raw ``send`` is taken as
    accepted; pass ``accepted=False`` to hold frames until :meth:`mark_accepted` is called,
    which is how the endpoint makes the carrier before it answers the handshake.
    """

    __slots__ = (
        "_accepted",
        "_close_sent",
        "_disconnected",
        "_ended",
        "_frames",
        "_looked_up",
        "_send",
        "_starlette",
        "_transport",
        "_wait_writable",
        "_window_bits",
        "_write_frames",
        "close_timeout",
    )

    disconnect_errors: ClassVar[tuple[type[BaseException], ...]] = _disconnect_errors()

    def __init__(
        self,
        websocket: Any,
        *,
        close_timeout: float = 5.0,
        transport: asyncio.Transport | None = None,
        accepted: bool = True,
        prepared: Mapping[str, Any] | None = None,
        **options: Unpack[CarrierOptions],
    ) -> None:
        super().__init__(websocket, **options)
        # The server's "tbone.prepared" extension (tbone_asgi.uvicorn): events are written
        # as their prepared wire bytes, built once per event for every subscriber.
        self._write_frames: Callable[[bytes], bool] | None = None
        self._wait_writable: Callable[[], Awaitable[object]] | None = None
        self._window_bits: int | None = None
        if prepared is not None:
            # The server's own writers, called with no layer of ours between: they check
            # that the connection takes bytes now (open, accepted, not paused).
            self._prepared = prepared["write_message"]
            self._write_frames = prepared["write"]
            self._wait_writable = prepared["wait_writable"]
            self._window_bits = prepared["window_bits"]
            self._prepared_run = self._write_events
        send = _starlette.websocket_send(websocket)
        self._starlette = send is not None
        if send is not None:
            self._send: ASGISend = send
        elif callable(websocket):
            self._send = websocket
        else:
            raise TypeError(
                "ASGIWebSocketCarrier wraps a starlette.websockets.WebSocket or an ASGI send "
                f"callable, got {type(websocket).__name__}"
            )
        self.close_timeout = close_timeout
        self._transport = transport
        self._looked_up = transport is not None
        # Frames go to the server's own send once accepted (see _start_send).
        self._frames: ASGISend | None = None
        self._accepted = _Signal()
        if accepted and not self._starlette:
            self.mark_accepted()
        self._ended = _Signal()
        self._close_sent = _Signal()
        self._disconnected = False

    # -- lifecycle seen by the endpoint ------------------------------------------------------

    def mark_accepted(self) -> None:
        """The websocket was accepted: frames waiting for that may now go out."""
        self._accepted.set()
        self._frames = server_send(self._send)

    @property
    def is_accepted(self) -> bool:
        """True once frames may go out (see :meth:`mark_accepted`)."""
        return self._accepted.is_set

    #: The names before :meth:`mark_accepted` (a setter) was told from :attr:`is_accepted`.
    accepted = mark_accepted
    accepted_yet = is_accepted

    async def wait_ended(self) -> None:
        """Return once the carrier is closed (too slow, failed send, or :meth:`close`)."""
        await self._ended.wait()

    def when_ended(self, callback: Callable[[], object] | None) -> None:
        """Call ``callback`` (once) when the carrier closes; None forgets a callback set earlier.

        Cheaper than a task in :meth:`wait_ended` for code that waits for something else
        meanwhile (the endpoint waits for the client's next frame).
        """
        self._ended.callback = callback

    def disconnected(self) -> None:
        """The server reported the peer gone (``websocket.disconnect``): stop sending to it."""
        self._disconnected = True
        self._peer_gone()

    async def wait_close_sent(self, timeout: float) -> bool:
        """Wait until our close frame went out (or was given up); False after ``timeout``."""
        try:
            await wait_at_most(self._close_sent.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _check_starlette_state(self) -> None:
        state = _state_name(self.connection.application_state)
        if state == "CONNECTED":
            self.mark_accepted()
        elif state == "DISCONNECTED":
            raise ConnectionResetError("the websocket is closed")
        else:
            raise NotAcceptedError(
                f"{self!r}: the websocket is not accepted yet; await websocket.accept() "
                "before subscribing its carrier"
            )

    def _send_failed(self, exc: Exception) -> None:
        if type(exc) is RuntimeError:
            # Servers raise a plain RuntimeError for a send after the close frame went out
            # (the peer closed first, or we did): for us that is a peer that left.
            exc = ConnectionResetError(f"websocket already closing: {exc}")
        super()._send_failed(exc)

    def _on_close(self, code: int | None) -> None:
        super()._on_close(code)
        self._ended.set()

    # -- Carrier -----------------------------------------------------------------------------

    async def send_text(self, text: str) -> None:
        if not self._accepted.is_set:
            if self._starlette:
                self._check_starlette_state()
            else:
                await self._accepted.wait()
        try:
            await self._send({"type": "websocket.send", "text": text})
        except RuntimeError as exc:
            raise ConnectionResetError(f"websocket already closing: {exc}") from exc

    @property
    def prepared(self) -> bool:
        """True when events go out as prepared frames (the server's "tbone.prepared")."""
        return self._prepared is not None

    def _write_events(self, events: Sequence[Event]) -> bool:
        # A run of events: their frames, built once per event for every subscriber, in one
        # write, or nothing when the connection does not take bytes now.
        write = self._write_frames
        assert write is not None
        bits = self._window_bits
        return write(b"".join([event.wire(bits) for event in events]))

    def _start_send(self, text: str | Event) -> Coroutine[Any, Any, None]:
        # Once accepted, a frame is one call of the server's own send: no send_text coroutine
        # and no Starlette wrapper around it (two coroutine layers of each delivery's cost).
        frames = self._frames
        if frames is None:
            return self.send_text(text if isinstance(text, str) else text.frame)
        if isinstance(text, str):
            return frames({"type": "websocket.send", "text": text})  # type: ignore[return-value]
        if self._prepared is not None:
            return self._send_prepared(text)
        return frames({"type": "websocket.send", "text": text.frame})  # type: ignore[return-value]

    async def _send_prepared(self, event: Event) -> None:
        # The transport was paused (or the connection is closing): wait until it may take
        # bytes again. If it still does not, the server's own send decides, as for any frame:
        # it sends the text (a pause again), or raises for a connection that is closing.
        wait_writable = self._wait_writable
        assert wait_writable is not None
        await wait_writable()
        assert self._prepared is not None
        if self._prepared(event):
            return
        assert self._frames is not None
        await self._frames({"type": "websocket.send", "text": event.frame})

    async def close_connection(self, code: int, reason: str) -> None:
        try:
            await self._close_connection(code, reason)
        finally:
            self._close_sent.set()

    async def _close_connection(self, code: int, reason: str) -> None:
        if self._disconnected:
            return  # the server already said the peer is gone
        if self._starlette:
            if _state_name(self.connection.application_state) != "CONNECTED":
                return  # not accepted (the app answers the handshake), or already closed
        elif not self._accepted.is_set:
            return  # never accepted: the endpoint answers the handshake itself
        message = {"type": "websocket.close", "code": code, "reason": reason}
        try:
            await wait_at_most(self._send_close(message), self.close_timeout)
        except TimeoutError:
            # The peer does not read, so the close frame cannot get through: free the
            # connection now rather than keep its buffers until the server's ping timeout.
            transport = self.transport()
            logger.info(
                "%r: close frame not sent within %ss; %s",
                self,
                self.close_timeout,
                "aborting the connection" if transport else "leaving it to the server",
            )
            if transport is not None:
                transport.abort()
        except RuntimeError:
            pass  # a close frame already went out

    async def _send_close(self, message: dict[str, Any]) -> None:
        if self._starlette:
            # Through the WebSocket so its state says "disconnected" for the endpoint too.
            await self.connection.close(message["code"], message["reason"])
        else:
            await self._send(message)

    def backlog(self) -> int:
        """Bytes in the server's transport write buffer for this connection (0 if unknown)."""
        transport = self.transport()
        if transport is None:
            return 0
        try:
            return int(transport.get_write_buffer_size())
        except Exception:  # a closed or foreign transport: nothing we can measure
            return 0

    def transport(self) -> asyncio.Transport | None:
        """The server's transport for this connection, when it can be reached (cached)."""
        if not self._looked_up:
            self._looked_up = True
            self._transport = find_transport(self._send)
        return self._transport


def server_send(send: ASGISend) -> ASGISend:
    """``send`` without the Starlette wrappers that only watch HTTP responses.

    Starlette's exception handling wraps ``send`` in a coroutine that notes whether an
    ``http.response.start`` went out and passes every message on; for websocket frames it adds
    a coroutine per frame and nothing else. Any other wrapper (an application's middleware)
    is kept. (Starlette's private surface: :mod:`tbone.dispatch._private.starlette`.)
    """
    return _starlette.unwrap_send(send)


class NotAcceptedError(RuntimeError):
    """A frame for a Starlette ``WebSocket`` that was not accepted yet (a bug of the caller)."""


class _Signal:
    """A one-shot flag tasks can wait for: an ``asyncio.Event`` costs ~760 bytes, this ~70.

    The future waiters share is made only when one waits; ``callback`` is called once, when
    the flag is set.
    """

    __slots__ = ("_future", "callback", "is_set")

    def __init__(self) -> None:
        self.is_set = False
        self._future: asyncio.Future[None] | None = None
        self.callback: Callable[[], object] | None = None

    def set(self) -> None:
        if self.is_set:
            return
        self.is_set = True
        future, callback, self.callback = self._future, self.callback, None
        if future is not None and not future.done():
            future.set_result(None)
        if callback is not None:
            callback()

    async def wait(self) -> None:
        if self.is_set:
            return
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        # Shielded: one waiter cancelled must not cancel the future the others wait on.
        await asyncio.shield(self._future)


def find_transport(send: Any, *, depth: int = 6) -> asyncio.Transport | None:
    """The ``asyncio.Transport`` behind an ASGI ``send`` callable, or None.

    uvicorn hands the app a bound method of its protocol object, which has ``transport``
    (:func:`find_server_protocol` finds it). Hypercorn does not expose its transport.
    """
    return _uvicorn.transport_of(send, depth=depth)


def find_server_protocol(send: Any, *, depth: int = 6) -> Any:
    """The server's protocol object behind an ASGI ``send`` callable, or None.

    That is the object ``send`` is a bound method of, when it holds the connection's
    ``transport`` (uvicorn's private surface: :mod:`tbone.dispatch._private.uvicorn`).
    Middleware closures are followed up to ``depth`` wrappers deep.
    """
    return _uvicorn.server_protocol(send, depth=depth)


def _state_name(state: Any) -> str:
    return str(getattr(state, "name", state))
