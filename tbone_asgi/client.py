"""A Python client for a tbone subscribe endpoint, with reconnect and resume.

::

    from tbone_asgi.client import subscribe

    async with subscribe("ws://127.0.0.1:8000/ws", events=["resource_create"]) as events:
        async for event in events:
            print(event.name, event.id, event.data)

The rules (``docs/client.md`` has the long form; the browser client follows the same ones):

* Events arrive in the order the server sends them (the channel's order), each once.
* When the connection drops (server restart, network fault, closed as too slow with 1013),
  the client reconnects with exponential backoff and full jitter (restarted only after a
  connection that brought an event or a finished resume, or stayed up for ``backoff[1]``
  seconds), and asks the server for every event after the last id it received
  (``?since=<id>``; before the first event there is none: pass ``since`` to cover that).
  The server answers with every missed event it still holds, in order, however many (it
  sends them at the pace the client reads), then a ``recovered`` frame; ``complete: false``
  means only that events were lost: the server's history did not reach back. Each
  ``recovered`` frame is recorded in :attr:`Subscription.recoveries` and given to
  ``on_recovered``.
* A refusal is not retried: an HTTP status at the handshake (403 for a refused origin or
  subscription; for a path that serves no websocket, 403 from an ASGI app and 404 from
  aiohttp or Sanic) or a close with a policy code (1002, 1003, 1007, 1008, 1009, 1010, or
  4000-4999) ends the iteration with :class:`SubscriptionRefused`.
* ``retries`` is how many times a failed connection attempt is retried in a row, so at most
  ``retries + 1`` attempts fail in a row (None: forever; a connection that opens starts the
  count again); when they run out the iteration ends with :class:`SubscriptionLost` carrying
  the last error.
* Received events wait in a queue of ``queue_size`` events for the ``async for`` loop. When the
  loop falls behind and the queue is full, the client stops reading, the server's outbox fills
  and the server closes the connection with 1013; the client then reconnects and resumes
  (if the loop is still too slow during the replay, the same happens again: see
  ``docs/client.md``).

Needs the ``websockets`` library: ``pip install 'tbone-asgi[client]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from tbone.dispatch.checks import whole_number
from tbone.dispatch.errors import TBoneError
from tbone.dispatch.events import Event
from tbone.dispatch.extras import requires
from tbone.dispatch.timeouts import wait_at_most
from tbone_asgi.client_state import REFUSING_CLOSE_CODES as REFUSING_CLOSE_CODES
from tbone_asgi.client_state import Backoff, ClientState, Recovered, call, check_events

with requires(__name__, "the 'websockets' library", extra="client"):
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Recovered",
    "SubscribeFailed",
    "SubscribeOptions",
    "Subscription",
    "SubscriptionError",
    "SubscriptionLost",
    "SubscriptionRefused",
    "subscribe",
]

logger = logging.getLogger("tbone_asgi.client")


class SubscriptionError(TBoneError):
    """Base class of the errors that end a subscription's iteration."""


class SubscriptionRefused(SubscriptionError):
    """The server refused the subscription; reconnecting with the same request cannot help.

    ``status`` is the HTTP status of a refused handshake (else None), and ``reason`` the
    response's text body if it has one (a tbone endpoint says there why it refused, on servers
    that let it); ``code`` and ``reason`` are those of a refusing close frame (else None).
    """

    def __init__(
        self,
        url: str,
        *,
        status: int | None = None,
        code: int | None = None,
        reason: str = "",
    ) -> None:
        self.url = url
        self.status = status
        self.code = code
        self.reason = reason
        if status is not None and reason:
            what = f"answered HTTP {status} to the websocket handshake"
            hint = f"it says: {' '.join(reason.split())}"
        elif status is not None:
            what = f"answered HTTP {status} to the websocket handshake"
            hint = (
                "check the path, the events asked for (a route created with events=[...] "
                "refuses others), and the allowed origins and authorize hook of the route"
            )
        else:
            what = f"closed the connection with code {code} ({reason or 'no reason given'})"
            hint = "the server rejected what this client sent; see the code and reason"
        super().__init__(f"{url}: the server {what}; {hint}")


class SubscribeFailed(SubscriptionError):
    """The server refused a :meth:`Subscription.subscribe` call; the subscription goes on.

    ``events`` are the names asked for (none of them was subscribed: a subscribe is all or
    nothing); ``code`` and ``message`` come from the server's error frame.
    """

    def __init__(self, events: list[str], error: dict[str, Any]) -> None:
        self.events = events
        self.code = str(error.get("code"))
        self.message = str(error.get("message"))
        super().__init__(f"subscribing to {events} was refused: {self.code}: {self.message}")


