"""In-process signals: publish/subscribe between the components of one application.

Rules, in short (``docs/signals.md`` has the long form):

* ``connect(receiver, sender=None, weak=True, dispatch_uid=None)``: ``sender=None`` means "any
  sender". A receiver is connected once per (receiver or ``dispatch_uid``, sender) pair;
  connecting it again changes nothing.
* Receivers are called as ``receiver(sender=sender, **kwargs)``, in registration order, from a
  snapshot taken when the send starts: connecting or disconnecting during a send affects the
  next send, not this one (a weakly held receiver that dies during the send is skipped).
* Plain functions and coroutine functions (or objects with an ``async __call__``) mix freely;
  coroutines are awaited one after the other, never concurrently, so the order holds.
* Senders are matched by identity. A sender is held by a weak reference where it allows one,
  and its connections are dropped when it dies, so a new object that happens to get the same
  ``id()`` never receives another object's signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, NamedTuple, TypeVar

__all__ = ["Signal", "receiver"]

logger = logging.getLogger("tbone.dispatch.signals")

F = TypeVar("F", bound=Callable[..., Any])

#: The key of "any sender" connections.
_ANY_KEY = 0

# Result types that are never awaitable: checking for them first spares most sync receivers
# the slower inspect.isawaitable() (a third of a sync receiver's cost in bench/signals.py).
_PLAIN_RESULTS = frozenset({type(None), bool, int, float, str, bytes, tuple, list, dict})


def _is_async(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    # An object with an ``async def __call__``.
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


def _receiver_key(fn: Any) -> Hashable:
    # A bound method is a new object at each attribute access: key it by (instance, function).
    if inspect.ismethod(fn):
        return (id(fn.__self__), id(fn.__func__))
    return id(fn)


class _Connection(NamedTuple):
    key: tuple[Hashable, int]
    ref: Callable[[], Any]  # returns the receiver, or None once a weakly held one has died
    sender_key: int
    is_async: bool


class _Strong:
    """Mimics a weak reference for receivers held strongly (``weak=False``)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __call__(self) -> Any:
        return self.obj


