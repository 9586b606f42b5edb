"""The servers the websocket benchmarks run: ``python -m bench._server KIND [--workers N]``.

Each is a real uvicorn server on 127.0.0.1 in its own process (Hypercorn with ``--server
hypercorn``; the ``floor`` kind is its own server, below). It binds a free port, prints it on
stdout (one line), then serves. Every kind serves:

* ``/ws``: the websocket endpoint (each connection receives the ``tick`` events);
* ``GET /stats``: the process's own CPU seconds (user + system), resident memory, peak
  resident memory (``?reset=1`` starts a new peak interval), connected subscribers, the files
  ``tbone`` and ``tbone_asgi`` were imported from (``modules``: the landed copy or the working
  tree) and, with ``?objects=1``, the live objects after a full garbage collection, as JSON;
* ``POST /burst?k=K``: publish K events of ~200 bytes as fast as the publisher is let to,
  in a background task (the response does not wait for it); with ``&wait=1`` the response
  comes once the last publish returned (or after ``&timeout=T`` seconds), with how many
  were published and the seconds it took; with ``&rate=R`` the events are paced at R per
  second instead.

Kinds: ``raw`` (a Starlette endpoint keeping a set of websockets; per event, ``json.dumps``
and ``await send_text`` on each socket in turn), ``broadcaster`` (encode/broadcaster on
``memory://``, one subscriber task per websocket, as its README shows), ``tbone``
(tbone_asgi's ``channel_route`` on a MemoryChannel), ``bare`` (a pure ASGI app that accepts
and waits, for memory per connection) and ``floor``.

``floor`` is the cheapest fan-out this machine can do, the floor the others are measured
against: no ASGI server and no ASGI app on the websocket path, but a plain asyncio protocol
(on uvloop when it is installed, as uvicorn picks it) that reads the HTTP request itself,
answers a websocket upgrade on ``/ws`` (``Sec-WebSocket-Accept`` computed with hashlib) and
keeps the transports. Per event it dumps the same frame as the others once (``json.dumps``),
prepends a websocket header built by hand (FIN, text, unmasked) and calls ``transport.write``
with those same bytes on every socket: nothing per delivery but the write. What clients send
is read and dropped; a ping is answered with a pong and a close with a close, then the
connection ends. When the client offers permessage-deflate and the server allows it
(``--ws-per-message-deflate true``), the floor accepts it with ``server_no_context_takeover``
and compresses each event once (raw deflate, the trailing ``00 00 ff ff`` stripped, RSV1
set), writing those bytes to every such socket: the floor of a compressed fan-out, where a
real server compresses per connection. Its other requests (``/stats``, ``/burst``) go to the
same Starlette app the other kinds serve them with, called directly as ASGI, so they answer
and publish exactly as the others do.

Server settings are the ones ``docs/asgi.md`` recommends ("Server settings"): client frames
over 64 KiB refused by the server itself (``--ws-max-size 65536``) and no per-message deflate.
The options ``--ws-max-size``, ``--ws-per-message-deflate``, ``--ws-ping-interval`` and
``--ws-ping-timeout`` set them otherwise, for ``bench.server_settings`` and the compressed
rows of ``bench.fanout`` (``--ws-per-message-deflate true``, uvicorn's own default);
Hypercorn takes the first as ``websocket_max_message_size`` and the ping interval as
``websocket_ping_interval`` (it accepts deflate whenever it is offered). ``--ws`` picks
uvicorn's websocket implementation: ``websockets-sansio``, ``websockets`` or ``wsproto``; by
default uvicorn's own choice (``auto``: ``websockets-sansio`` in 0.54 when websockets is
installed). The floor takes only ``--ws-per-message-deflate``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import hashlib
import json
import resource
import socket
import struct
import sys
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any, cast

from bench._payload import event_data

__all__ = ["make_app", "raise_fd_limit", "usage"]

Publish = Callable[[int], Awaitable[Any]]

#: ``--ws prepared``: the websocket protocol that writes each event's prepared frame.
PREPARED = "tbone_asgi.uvicorn:WebSocketProtocol"


#: Open files a server or client process asks for: 20,000 subscribers and then some.
WANTED_FILES = 65_536


def raise_fd_limit() -> int:
    """Raise this process's open-file limit as far as allowed; return the new soft limit.

    Up to :data:`WANTED_FILES` when the process may raise its hard limit (root), else to the
    hard limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < WANTED_FILES:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (WANTED_FILES, WANTED_FILES))
            return WANTED_FILES
        except (ValueError, OSError):
            pass  # not allowed: the hard limit it is
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def usage(reset_peak: bool = False) -> dict[str, float]:
    """CPU seconds (user + system), RSS and peak RSS (bytes) of this process.

    On Linux the peak is the kernel's high-water mark (``VmHWM``); with ``reset_peak`` it is
    then reset to the current RSS, so the next call reports the peak of the interval between.
    Elsewhere the peak is ``ru_maxrss`` (since the process started) and RSS falls back to it.
    """
    found: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0]) * 1024
        if reset_peak:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # 5: reset the peak RSS to the current RSS (Linux 4.0+)
    except OSError:
        pass
    rusage = resource.getrusage(resource.RUSAGE_SELF)
    peak = rusage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # kilobytes on Linux
    return {
        # CLOCK_PROCESS_CPUTIME_ID: user + system of every thread, in ns (os.times() ticks
        # in 10 ms steps, too coarse for short bursts).
        "cpu": time.process_time(),
        # The part spent in the kernel (sockets: most of a write is there). Linux splits the
        # exact total in the ratio of sampled ticks, so it is an estimate, good over a round.
        "system": rusage.ru_stime,
        "rss": found.get("VmRSS", peak),
        "peak_rss": found.get("VmHWM", peak),
    }


