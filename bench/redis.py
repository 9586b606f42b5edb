"""RedisChannel across 1, 2 and 4 uvicorn workers, against broadcaster's ``redis://`` backend.

For each worker count W, W server processes of each kind (``tbone``, ``broadcaster``) share a
private ``redis-server`` on a free port (W workers of one app, each its own process, as
``uvicorn --workers W`` would run them); each worker count has its own redis-server. N
clients are split evenly over the W workers; the first worker publishes K events in a row
(each ``publish`` awaited before the next, as a user's loop does) and the clients time each
frame's arrival. Every setup runs at the same time, and each run gives every one of them a
round in turn. Reported, medians over runs:

* publish rate: K / the time the first worker's K ``publish`` calls took;
* deliveries per second and end-to-end latency p50/p99 (publish call to client receipt, over
  every frame, every worker's clients) in that burst. The latency includes the time an event
  waits behind those published before it: a publisher that runs ahead of the fan-out makes
  the burst shorter and its latencies longer;
* paced p50/p99: the same latency with events published at a steady 25,000 deliveries per
  second (as in :mod:`bench.fanout`), the fair latency comparison;
* delivered: the share of the N x K frames that arrived;
* the ratios of deliveries per second and paced p99 to broadcaster's with as many workers.

``tbone`` uses RedisChannel (Redis Streams: every worker reads the stream); ``broadcaster``
uses Redis pub/sub through ``Broadcast("redis://...")``.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from typing import Any, TypeVar

from bench._procs import BenchError, Clients, Server
from bench._report import Table, median, percentile, ratio
from bench.fanout import paced_for

__all__ = ["WORKERS", "RedisServer", "run", "shares"]

K = TypeVar("K")
P = TypeVar("P", bound=AbstractContextManager[Any])

#: The worker counts measured, each against broadcaster with as many workers.
WORKERS = (1, 2, 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A throw-away ``redis-server`` on 127.0.0.1 (no persistence); stops on exit."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not installed (apt-get install redis-server)")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:  # bounded: redis-server starts in milliseconds
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise BenchError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _round(publisher: Server, clients: list[Clients], n: int, k: int) -> dict[str, float]:
    for c in clients:
        c.arm(k)
    start = time.time()
    answer = publisher.request("POST", f"/burst?k={k}&wait=1")
    got = [c.collect() for c in clients]
    received = sum(g["received"] for g in got)
    latency = [x for g in got for x in g["latency_us"]]
    last = max(g["last"] for g in got)
    result = {
        "publish_rate": k / max(1e-9, answer["seconds"]),
        "dps": received / max(1e-9, last - start),
        "p50_ms": percentile(latency, 50) / 1000,
        "p99_ms": percentile(latency, 99) / 1000,
        "delivered": received / (n * k),
    }
    # Paced: the same clients, events at a steady rate every server sustains.
    pk, rate = paced_for(n)
    for c in clients:
        c.arm(pk)
    publisher.request("POST", f"/burst?k={pk}&rate={rate}&wait=1")
    paced = [x for c in clients for x in c.collect()["latency_us"]]
    result["paced_p50_ms"] = percentile(paced, 50) / 1000
    result["paced_p99_ms"] = percentile(paced, 99) / 1000
    return result


def _started(stack: ExitStack, makers: dict[K, Callable[[], P]]) -> dict[K, P]:
    """Start every process of ``makers`` at once (each waits for its own start); they close
    with ``stack``. Raises the first failure, once every other one is in ``stack``."""
    with ThreadPoolExecutor(max_workers=len(makers)) as pool:
        futures = {key: pool.submit(make) for key, make in makers.items()}
    started: dict[K, P] = {}
    for key, future in futures.items():
        if future.exception() is None:
            started[key] = stack.enter_context(future.result())
    for future in futures.values():
        future.result()  # raises the first failure
    return started


def shares(n: int, workers: int) -> list[int]:
    """``n`` clients split as evenly as can be over ``workers``."""
    return [n // workers + (1 if i < n % workers else 0) for i in range(workers)]


def run(
    *, n: int = 1000, runs: int = 3, events: int = 100, workers: tuple[int, ...] = WORKERS
) -> str:
    """Run the benchmark with ``n`` clients and ``events`` per run for each worker count in
    ``workers``; return the table."""
    from bench.fanout import available_kinds

    if n < max(workers):
        raise ValueError(f"{n} clients cannot be split over {max(workers)} workers")
    counts = ", ".join(str(w) for w in workers[:-1]) + (" and " if len(workers) > 1 else "")
    table = Table(
        f"RedisChannel across {counts}{workers[-1]} uvicorn workers (median of {runs} runs)",
        [
            "server",
            "workers",
            "publish/s",
            "deliveries/s",
            "burst p50 ms",
            "burst p99 ms",
            "paced p50 ms",
            "paced p99 ms",
            "delivered",
            "deliveries/s vs broadcaster",
            "paced p99 vs broadcaster",
        ],
        note=(
            f"{n:,} clients split evenly over the workers (each worker its own server process; "
            "the workers of one count share a redis-server); "
            f"{events:,} events of ~200 bytes per run published by the first worker, one "
            "awaited publish after another. Ratios: against broadcaster with as many workers, "
            "in the same run."
        ),
    )
    for module in ("redis", "broadcaster", "tbone.dispatch.channels.redis"):
        if importlib.util.find_spec(module) is None:
            table.note += f" Not run: {module} is not installed (pip install 'tbone-asgi[bench]')."
            return table.render()
    kinds = {"tbone": "tbone-redis", "broadcaster": "broadcaster"}
    if "tbone" not in available_kinds()[0]:
        del kinds["tbone"]
        table.note += " tbone left out: tbone_asgi.channel_route is missing."
    if shutil.which("redis-server") is None:
        table.note += " Not run: redis-server is not installed (apt-get install redis-server)."
        return table.render()
    keys = [(name, count) for count in workers for name in kinds]
    samples: dict[tuple[str, int], list[dict[str, float]]] = {key: [] for key in keys}
    with ExitStack() as stack:
        # One redis-server per worker count: every tbone server reads the same stream and
        # every broadcaster the same pub/sub channel, so each group needs its own Redis.
        urls = {count: stack.enter_context(RedisServer()).url for count in workers}
        servers = _started(
            stack,
            {
                (name, count, i): functools.partial(Server, kind, urls[count])
                for count in workers
                for name, kind in kinds.items()
                for i in range(count)
            },
        )
        client_procs = _started(
            stack,
            {
                # At least two client processes in all: one would cap the clients at a core.
                (name, count, i): functools.partial(
                    Clients, server.ws_url, share, min(share, 2 if count == 1 else 1)
                )
                for (name, count, i), server in servers.items()
                for share in [shares(n, count)[i]]
            },
        )
        for worker, server in servers.items():
            server.wait_clients(client_procs[worker].n)
        setups = {
            (name, count): (
                servers[(name, count, 0)],
                [client_procs[(name, count, i)] for i in range(count)],
            )
            for name, count in keys
        }
        for _ in range(runs):  # every setup in turn, run after run: drift hits them alike
            for key in keys:
                publisher, clients = setups[key]
                samples[key].append(_round(publisher, clients, n, events))
    med: dict[tuple[str, int], dict[str, Any]] = {
        key: {field: median([s[field] for s in runs_]) for field in runs_[0]}
        for key, runs_ in samples.items()
    }
    for (name, count), m in med.items():
        base = med[("broadcaster", count)]
        table.add(
            name,
            count,
            m["publish_rate"],
            m["dps"],
            m["p50_ms"],
            m["p99_ms"],
            m["paced_p50_ms"],
            m["paced_p99_ms"],
            f"{m['delivered']:.1%}",
            ratio(m["dps"], base["dps"]),
            ratio(m["paced_p99_ms"], base["paced_p99_ms"]),
        )
    return table.render()