class SubscriptionLost(SubscriptionError):
    """Reconnecting failed ``attempts`` times in a row; ``__cause__`` is the last error."""

    def __init__(self, url: str, attempts: int, last_error: BaseException) -> None:
        self.url = url
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(
            f"{url}: could not connect after {attempts} attempt{'s' if attempts != 1 else ''} "
            f"(last error: {type(last_error).__name__}: {last_error}); is the server up? "
            "Pass retries=None to keep trying."
        )


class SubscribeOptions(TypedDict, total=False):
    """The keyword options of :func:`subscribe`, as :class:`Subscription` takes them.

    One type for both, so they are spelt once: see :func:`subscribe` for what each means.
    """

    since: str | None
    retries: int | None
    backoff: tuple[float, float]
    queue_size: int
    open_timeout: float
    ping_interval: float | None
    origin: str | None
    headers: dict[str, str] | None
    on_connected: Callable[[Subscription], Any] | None
    on_recovered: Callable[[Recovered], Any] | None
    on_error: Callable[[dict[str, Any]], Any] | None


class _End:
    """Queued after the last event: the iteration ends, raising ``error`` if there is one."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _Acks:
    """ping, subscribe and unsubscribe run one at a time: each sends its frame and a ping,
    and an error frame that arrives before the pong answers that frame."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = asyncio.Lock()
        self._pong: asyncio.Future[None] | None = None
        self._errors: list[dict[str, Any]] = []
        self._stale = 0  # pongs still due for pings that timed out

    async def send(
        self,
        current: Callable[[], ClientConnection | None],
        frame: dict[str, Any] | None,
        timeout: float,
        *,
        strict: bool = False,
    ) -> list[dict[str, Any]]:
        """Send ``frame`` then a ping on the connection ``current()`` gives once it is this
        call's turn; return the error frames received before the pong.

        Without a connection (or if it drops meanwhile) returns [] unless ``strict``, in which
        case ``ConnectionError`` is raised: the next connection asks for the events.
        """
        async with self._lock:
            ws = current()
            if ws is None:
                if strict:
                    raise ConnectionError(f"{self.url}: not connected")
                return []
            pong = self._pong = asyncio.get_running_loop().create_future()
            self._errors = []
            try:
                if frame is not None:
                    await ws.send(json.dumps(frame))
                await ws.send('{"type":"ping"}')
                await wait_at_most(asyncio.shield(pong), timeout)
            except TimeoutError:
                self._stale += 1  # its pong may still come: it must not answer the next
                raise TimeoutError(f"{self.url}: no answer within {timeout}s") from None
            except (ConnectionClosed, ConnectionError):
                if strict:
                    raise ConnectionError(f"{self.url}: the connection closed") from None
                return []
            finally:
                self._pong = None
                pong.cancel()
            return self._errors

    def pong(self) -> None:
        """A pong frame arrived."""
        if self._stale:
            self._stale -= 1
        elif self._pong is not None and not self._pong.done():
            self._pong.set_result(None)

    def error(self, payload: dict[str, Any]) -> None:
        """An error frame arrived."""
        if self._pong is not None:
            self._errors.append(payload)

    def dropped(self) -> None:
        """The connection is gone: a waiting call learns it."""
        self._stale = 0
        if self._pong is not None and not self._pong.done():
            self._pong.set_exception(ConnectionError("the connection closed"))


