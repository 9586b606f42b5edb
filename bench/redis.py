"""RedisChannel across two uvicorn workers, against broadcaster's ``redis://`` backend.

A private ``redis-server`` on a free port; two server processes of each kind share it (two
workers of one app, each its own process, as ``uvicorn --workers 2`` would run them). N
clients connect, half to each worker; worker A publishes K events in a row and the clients
time each frame's arrival. Reported, medians over runs:

* publish rate: K / the time worker A's K ``publish`` calls took (each one awaited in turn);
* deliveries per second and end-to-end latency p50/p99 (publish call to client receipt, over
  every frame, both workers' clients) in that burst;
* paced p50/p99: the same latency with events published at a steady 25,000 deliveries per
  second (as in :mod:`bench.fanout`), the fair latency comparison;
* delivered: the share of the N x K frames that arrived.

``tbone`` uses RedisChannel (Redis Streams: every worker reads the stream); ``broadcaster``
uses Redis pub/sub through ``Broadcast("redis://...")``.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack
from typing import Any

from bench._procs import BenchError, Clients, Server
from bench._report import Table, median, percentile, ratio
from bench.fanout import paced_for

__all__ = ["RedisServer", "run"]


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


def run(*, n: int = 1000, runs: int = 3, events: int = 100) -> str:
    """Run the benchmark with ``n`` clients and ``events`` per run; return the table."""
    from bench.fanout import available_kinds

    table = Table(
        f"RedisChannel, two uvicorn workers (median of {runs} runs)",
        [
            "server",
            "publish/s",
            "deliveries/s",
            "burst p50 ms",
            "burst p99 ms",
            "paced p50 ms",
            "paced p99 ms",
            "delivered",
            "paced p99 vs broadcaster",
        ],
        note=(
            f"{n:,} clients, half on each worker; {events:,} events of ~200 bytes per run "
            "published by worker A, one awaited publish after another."
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
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    with RedisServer() as redis_server, ExitStack() as stack:
        setups: dict[str, tuple[Server, list[Clients]]] = {}
        for name, kind in kinds.items():
            workers = [stack.enter_context(Server(kind, redis_server.url)) for _ in range(2)]
            shares = [n // 2, n - n // 2]
            clients = [
                stack.enter_context(Clients(w.ws_url, share, 1))
                for w, share in zip(workers, shares, strict=True)
            ]
            for w, share in zip(workers, shares, strict=True):
                w.wait_clients(share)
            setups[name] = (workers[0], clients)
        for _ in range(runs):
            for name, (publisher, clients) in setups.items():
                samples[name].append(_round(publisher, clients, n, events))
    med: dict[str, dict[str, Any]] = {
        name: {key: median([s[key] for s in runs_]) for key in runs_[0]}
        for name, runs_ in samples.items()
    }
    for name, m in med.items():
        table.add(
            name,
            m["publish_rate"],
            m["dps"],
            m["p50_ms"],
            m["p99_ms"],
            m["paced_p50_ms"],
            m["paced_p99_ms"],
            f"{m['delivered']:.1%}",
            ratio(m["paced_p99_ms"], med["broadcaster"]["paced_p99_ms"]),
        )
    return table.render()
