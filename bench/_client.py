"""A websocket client process for the fan-out benchmarks: ``python -m bench._client URL N``.

It opens N connections with the ``websockets`` library (compression off, as every server
here is measured without it), then follows line commands on stdin and answers each with one
JSON line on stdout:

* at start: ``{"connected": N, "seconds": ...}`` once every connection is open;
* ``{"expect": K}`` -> ``{"armed": true}`` at once, then, when every connection has received
  K event frames (or ``timeout`` passed), ``{"received": ..., "latency_us": [...], "last":
  ...}``: the publish-to-receive latency of each frame (from the ``t`` the server stamped at
  publish, ``time.time()``) and the time the last frame arrived;
* ``{"quit": true}`` (or end of input) -> close every connection and exit.

With ``--stuck`` the connections never read: after a few frames the websockets library stops
reading the socket, as a client that hung or went to sleep would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from bench._server import raise_fd_limit

__all__: list[str] = []


class _Round:
    def __init__(self, sockets: int, expect: int) -> None:
        self.expect = expect
        self.pending = sockets
        self.latency: list[float] = []
        self.received = 0
        self.last = 0.0
        self.done = asyncio.Event()
        if sockets == 0 or expect == 0:
            self.done.set()


async def _reader(ws: Any, state: dict[str, _Round | None], loads: Any) -> None:
    count = 0
    current: _Round | None = None
    async for message in ws:
        now = time.time()
        frame = loads(message)
        if frame.get("type") != "event":
            continue
        r = state["round"]
        if r is None:
            continue
        if r is not current:  # a new round began: count from zero
            current, count = r, 0
        count += 1
        r.received += 1
        r.latency.append(now - frame["payload"]["data"]["t"])
        r.last = now
        if count == r.expect:
            r.pending -= 1
            if r.pending == 0:
                r.done.set()


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _main(url: str, n: int, concurrency: int, timeout: float, stuck: bool) -> None:
    from websockets.asyncio.client import connect

    try:
        import orjson

        loads: Any = orjson.loads
    except ImportError:  # pragma: no cover
        loads = json.loads
    raise_fd_limit()
    state: dict[str, _Round | None] = {"round": None}
    gate = asyncio.Semaphore(concurrency)
    sockets: list[Any] = []
    readers: list[asyncio.Task[None]] = []

    async def open_one() -> None:
        async with gate:
            ws = await connect(
                url,
                compression=None,
                ping_interval=None,
                max_size=None,
                open_timeout=60,
                close_timeout=1 if stuck else 10,
            )
        sockets.append(ws)
        if not stuck:  # a stuck client never reads: websockets stops reading the socket
            readers.append(asyncio.get_running_loop().create_task(_reader(ws, state, loads)))

    start = time.perf_counter()
    await asyncio.gather(*(open_one() for _ in range(n)))
    _emit({"connected": len(sockets), "seconds": time.perf_counter() - start})
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        if "expect" not in command:
            break
        r = state["round"] = _Round(len(sockets), int(command["expect"]))
        _emit({"armed": True})
        with contextlib.suppress(asyncio.TimeoutError):  # reported as fewer frames received
            await asyncio.wait_for(r.done.wait(), timeout)
        _emit(
            {
                "received": r.received,
                "latency_us": [round(x * 1e6) for x in r.latency],
                "last": r.last,
            }
        )
        state["round"] = None
    if stuck:  # a hung client never completes a close handshake: drop the connections
        for ws in sockets:
            ws.transport.abort()
    else:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("n", type=int)
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes at a time")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per round")
    parser.add_argument("--stuck", action="store_true", help="connect, then never read")
    args = parser.parse_args()
    asyncio.run(_main(args.url, args.n, args.concurrency, args.timeout, args.stuck))


if __name__ == "__main__":
    main()