def _frame(seq: int) -> dict[str, Any]:
    # The same frame our channel sends, so every server puts the same bytes on the wire.
    return {
        "type": "event",
        "payload": {"name": "tick", "data": event_data(seq), "id": str(seq), "channel": "bench"},
    }


def _control_app(
    publish: Publish,
    clients: Callable[[], int],
    routes: list[Any],
    lifespan: Callable[[Any], contextlib.AbstractAsyncContextManager[None]] | None = None,
) -> Any:
    """The app serving ``/stats`` and ``/burst`` (module docstring) next to ``routes``.

    For ``bench.gcstats`` it also serves:

    * in ``/stats``, ``gc``: the garbage collector's automatic collections since the last
      ``reset=1``, per generation (``collections``, ``seconds``, ``collected``: objects freed),
      the ``longest`` pause in seconds and its generation, and ``threshold`` and ``frozen``;
    * ``POST /alloc?action=start[&trace=1]``, then ``POST /alloc?action=stop``: a window
      whose stop answers what the window left alive, after a full collection at both ends:
      ``net_blocks``, the change in memory blocks allocated (``sys.getallocatedblocks()``),
      ``net_objects``, the change in objects the collector tracks as ``[type, count]``, and
      ``garbage``, the cyclic garbage made in the window (what its automatic collections
      freed, and what the stop's full collection finds), and ``young``, what
      generation 0 held at each automatic collection in the window as ``[type, line, count]``
      (what outlived its allocation long enough to meet a collection). With ``trace=1``
      (tracemalloc, which slows the server several times over: never around a timed round)
      young objects come with the line that allocated them, and the stop also answers
      ``blocks``, the memory blocks allocated in the window and still alive, as ``[line,
      count, bytes, from]`` (``from``: the innermost line of tbone, tbone_asgi or bench that
      led to them).
    """
    import dis
    import tracemalloc
    from collections import Counter

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    bursts: set[asyncio.Task[None]] = set()

    # The garbage collector, seen from a gc callback: per generation, the automatic
    # collections since the last ``reset=1``, their seconds (perf_counter from "start" to
    # "stop"), the objects they freed (cyclic garbage) and the longest pause. Two clock reads
    # per collection; nothing else runs until /stats is read. Our own gc.collect() calls are
    # left out (``own``), and during an allocation window (POST /alloc) each collection also
    # records what generation 0 holds when it starts (``young``).
    gcs: dict[str, Any] = {}
    own = [False]
    young: list[Counter[Any] | None] = [None]

    def gc_reset() -> None:
        gcs.update(
            collections=[0, 0, 0],
            seconds=[0.0, 0.0, 0.0],
            collected=[0, 0, 0],
            longest=0.0,
            longest_generation=-1,
            started=0.0,
        )

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if own[0]:
            return
        if phase == "start":
            if young[0] is not None:
                sample_young(young[0])
            gcs["started"] = time.perf_counter()
            return
        pause = time.perf_counter() - gcs["started"]
        gen = info["generation"]
        gcs["collections"][gen] += 1
        gcs["seconds"][gen] += pause
        gcs["collected"][gen] += info["collected"]
        if pause > gcs["longest"]:
            gcs["longest"], gcs["longest_generation"] = pause, gen

    def sample_young(seen: Counter[Any]) -> None:
        # By type alone when not tracing: no new key object, so the window's net block count
        # stays what the round left (type objects exist already).
        traced = tracemalloc.is_tracing()
        seen.update(map(describe if traced else type, gc.get_objects(0)))

    def collect() -> int:
        # A full collection of our own (not counted): what it found unreachable.
        own[0] = True
        try:
            return gc.collect()
        finally:
            own[0] = False

    gc_reset()
    gc.callbacks.append(on_gc)

    # Allocation windows (POST /alloc?action=start, then ?action=stop): what a window leaves
    # alive, after a full collection at both ends. Net, always: the change in the memory
    # blocks allocated (sys.getallocatedblocks) and in the objects the collector tracks, by
    # type; an object made to replace one that died (a connection's latest frame, say) adds
    # nothing. With ``trace=1`` also, through tracemalloc, the blocks allocated in the window
    # and still alive, by the line that allocated them (made to replace one or not), and the
    # line of each young object.
    frames = 8
    window: dict[str, Any] = {}

    def short(filename: str) -> str:
        for marker in ("site-packages/", f"python{sys.version_info[0]}.{sys.version_info[1]}/"):
            if marker in filename:
                return filename.rsplit(marker, 1)[1]
        for top in ("tbone_asgi", "tbone", "bench"):
            if f"/{top}/" in filename:
                return top + "/" + filename.rsplit(f"/{top}/", 1)[1]
        return filename

    def where(traceback: Any) -> str:
        frame = traceback[-1]  # the most recent call: the line that allocated
        return f"{short(frame.filename)}:{frame.lineno}"

    def caller(traceback: Any) -> str:
        # The innermost frame in the project's code (tbone, tbone_asgi, bench), when the
        # allocating line is in a library: which of our lines made the library allocate.
        for frame in reversed(traceback):
            name = short(frame.filename)
            if name.startswith(("tbone/", "tbone_asgi/", "bench/")):
                return f"{name}:{frame.lineno}"
        return ""

    def type_name(kind: type) -> str:
        module = kind.__module__
        return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"

    def describe(obj: Any) -> tuple[str, str]:
        # No line for memory reused from a free list or (Python 3.11) an instance with a
        # managed __dict__: tracemalloc does not find those objects' blocks.
        traceback = tracemalloc.get_object_traceback(obj)
        return type_name(type(obj)), "" if traceback is None else where(traceback)

    async def allocations(request: Request) -> JSONResponse:
        action = request.query_params["action"]
        if action == "start":
            collect()
            window["types"] = Counter(map(type, gc.get_objects()))
            window["blocks"] = sys.getallocatedblocks()
            window["collected"] = sum(gcs["collected"])
            young[0] = Counter()
            if request.query_params.get("trace") == "1":
                tracemalloc.start(frames)
            return JSONResponse({"tracing": tracemalloc.is_tracing()})
        if action != "stop" or "blocks" not in window:
            return JSONResponse({"error": "start a window first"}, status_code=400)
        seen, young[0] = young[0] or Counter(), None
        # Cyclic garbage made in the window: what its automatic collections freed (a reset of
        # the counts in between loses that part), and what a full collection finds now.
        garbage = max(0, sum(gcs["collected"]) - window.pop("collected")) + collect()
        blocks = sys.getallocatedblocks() - window.pop("blocks")
        types: Counter[type] = Counter(map(type, gc.get_objects()))
        types.subtract(window.pop("types"))
        answer: dict[str, Any] = {
            "garbage": garbage,
            "net_blocks": blocks,
            "net_objects": [[type_name(kind), count] for kind, count in types.items() if count],
            "young": [
                [*(key if isinstance(key, tuple) else (type_name(key), "")), count]
                for key, count in seen.items()
            ],
        }
        if tracemalloc.is_tracing():
            # Left out: tracemalloc's own objects and what sample_young() records.
            code = sample_young.__code__
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [
                    tracemalloc.Filter(False, tracemalloc.__file__),
                    *(
                        tracemalloc.Filter(False, code.co_filename, line, all_frames=True)
                        for _, line in dis.findlinestarts(code)
                        if line is not None
                    ),
                ]
            )
            tracemalloc.stop()
            lines: Counter[str] = Counter()
            sizes: Counter[str] = Counter()
            called: dict[str, Counter[str]] = {}
            for stat in snapshot.statistics("traceback"):
                line = where(stat.traceback)
                lines[line] += stat.count
                sizes[line] += stat.size
                called.setdefault(line, Counter())[caller(stat.traceback)] += stat.count
            answer["blocks"] = [
                [line, count, sizes[line], called[line].most_common(1)[0][0]]
                for line, count in lines.items()
            ]
        return JSONResponse(answer)

    async def burst(k: int, rate: float = 0.0, published: list[int] | None = None) -> None:
        count = published if published is not None else [0]
        loop = asyncio.get_running_loop()
        start = loop.time()
        for seq in range(k):
            if rate:  # paced: event i goes out at start + i / rate (at once when running late)
                delay = start + seq / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await publish(seq)
            count[0] += 1

    async def stats(request: Request) -> JSONResponse:
        reset = request.query_params.get("reset") == "1"
        answer: dict[str, Any] = {**usage(reset), "clients": clients()}
        # Where this process's tbone came from: a landed commit's copy or the working tree.
        answer["modules"] = {
            name: module.__file__
            for name in ("tbone", "tbone_asgi")
            if (module := sys.modules.get(name))
        }
        if request.query_params.get("objects") == "1":
            # RSS rarely shrinks (CPython keeps freed arenas), so what is really still held is
            # counted as live objects the garbage collector tracks, after a full collection.
            collect()
            answer["objects"] = len(gc.get_objects())
        answer["gc"] = {
            **{key: value for key, value in gcs.items() if key != "started"},
            "threshold": gc.get_threshold(),
            "frozen": gc.get_freeze_count(),
        }
        if reset:
            gc_reset()
        return JSONResponse(answer)

    async def start_burst(request: Request) -> JSONResponse:
        k = int(request.query_params["k"])
        rate = float(request.query_params.get("rate", 0))
        if request.query_params.get("wait") == "1":
            # A publisher that blocks (the hand loop behind a client that stopped reading)
            # is given up after ``timeout`` seconds; the answer says how far it got.
            timeout = float(request.query_params.get("timeout", 600))
            published = [0]
            start = time.perf_counter()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(burst(k, rate, published), timeout)
            seconds = time.perf_counter() - start
            return JSONResponse({"k": k, "published": published[0], "seconds": seconds})
        task = asyncio.get_running_loop().create_task(burst(k, rate))
        bursts.add(task)  # the loop holds tasks weakly
        task.add_done_callback(bursts.discard)
        return JSONResponse({"k": k})

    return Starlette(
        routes=[
            Route("/stats", stats),
            Route("/burst", start_burst, methods=["POST"]),
            Route("/alloc", allocations, methods=["POST"]),
            *routes,
        ],
        lifespan=lifespan,
    )


