"""A scripted MongoDB for wire-level tests: mockupdb's server on a real socket, the real driver.

:class:`ScriptedMongo` answers the handshake itself and routes every other command either to
an automatic answer (:meth:`ScriptedMongo.auto`) or to a queue the test reads with
``await mongo.receive("find")`` and answers by hand (``request.ok(...)``, ``.command_err``,
``.hangup()``), so a test shows the exact commands the driver sends. :attr:`requests` keeps
every command in arrival order.

mockupdb 1.8.1 works with PyMongo 4.20 (``AsyncMongoClient``) and Motor 3.7 once the
handshake reports ``maxWireVersion`` >= 8 (PyMongo refuses older servers). One work-around:
stopping the server (see :meth:`ScriptedMongo.stop`). Its blocking ``receives`` is replaced
by per-command queues read from a thread, because the channel's consumer and a publisher
talk to the server at the same time and mockupdb's single queue would make the tests depend
on which request came first.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from mockupdb import MockupDB

__all__ = ["DRIVERS", "ScriptedMongo", "connect", "reply_cursor"]

#: The drivers a MongoChannel accepts; tests run once with each.
DRIVERS = ("pymongo", "motor")

# Wire version 13 is MongoDB 5.0. No logicalSessionTimeoutMinutes: the driver then sends no
# session ids, which keeps the recorded commands short.
_HELLO = {
    "ismaster": True,
    "minWireVersion": 0,
    "maxWireVersion": 13,
    "maxBsonObjectSize": 16 * 1024 * 1024,
    "maxMessageSizeBytes": 48_000_000,
    "maxWriteBatchSize": 100_000,
}
_HANDSHAKE = {"ismaster", "hello", "ping", "endsessions", "buildinfo"}


class ScriptedMongo:
    """A mock ``mongod`` on 127.0.0.1 and a free port (see the module docstring)."""

    def __init__(self) -> None:
        self.server = MockupDB(auto_ismaster=_HELLO, request_timeout=5)
        self.server.autoresponds("ping")
        self.requests: list[dict[str, Any]] = []
        self._queues: dict[str, queue.Queue[Any]] = {}
        self._auto: dict[str, Callable[[Any], Any]] = {}
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        # Given as a bound method, the router sees every request before the handshake's
        # responder and passes the handshake on by returning None.
        self.server.autoresponds(self._route)
        self.auto("killCursors", lambda r: r.ok(cursorsKilled=r.doc["cursors"]))

    @property
    def uri(self) -> str:
        return str(self.server.uri)

    def start(self) -> ScriptedMongo:
        self.server.run()
        return self

    def stop(self) -> None:
        """Stop the server at once, with no thread left failing.

        Works around mockupdb 1.8.1: its accept thread sleeps in ``select`` for up to a
        second before it sees ``stop()`` (a second per test), and a ``stop()`` that comes
        before the thread first ran makes it raise EBADF. Waking it with a connection and
        joining it before the listening socket is closed avoids both.
        """
        server: Any = self.server
        server._stopped = True
        with contextlib.suppress(OSError), socket.create_connection(server.address, timeout=1):
            pass
        server._accept_thread.join(5)
        server.stop()

    def auto(self, name: str, handler: Callable[[Any], Any] | None) -> None:
        """Answer every later ``name`` command with ``handler(request)`` (None: queue them)."""
        with self._lock:
            if handler is None:
                self._auto.pop(name.lower(), None)
            else:
                self._auto[name.lower()] = handler

    def commands(self, name: str) -> list[dict[str, Any]]:
        """The ``name`` commands received so far, as documents."""
        with self._lock:
            return [r for r in self.requests if next(iter(r)).lower() == name.lower()]

    async def receive(self, name: str, timeout: float = 5.0) -> Any:
        """The next ``name`` command not answered automatically; AssertionError on timeout."""
        waiting = self._queue(name)
        try:
            return await asyncio.to_thread(waiting.get, True, timeout)
        except queue.Empty:
            with self._lock:
                seen = [next(iter(r)) for r in self.requests]
            raise AssertionError(
                f"no {name!r} command within {timeout}s; received: {seen}"
            ) from None

    async def wait_count(self, name: str, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` ``name`` commands arrived in all; AssertionError on timeout."""

        def arrived() -> bool:
            return sum(next(iter(r)).lower() == name.lower() for r in self.requests) >= count

        def wait() -> bool:
            with self._arrived:
                return self._arrived.wait_for(arrived, timeout)

        if not await asyncio.to_thread(wait):
            raise AssertionError(f"fewer than {count} {name!r} commands within {timeout}s")

    def pending(self, name: str) -> int:
        """How many ``name`` commands wait for an answer."""
        return self._queue(name).qsize()

    def _queue(self, name: str) -> queue.Queue[Any]:
        with self._lock:
            return self._queues.setdefault(name.lower(), queue.Queue())

    def _route(self, request: Any) -> Any:
        name = str(request.command_name or "").lower()
        if name in _HANDSHAKE:
            return None
        with self._lock:
            self.requests.append(dict(request.doc))
            self._arrived.notify_all()
            handler = self._auto.get(name)
        if handler is not None:
            handler(request)
            return True
        self._queue(name).put(request)
        return True


def reply_cursor(request: Any, docs: list[dict[str, Any]], cursor_id: int = 0) -> None:
    """Answer a ``find``, ``getMore`` or ``listCollections`` with a batch of ``docs``.

    ``cursor_id`` 0 means the cursor is exhausted (for a tailable cursor: dead).
    """
    doc = request.doc
    name = next(iter(doc))
    if name == "getMore":
        ns, batch = f"{doc['$db']}.{doc['collection']}", "nextBatch"
    else:
        ns, batch = f"{doc['$db']}.{doc[name]}", "firstBatch"
    request.ok(cursor={"id": cursor_id, "ns": ns, batch: docs})


@asynccontextmanager
async def connect(driver: str, uri: str) -> AsyncIterator[Any]:
    """A client of ``driver`` ("pymongo": AsyncMongoClient, "motor") with short timeouts.

    Retries are off so that each fault reaches the channel, which is what the tests show.
    """
    options: dict[str, Any] = {
        "serverSelectionTimeoutMS": 3000,
        "connectTimeoutMS": 2000,
        "retryReads": False,
        "retryWrites": False,
    }
    if driver == "pymongo":
        from pymongo import AsyncMongoClient

        client: Any = AsyncMongoClient(uri, **options)
        try:
            yield client
        finally:
            await client.close()
    elif driver == "motor":
        from motor.motor_asyncio import AsyncIOMotorClient

        client = AsyncIOMotorClient(uri, **options)
        try:
            yield client
        finally:
            client.close()
    else:  # pragma: no cover - a typo in a test
        raise ValueError(f"unknown driver {driver!r}; use one of {DRIVERS}")