class Subscription:
    """An open subscription: iterate it for :class:`~tbone.dispatch.events.Event` objects.

    Made by :func:`subscribe`; see the module docstring for the reconnect and resume rules.
    The I/O around a :class:`~tbone_asgi.client_state.ClientState` (the sans-I/O part: what
    to ask for, what each frame means) and a :class:`~tbone_asgi.client_state.Backoff`.
    """

    def __init__(
        self,
        url: str,
        events: Iterable[str] | None = None,
        *,
        since: str | None = None,
        retries: int | None = None,
        backoff: tuple[float, float] = (0.1, 5.0),
        queue_size: int = 1000,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        origin: str | None = None,
        headers: dict[str, str] | None = None,
        on_connected: Callable[[Subscription], Any] | None = None,
        on_recovered: Callable[[Recovered], Any] | None = None,
        on_error: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.state = ClientState(url, events, since)
        self._backoff = Backoff(backoff, retries)
        whole_number("queue_size", queue_size)
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.origin = origin
        self.headers = dict(headers or {})
        self.on_connected = on_connected
        self.on_recovered = on_recovered
        self.on_error = on_error
        self._queue: asyncio.Queue[Event | _End] = asyncio.Queue(queue_size)
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()
        self._acks = _Acks(url)
        self._task: asyncio.Task[None] | None = None
        self._ended = False

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<Subscription {self.url} events={self.events} {state} last_id={self.last_id}>"

    # -- public API --------------------------------------------------------------------------

    @property
    def events(self) -> list[str]:
        """The event names asked for (after every reconnect too)."""
        return self.state.events

    @property
    def last_id(self) -> str | None:
        """Id of the last event received; a reconnect resumes after it."""
        return self.state.last_id

    @property
    def recoveries(self) -> list[Recovered]:
        """Every ``recovered`` frame received, oldest first."""
        return self.state.recoveries

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Every ``error`` frame's payload received, oldest first."""
        return self.state.errors

    @property
    def connections(self) -> int:
        """Successful connections so far (1 after the first, 2 after one reconnect, ...)."""
        return self.state.connections

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until a connection is open. Raises ``TimeoutError`` after ``timeout`` seconds."""
        try:
            await wait_at_most(self._connected.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.url}: not connected within {timeout}s") from None

    async def wait_disconnected(self, timeout: float = 10.0) -> None:
        """Wait until no connection is open (a drop about to be retried, or the end); raises
        ``TimeoutError`` after ``timeout`` seconds."""
        try:
            await wait_at_most(self._disconnected.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.url}: still connected after {timeout}s") from None

    async def subscribe(self, events: Iterable[str], timeout: float = 10.0) -> None:
        """Add ``events`` to this subscription (also after every reconnect).

        When connected, awaits the server's answer: raises :class:`SubscribeFailed` (and
        keeps none of ``events``) when the server refuses them; the connection stays. When not
        connected, the events are asked for when the next connection opens. Raises
        ``ValueError`` for a name the protocol does not allow.
        """
        names = [n for n in check_events(events) if n not in self.events]
        if not names:
            return
        self.state.events.extend(names)
        errors = await self._acks.send(
            lambda: self._ws, {"type": "subscribe", "payload": {"events": names}}, timeout
        )
        if errors:
            self.state.events = [n for n in self.events if n not in names]
            raise SubscribeFailed(names, errors[0])

    async def unsubscribe(self, events: Iterable[str], timeout: float = 10.0) -> None:
        """Stop receiving ``events``; awaits the server's answer when connected.

        Events already queued are still yielded.
        """
        names = [n for n in check_events(events) if n in self.events]
        if not names:
            return
        self.state.events = [n for n in self.events if n not in names]
        await self._acks.send(
            lambda: self._ws, {"type": "unsubscribe", "payload": {"events": names}}, timeout
        )

    async def ping(self, timeout: float = 10.0) -> float:
        """Send a protocol ``ping`` and wait for the ``pong``; return the round trip in seconds.

        The server answers frames in order, so once this returns every ``subscribe`` sent
        before (and the connect-time subscriptions) is in effect. Raises ``ConnectionError``
        when not connected, ``TimeoutError`` when no pong comes.
        """
        if self._ws is None:
            raise ConnectionError(f"{self.url}: not connected")
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._acks.send(lambda: self._ws, None, timeout, strict=True)
        return loop.time() - start

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._ended:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, _End):
            self._ended = True
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the connection task (done by :func:`subscribe`)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"tbone subscription {self.url}"
            )

    async def close(self) -> None:
        """Close the connection and stop reconnecting. Awaits the connection task's end."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        self._connected.clear()
        self._disconnected.set()

    def connect_url(self) -> str:
        """The URL of the next connection: ``events`` and, to resume, ``since`` in the query."""
        return self.state.connect_url()

    async def _run(self) -> None:
        try:
            await self._connect_loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug (ours, or a callback's) must end the iteration with its error, not leave
            # the consumer waiting forever on a queue nobody fills.
            logger.exception("%s: the subscription failed", self.url)
            await self._end(exc)

    async def _connect_loop(self) -> None:
        backoff = self._backoff
        last_error: BaseException | None = None
        while True:
            try:
                outcome, last_error = await self._attempt()
            finally:  # the connection is gone, or never opened
                self._ws = None
                self._connected.clear()
                self._disconnected.set()
                self._acks.dropped()
            if outcome == "end":
                return
            if outcome == "start over":
                continue
            if backoff.exhausted():
                assert last_error is not None
                lost = SubscriptionLost(self.url, backoff.failures, last_error)
                lost.__cause__ = last_error
                await self._end(lost)
                return
            wait = backoff.next_wait()
            logger.info(
                "%s: %s (%s); reconnecting in %.2fs",
                self.url,
                "disconnected" if outcome == "closed" else "could not connect",
                last_error,
                wait,
                # Failed in a row: after a few, `listen` says nothing answers (__main__).
                extra={"failed_in_a_row": backoff.failures},
            )
            await asyncio.sleep(wait)

    async def _attempt(self) -> tuple[str, BaseException | None]:
        # One connection: "end" (the iteration ended), "start over" (at once), "closed" (by
        # the server) or "failed" (it did not open), with the error to report.
        loop = asyncio.get_running_loop()
        asked = list(self.events)  # what the URL asks for; later changes are sent on open
        try:
            async with connect(
                self.connect_url(),
                origin=self.origin,  # type: ignore[arg-type]
                additional_headers=self.headers or None,
                open_timeout=self.open_timeout,
                ping_interval=self.ping_interval,
                proxy=None,  # the endpoint is reached directly, as a browser on its page would
            ) as ws:
                self._backoff.opened()
                self.state.opened()
                opened = loop.time()
                await self._serve(ws, asked)
            # Start the backoff afresh only after a connection that worked: one that brought
            # an event or a finished resume, or stayed up for a while. A server that accepts
            # and then closes at once (say, with 1013 while it replays a backlog) must not get
            # a reconnect storm.
            if self.state.progress or loop.time() - opened >= self.backoff[1]:
                self._backoff.worked()
            # The server closed the connection (for example 1001 or 1012 on restart).
            code = ws.close_code
            next_step = self.state.closed(code)
            if next_step == "start over":
                if self.on_recovered is not None:
                    call(self.on_recovered, self.recoveries[-1])
                return "start over", None
            if next_step == "refused":
                reason = ws.close_reason or ""
                await self._end(SubscriptionRefused(self.url, code=code, reason=reason))
                return "end", None
            return "closed", ConnectionError(f"closed by the server with code {code}")
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status < 500 and status != 429:
                refused = SubscriptionRefused(self.url, status=status, reason=_text(exc.response))
                await self._end(refused)
                return "end", None
            self._backoff.failed()
            return "failed", exc
        except (OSError, asyncio.TimeoutError, TimeoutError, InvalidHandshake) as exc:
            self._backoff.failed()
            return "failed", exc

    async def _serve(self, ws: ClientConnection, asked: list[str]) -> None:
        self._ws = ws
        self._disconnected.clear()
        self._connected.set()
        if self.on_connected is not None:
            # Before any frame is read: the caller hears of the connection before its events.
            call(self.on_connected, self)
        with contextlib.suppress(ConnectionClosed):
            for frame in self.state.changes(asked):
                await ws.send(json.dumps(frame))
            async for message in ws:
                found = self.state.receive(message)
                if isinstance(found, Event):
                    # Queued before last_id moves: an event is only "seen" once it is queued.
                    await self._queue.put(found)
                    self.state.queued(found)
                elif isinstance(found, Recovered):
                    if self.on_recovered is not None:
                        call(self.on_recovered, found)
                elif found == "pong":
                    self._acks.pong()
                elif isinstance(found, dict):
                    self._acks.error(found)
                    if self.on_error is not None:
                        call(self.on_error, found)

    async def _end(self, error: BaseException | None) -> None:
        # The consumer may be behind: wait for room rather than drop the ending.
        await self._queue.put(_End(error))


def _text(response: Any) -> str:
    """A refused handshake's body, if it is short text (a tbone endpoint's reason)."""
    body = getattr(response, "body", None) or b""
    content_type = response.headers.get("Content-Type", "")
    if not content_type.startswith("text/plain") or len(body) > 2000:
        return ""
    return bytes(body).decode("utf-8", "replace").strip()


@contextlib.asynccontextmanager
async def subscribe(
    url: str, events: Sequence[str] | None = None, **options: Unpack[SubscribeOptions]
) -> AsyncIterator[Subscription]:
    """Subscribe to ``events`` at the websocket ``url``; yield a :class:`Subscription`.

    ``events``: event names (None: those the route subscribes every client to). ``since``:
    resume after this event id from the start. ``retries``: how many times a failed attempt
    is retried in a row before giving up, so ``retries + 1`` attempts (None: forever).
    ``backoff``: (first, max) seconds between attempts, doubled each time, with full jitter.
    ``origin`` and ``headers`` go into the handshake (a route with ``allowed_origins`` may
    need ``origin``). ``on_connected(subscription)`` is called each time a connection opens
    (``subscription.connections`` counts them), before its first frame is read;
    ``on_recovered`` and ``on_error`` are called for ``recovered`` and ``error`` frames.

    The connection starts when the block is entered (without waiting for it: use
    :meth:`Subscription.wait_connected`) and is closed when it is left. Raises ``ValueError``
    for a URL that is not ws:// or wss:// and for a bad event name.
    """
    sub = Subscription(url, events, **options)
    sub.start()
    try:
        yield sub
    finally:
        await sub.close()