def _raw_app() -> Any:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    sockets: set[WebSocket] = set()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        sockets.add(websocket)
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            sockets.discard(websocket)

    async def publish(seq: int) -> None:
        frame = _frame(seq)
        for websocket in list(sockets):
            try:
                await websocket.send_text(json.dumps(frame))
            except Exception:  # a peer that left; the hand loop just forgets it
                sockets.discard(websocket)

    return _control_app(publish, lambda: len(sockets), [WebSocketRoute("/ws", endpoint)])


def _broadcaster_app(url: str = "memory://") -> Any:
    import anyio
    from broadcaster import Broadcast
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from bench import _broadcaster

    broadcast = Broadcast(url)
    subscribed = [0]

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await broadcast.connect()
        try:
            if url.startswith("redis"):
                # broadcaster 0.3.1 with redis-py 8: its listener wakes on the first subscribe
                # before the SUBSCRIBE reply, redis-py's listen() returns at once (nothing
                # subscribed yet) and the listener then waits forever: no message is ever
                # delivered. Work around that race: hold one subscription for the app's life
                # and restart the listener once that subscription is confirmed.
                async with broadcast.subscribe(channel="bench-keepalive"):
                    _broadcaster.restart_listener(broadcast)  # broadcaster's private surface
                    yield
            else:
                yield
        finally:
            await broadcast.disconnect()

    async def receiver(websocket: WebSocket) -> None:
        async for _ in websocket.iter_text():
            pass

    # broadcaster 0.3.1's subscribe() awaits the backend before recording the first queue of
    # a channel, so with Redis two first subscribers at once overwrite each other and one
    # never receives anything. Entering subscribe() one at a time avoids that (connect only).
    entry = asyncio.Lock() if url.startswith("redis") else contextlib.nullcontext()

    async def sender(websocket: WebSocket) -> None:
        async with contextlib.AsyncExitStack() as stack:
            async with entry:
                subscriber: Any = await stack.enter_async_context(
                    broadcast.subscribe(channel="tick")
                )
            subscribed[0] += 1
            try:
                async for event in subscriber:
                    await websocket.send_text(event.message)
            finally:
                subscribed[0] -= 1

    async def endpoint(websocket: WebSocket) -> None:
        # broadcaster's README: run the receiver and the sender until the first one ends.
        await websocket.accept()
        async with anyio.create_task_group() as group:

            async def run_receiver() -> None:
                await receiver(websocket)
                group.cancel_scope.cancel()

            group.start_soon(run_receiver)
            await sender(websocket)

    async def publish(seq: int) -> None:
        await broadcast.publish(channel="tick", message=json.dumps(_frame(seq)))

    return _control_app(publish, lambda: subscribed[0], [WebSocketRoute("/ws", endpoint)], lifespan)