class Signal:
    """A named hook that any number of receivers can connect to.

    ``await signal.send(sender, **kwargs)`` calls every receiver connected for ``sender`` (or
    for any sender) and returns ``[(receiver, result), ...]`` in registration order.
    """

    def __init__(self, name: str | None = None, doc: str | None = None) -> None:
        self.name = name
        self.__doc__ = doc or Signal.__doc__
        self._connections: tuple[_Connection, ...] = ()  # replaced, never mutated: free snapshots
        self._senders: dict[int, Any] = {}  # sender key -> weak (or strong) ref to the sender
        self._cache: dict[int, tuple[_Connection, ...]] = {}  # id(sender) -> matching connections
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        return f"<Signal{name} receivers={len(self._connections)}>"

    # -- connecting ---------------------------------------------------------------------------

    def connect(
        self,
        receiver: Callable[..., Any],
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
    ) -> Callable[..., Any]:
        """Connect ``receiver`` to this signal and return it (so it can be used as a decorator).

        ``sender=None`` connects it for any sender; otherwise only ``send(sender)`` with that
        very object calls it. With ``weak=True`` (the default) the receiver is held by a weak
        reference and disconnected when it is garbage collected: bound methods live as long as
        their instance, but a lambda or ``functools.partial`` made inline dies at once, so pass
        ``weak=False`` for those. A second ``connect`` of the same receiver (or the same
        ``dispatch_uid``) for the same sender is ignored.

        Raises ``TypeError`` when ``receiver`` is not callable.
        """
        if not callable(receiver):
            raise TypeError(f"signal receivers must be callable, got {receiver!r}")
        sender_key = self._hold_sender(sender)
        key = (dispatch_uid if dispatch_uid is not None else _receiver_key(receiver), sender_key)
        if any(c.key == key for c in self._connections):
            return receiver
        ref: Callable[[], Any]
        if not weak:
            ref = _Strong(receiver)
        else:
            on_death = self._on_receiver_death(key)
            try:
                if inspect.ismethod(receiver):
                    ref = weakref.WeakMethod(receiver, on_death)
                else:
                    ref = weakref.ref(receiver, on_death)
            except TypeError:  # builtins and other objects that refuse weak references
                ref = _Strong(receiver)
        self._connections = (
            *self._connections,
            _Connection(key, ref, sender_key, _is_async(receiver)),
        )
        self._cache.clear()
        return receiver

    def disconnect(
        self,
        receiver: Callable[..., Any] | None = None,
        sender: Any = None,
        dispatch_uid: Hashable | None = None,
    ) -> bool:
        """Disconnect a receiver (or the ``dispatch_uid`` connection) for ``sender``.

        ``sender`` must be the one given to ``connect`` (``None`` for "any sender"). Returns
        True when a connection was removed, False when there was none.
        """
        if dispatch_uid is None and receiver is None:
            raise TypeError("disconnect() needs the receiver or its dispatch_uid")
        rkey = dispatch_uid if dispatch_uid is not None else _receiver_key(receiver)
        skey = _ANY_KEY if sender is None else id(sender)
        return self._remove(lambda c: c.key == (rkey, skey))

    def has_receivers(self, sender: Any = None) -> bool:
        """True when a send from ``sender`` would call at least one receiver.

        Without a sender, True when any receiver at all is connected.
        """
        if sender is None:
            return any(c.ref() is not None for c in self._connections)
        return any(c.ref() is not None for c in self._match(sender))

    def receivers(self, sender: Any = None) -> list[Callable[..., Any]]:
        """The live receivers that a send from ``sender`` would call, in order."""
        conns = self._connections if sender is None else self._match(sender)
        return [r for r in (c.ref() for c in conns) if r is not None]

    @contextlib.contextmanager
    def connected_to(self, receiver: Callable[..., Any], sender: Any = None) -> Iterator[None]:
        """Connect ``receiver`` (strongly) for the duration of a ``with`` block; handy in tests."""
        self.connect(receiver, sender=sender, weak=False)
        try:
            yield
        finally:
            self.disconnect(receiver, sender=sender)

    # -- sending -------------------------------------------------------------------------------

    async def send(self, sender: Any = None, **kwargs: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call each receiver for ``sender`` in order; return ``[(receiver, result), ...]``.

        Coroutine receivers are awaited before the next receiver runs. The first exception a
        receiver raises propagates and the remaining receivers are not called.
        """
        responses = []
        for conn in self._match(sender):
            fn = conn.ref()
            if fn is None:
                continue
            result = fn(sender=sender, **kwargs)
            if conn.is_async or (
                type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result)
            ):
                result = await result
            responses.append((fn, result))
        return responses

    async def send_robust(
        self, sender: Any = None, **kwargs: Any
    ) -> list[tuple[Callable[..., Any], Any]]:
        """Like :meth:`send`, but every receiver runs: an ``Exception`` becomes its result.

        Only ``Exception`` subclasses are caught: cancellation and ``KeyboardInterrupt`` still
        propagate.
        """
        responses: list[tuple[Callable[..., Any], Any]] = []
        for conn in self._match(sender):
            fn = conn.ref()
            if fn is None:
                continue
            try:
                result = fn(sender=sender, **kwargs)
                if conn.is_async or (
                    type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result)
                ):
                    result = await result
            except Exception as exc:
                result = exc
            responses.append((fn, result))
        return responses

    def send_nowait(self, sender: Any = None, **kwargs: Any) -> asyncio.Task[list[Any]]:
        """Schedule a send on the running loop and return its task without waiting for it.

        Unlike a bare ``asyncio.ensure_future(signal.send(...))``, the task is referenced
        until it ends (the event loop only keeps weak references to tasks), every receiver runs
        even if one fails (as in :meth:`send_robust`), and each failure is logged on the
        ``tbone.dispatch.signals`` logger. Must be called from a running event loop.
        """
        task = asyncio.get_running_loop().create_task(self._send_and_log(sender, kwargs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _send_and_log(self, sender: Any, kwargs: dict[str, Any]) -> list[Any]:
        responses = await self.send_robust(sender, **kwargs)
        for fn, result in responses:
            if isinstance(result, Exception):
                logger.error(
                    "signal %r: receiver %r raised",
                    self.name or self,
                    fn,
                    exc_info=(type(result), result, result.__traceback__),
                )
        return responses

    # -- internals -----------------------------------------------------------------------------

    def _match(self, sender: Any) -> tuple[_Connection, ...]:
        # Keyed by id(sender): safe because the cache is cleared whenever a connection changes
        # and whenever a connected sender dies, so a reused id never finds a stale entry.
        skey = id(sender)
        try:
            return self._cache[skey]
        except KeyError:
            pass
        matched = tuple(
            c
            for c in self._connections
            if c.sender_key == _ANY_KEY or (c.sender_key == skey and self._sender_is(skey, sender))
        )
        self._cache[skey] = matched
        return matched

    def _sender_is(self, skey: int, sender: Any) -> bool:
        ref = self._senders.get(skey)
        return ref is not None and ref() is sender

    def _hold_sender(self, sender: Any) -> int:
        if sender is None:
            return _ANY_KEY
        skey = id(sender)
        held = self._senders.get(skey)
        if held is not None and held() is sender:
            return skey
        try:
            self._senders[skey] = weakref.ref(sender, self._on_sender_death(skey))
        except TypeError:  # ints, strings, tuples...: hold them strongly, their id stays theirs
            self._senders[skey] = _Strong(sender)
        return skey

    def _remove(self, predicate: Callable[[_Connection], bool]) -> bool:
        kept = tuple(c for c in self._connections if not predicate(c))
        if len(kept) == len(self._connections):
            return False
        self._connections = kept
        live = {c.sender_key for c in kept}
        for skey in [k for k in self._senders if k not in live]:
            del self._senders[skey]
        self._cache.clear()
        return True

    def _on_receiver_death(self, key: tuple[Hashable, int]) -> Callable[[Any], None]:
        this = weakref.ref(self)

        def remove(_: Any) -> None:
            signal = this()
            if signal is not None:
                signal._remove(lambda c: c.key == key and c.ref() is None)

        return remove

    def _on_sender_death(self, skey: int) -> Callable[[Any], None]:
        this = weakref.ref(self)

        def remove(dead: Any) -> None:
            signal = this()
            if signal is not None and signal._senders.get(skey) is dead:
                signal._remove(lambda c: c.sender_key == skey)
                signal._senders.pop(skey, None)
                signal._cache.clear()

        return remove


def receiver(signal: Signal | Iterable[Signal], **connect_kwargs: Any) -> Callable[[F], F]:
    """Decorator: connect the decorated function to ``signal`` (or to each of several signals).

    ``connect_kwargs`` are those of :meth:`Signal.connect` (``sender``, ``weak``,
    ``dispatch_uid``). The function is returned unchanged.
    """
    signals = [signal] if isinstance(signal, Signal) else list(signal)

    def decorator(fn: F) -> F:
        for s in signals:
            s.connect(fn, **connect_kwargs)
        return fn

    return decorator