def _tbone_app(backend: str = "memory", url: str = "", max_connections: int | None = None) -> Any:
    from tbone.dispatch import Channel
    from tbone.dispatch.channels.mem import MemoryChannel
    from tbone_asgi import channel_route, channels_lifespan

    channel: Channel
    if backend == "redis":
        from tbone.dispatch.channels.redis import RedisChannel

        channel = RedisChannel(name="bench", url=url)
    else:
        channel = MemoryChannel(name="bench")  # the shipped defaults

    async def publish(seq: int) -> None:
        await channel.publish("tick", event_data(seq))

    return _control_app(
        publish,
        lambda: int(channel.stats()["subscribers"]),
        [
            channel_route("/ws", channel, events=["tick"])
            if max_connections is None
            else channel_route("/ws", channel, events=["tick"], max_connections=max_connections)
        ],
        channels_lifespan(channel),  # the documented way: start with the app, close with it
    )


def _bare_app() -> Any:
    connected = [0]

    async def ignore(seq: int) -> None:
        pass

    control = _control_app(ignore, lambda: connected[0], [])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await control(scope, receive, send)
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        connected[0] += 1
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            connected[0] -= 1

    return app


def _uvicorn_floor_app() -> Any:
    """The floor's loop inside uvicorn: no channel, no carrier, no tbone fan-out.

    Runs on tbone_asgi.uvicorn's protocol (``--ws prepared``): each connection's
    ``"tbone.prepared"`` extension gives its frame variant and the writer that puts bytes on
    its transport; per event the frame is built once per variant (``Event.wire``) and written
    to every connection in a loop, as the floor does. What it costs beyond the floor is
    uvicorn's (its process, its protocol objects, the writer's checks); what tbone (prepared)
    costs beyond it is tbone's own.
    """
    from tbone.dispatch.events import Event

    writers: dict[Any, int | None] = {}  # write -> window bits, in connection order

    async def publish(seq: int) -> None:
        event = Event("tick", event_data(seq), str(seq), "bench")
        for write, bits in writers.items():
            write(event.wire(bits))

    control = _control_app(publish, lambda: len(writers), [])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await control(scope, receive, send)
            return
        prepared = (scope.get("extensions") or {}).get("tbone.prepared")
        if prepared is None:
            raise RuntimeError("the uvicorn floor runs on --ws prepared only")
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        write = prepared["write"]
        writers[write] = prepared["window_bits"]
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            del writers[write]

    return app


_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 4.2.2
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


def _ws_frame(opcode: int, payload: bytes, compressed: bool = False) -> bytes:
    """A server frame (FIN, unmasked; RSV1 when ``compressed``): the header by hand, then
    ``payload``."""
    first = 0x80 | (0x40 if compressed else 0) | opcode
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


def _deflate(payload: bytes) -> bytes:
    """``payload`` as one permessage-deflate message without context takeover (RFC 7692 7.2.1)."""
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # raw deflate, a fresh window
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]  # the 00 00 ff ff that ends a sync flush is left off


def _accepts_deflate(offers: str) -> bool:
    """Whether one of the ``Sec-WebSocket-Extensions`` offers is permessage-deflate that the
    floor can honour: any but one that limits the server's window (it compresses with 15 bits)."""
    for offer in offers.split(","):
        name, *params = (p.strip() for p in offer.split(";"))
        if name == "permessage-deflate" and not any(
            p.startswith("server_max_window_bits") for p in params
        ):
            return True
    return False


class _Floor:
    """The floor server's state: the upgraded connections' transports, by whether they
    negotiated deflate, and the control app that answers ``/stats`` and ``/burst``."""

    def __init__(self, deflate: bool) -> None:
        self.deflate = deflate  # accept permessage-deflate when offered
        self.plain: set[asyncio.Transport] = set()
        self.deflated: set[asyncio.Transport] = set()
        self.requests: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly
        self.control = _control_app(self.publish, lambda: len(self.plain) + len(self.deflated), [])

    async def publish(self, seq: int) -> None:
        # One dump, one frame (one compression) per event; then only writes. A write that
        # fails schedules connection_lost (asyncio and uvloop alike): the sets do not change
        # while they are walked.
        payload = json.dumps(_frame(seq)).encode()
        if self.plain:
            frame = _ws_frame(_TEXT, payload)
            for transport in self.plain:
                transport.write(frame)
        if self.deflated:
            frame = _ws_frame(_TEXT, _deflate(payload), compressed=True)
            for transport in self.deflated:
                transport.write(frame)


class _FloorConnection(asyncio.Protocol):
    """One connection to the floor: an HTTP request, then, once upgraded, the client's frames
    read and dropped (a ping answered with a pong, a close with a close)."""

    transport: asyncio.Transport

    def __init__(self, floor: _Floor) -> None:
        self.floor = floor
        self.buffer = bytearray()
        self.sockets: set[asyncio.Transport] | None = None  # the floor's set, once upgraded

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sockets is not None:
            self.sockets.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.sockets is not None:
            self._frames(self.sockets)
        elif b"\r\n\r\n" in self.buffer:
            self._request()

    def _request(self) -> None:
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        request, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request.split(" ", 2)
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if target.partition("?")[0] == "/ws" and headers.get("upgrade", "").lower() == "websocket":
            self._upgrade(headers)
        else:  # /stats, /burst (and any other request) to the control app
            task = asyncio.get_running_loop().create_task(self._control(method, target))
            self.floor.requests.add(task)
            task.add_done_callback(self.floor.requests.discard)

    def _upgrade(self, headers: dict[str, str]) -> None:
        key = headers["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
        deflate = self.floor.deflate and _accepts_deflate(
            headers.get("sec-websocket-extensions", "")
        )
        answer = [
            b"HTTP/1.1 101 Switching Protocols",
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: " + accept,
        ]
        if deflate:
            answer.append(
                b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover"
            )
        self.transport.write(b"\r\n".join(answer) + b"\r\n\r\n")
        self.sockets = self.floor.deflated if deflate else self.floor.plain
        self.sockets.add(self.transport)
        self._frames(self.sockets)

    def _frames(self, sockets: set[asyncio.Transport]) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            opcode, size, start = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if size >= 126:
                start += 2 if size == 126 else 8
                if len(buf) < start:
                    return
                size = int.from_bytes(buf[2:start])
            mask = buf[start : start + 4] if buf[1] & 0x80 else bytes(4)
            start += 4 if buf[1] & 0x80 else 0
            end = start + size
            if len(buf) < end:
                return
            if opcode in (_PING, _CLOSE):
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[start:end]))
                if opcode == _PING:
                    self.transport.write(_ws_frame(_PONG, payload))
                else:  # echo the status code, then end the connection (the server closes TCP)
                    sockets.discard(self.transport)
                    self.transport.write(_ws_frame(_CLOSE, payload[:2]))
                    self.transport.close()
                    buf.clear()
                    return
            del buf[:end]

    async def _control(self, method: str, target: str) -> None:
        # The request as ASGI to the same Starlette app the other kinds serve it with.
        path, _, query = target.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [],
            "client": None,
            "server": None,
        }
        requested = [False]
        status, body = [500], bytearray()

        async def receive() -> dict[str, Any]:
            if requested[0]:
                return {"type": "http.disconnect"}
            requested[0] = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        await self.floor.control(scope, receive, send)
        phrase = HTTPStatus(status[0]).phrase
        self.transport.write(
            f"HTTP/1.1 {status[0]} {phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        self.transport.close()


def _floor(sock: socket.socket, args: argparse.Namespace) -> None:
    floor = _Floor(deflate=args.ws_per_message_deflate == "true")

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _FloorConnection(floor), sock=sock, backlog=4096)
        await server.serve_forever()

    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve())


def make_app(kind: str, url: str = "", max_connections: int | None = None) -> Any:
    """The ASGI app of server ``kind`` (see the module docstring).

    ``max_connections``: the tbone endpoint's (the shipped default, 10,000, when None).
    """
    if kind == "raw":
        return _raw_app()
    if kind == "broadcaster":
        return _broadcaster_app(url or "memory://")
    if kind == "tbone":
        return _tbone_app(max_connections=max_connections)
    if kind == "tbone-noflow":
        from bench import _noflow

        _noflow.disable()
        return _tbone_app()
    if kind == "tbone-redis":
        return _tbone_app("redis", url)
    if kind == "bare":
        return _bare_app()
    if kind == "floor-uvicorn":
        return _uvicorn_floor_app()
    raise ValueError(
        f"unknown server kind {kind!r}: raw, broadcaster, tbone, tbone-noflow, tbone-redis, "
        "bare, floor, floor-uvicorn"
    )


def _uvicorn(app: Any, sock: socket.socket, args: argparse.Namespace) -> None:
    import uvicorn

    pings = {
        key: value
        for key, value in (
            ("ws_ping_interval", args.ws_ping_interval),
            ("ws_ping_timeout", args.ws_ping_timeout),
        )
        if value is not None  # else uvicorn's own default (20 s)
    }
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        backlog=4096,
        ws=PREPARED if args.ws == "prepared" else args.ws,
        ws_max_size=args.ws_max_size,
        ws_per_message_deflate=args.ws_per_message_deflate == "true",
        **pings,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _hypercorn(app: Any, sock: socket.socket, args: argparse.Namespace) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.loglevel = "WARNING"
    config.backlog = 4096
    config.graceful_timeout = 2
    config.websocket_max_message_size = args.ws_max_size
    # Hypercorn has no per-message deflate setting (it accepts whatever the client offers)
    # and no ping timeout (it never checks for pongs).
    if args.ws_ping_interval:
        config.websocket_ping_interval = args.ws_ping_interval
    asyncio.run(serve(app, config, mode="asgi"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind")
    parser.add_argument("--url", default="", help="backend URL (redis kinds)")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--server", choices=["uvicorn", "hypercorn"], default="uvicorn")
    parser.add_argument(
        "--ws",
        choices=["auto", "websockets-sansio", "websockets", "wsproto", "prepared"],
        default="auto",
        help="uvicorn's websocket implementation (auto: websockets-sansio in uvicorn 0.54; "
        "prepared: tbone_asgi.uvicorn:WebSocketProtocol)",
    )
    parser.add_argument("--ws-max-size", type=int, default=65536, help="bytes per client frame")
    parser.add_argument(
        "--max-connections", type=int, default=None, help="the tbone endpoint's (default 10,000)"
    )
    parser.add_argument("--ws-per-message-deflate", choices=["true", "false"], default="false")
    parser.add_argument("--ws-ping-interval", type=float, default=None, help="seconds")
    parser.add_argument("--ws-ping-timeout", type=float, default=None, help="seconds (uvicorn)")
    args = parser.parse_args()
    raise_fd_limit()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(4096)  # connections queue here until the server serves: no need to poll the port
    print(sock.getsockname()[1], flush=True)
    if args.kind == "floor":  # no ASGI server: see the module docstring
        _floor(sock, args)
        return
    serve = _hypercorn if args.server == "hypercorn" else _uvicorn
    serve(make_app(args.kind, args.url, args.max_connections), sock, args)


if __name__ == "__main__":
    main()
