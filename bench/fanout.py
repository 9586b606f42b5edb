"""Websocket fan-out: one uvicorn server, N websocket clients, K events of ~200 bytes.

For each N, a server of every kind (``raw``, ``broadcaster``, ``tbone``: see
:mod:`bench._server`) runs at the same time, each with its own N clients in separate processes
(``bench._client``), and so does ``tbone (landed)``: the same ``tbone`` server on the tbone and
tbone_asgi of a landed commit (:mod:`bench._landed`; by default the fan-out before flow
control), so that the "vs landed" ratios are what the working tree's changes cost. Each run
then gives every server in turn one burst (the server publishes K events as fast as it
accepts them; the round ends when every client holds every event) and one paced round.
Reported, as medians over the runs:

* deliveries per second: frames received / (last arrival - burst start);
* server CPU µs per delivery: the server process's own CPU time (user + system, read by the
  server itself) over the burst, divided by the frames delivered;
* burst p99: publish-to-receive latency over every frame of the burst. It includes the
  time an event waits behind the ones published before it, so it is about the burst's length
  for a server that accepts every publish at once (broadcaster, tbone), and one event's
  fan-out for the hand loop, whose publisher waits for each fan-out before the next publish;
* paced p50/p99: the same latency when events are published at a steady 25,000 deliveries
  per second (N x rate), which every server here sustains: the delay of the fan-out itself;
  paced CPU: server CPU µs per delivery in that round (each event now wakes each
  subscriber's sender on its own, where a burst lets one wake carry many frames);
* peak RSS growth: the server's peak resident memory during the burst minus its resident
  memory when the burst started (a fan-out that queues without bound shows here);
* delivered: the share of the N x K frames that arrived (a subscriber closed as too slow
  loses frames by design; the table shows it rather than hiding it).
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from pathlib import Path

from bench import _landed
from bench._procs import Clients, Server
from bench._report import Table, median, percentile, ratio

__all__ = ["LANDED", "available_kinds", "events_for", "run"]

BASELINES = ("raw", "broadcaster")
LANDED = "tbone (landed)"


def available_kinds() -> tuple[list[str], str]:
    """The server kinds that can run here, and a note on any left out."""
    try:
        from tbone_asgi import channel_route  # noqa: F401
    except ImportError as exc:
        return list(BASELINES), f"tbone left out: tbone_asgi.channel_route is missing ({exc})."
    return [*BASELINES, "tbone"], ""


def events_for(n: int) -> int:
    """K for N clients: about 20,000-100,000 deliveries per burst, 20 to 200 events."""
    return max(20, min(200, 50_000 // n))


def client_procs(n: int) -> int:
    """Client processes for N connections: one per 500, at most 4 (the server needs a core)."""
    return max(1, min(4, math.ceil(n / 500)))


def paced_for(n: int) -> tuple[int, float]:
    """(K, events per second) of the paced rounds: 25,000 deliveries/s, 10 to 40 events."""
    return max(10, min(40, 20_000 // n)), 25_000 / n


def _paced(server: Server, clients: Clients, n: int) -> dict[str, float]:
    k, rate = paced_for(n)
    clients.arm(k)
    before = server.stats()
    server.request("POST", f"/burst?k={k}&rate={rate}")
    got = clients.collect()
    after = server.stats()
    latency = got["latency_us"]
    return {
        "paced_cpu_us": (after["cpu"] - before["cpu"]) / max(1, got["received"]) * 1e6,
        "paced_p50_ms": percentile(latency, 50) / 1000,
        "paced_p99_ms": percentile(latency, 99) / 1000,
    }


def _burst(server: Server, clients: Clients, k: int) -> dict[str, float]:
    clients.arm(k)
    before = server.stats(reset_peak=True)
    start = time.time()
    server.request("POST", f"/burst?k={k}")
    got = clients.collect()
    after = server.stats()
    received = max(1, got["received"])
    latency = got["latency_us"]
    return {
        "dps": received / max(1e-9, got["last"] - start),
        "cpu_us": (after["cpu"] - before["cpu"]) / received * 1e6,
        "p99_ms": percentile(latency, 99) / 1000,
        "peak_rss": after["peak_rss"] - before["rss"],
        "delivered": got["received"] / (clients.n * k),
    }


def _measure(
    servers: dict[str, tuple[str, Path | None]], n: int, k: int, runs: int
) -> dict[str, dict[str, float]]:
    """Start every server of ``servers`` (name -> kind, tbone path) with its own N clients, run
    them ``runs`` times in turn; the median of each measure per name."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    with ExitStack() as stack:
        pairs: dict[str, tuple[Server, Clients]] = {}
        for name, (kind, path) in servers.items():
            server = stack.enter_context(Server(kind, path=path))
            clients = stack.enter_context(Clients(server.ws_url, n, client_procs(n)))
            server.wait_clients(n)
            pairs[name] = (server, clients)
        for _ in range(runs):
            for name, (server, clients) in pairs.items():
                sample = _burst(server, clients, k)
                sample.update(_paced(server, clients, n))
                samples[name].append(sample)
    return {
        name: {key: median([s[key] for s in runs_]) for key in runs_[0]}
        for name, runs_ in samples.items()
    }


def run(
    *,
    sizes: tuple[int, ...] = (100, 1000, 5000),
    runs: int = 3,
    events: int | None = None,
    landed: str = _landed.REVISION,
) -> str:
    """Run the benchmark for each N in ``sizes``; return the table (Markdown).

    ``landed``: the commit whose tbone runs as ``tbone (landed)``; left out, with a note, when
    this checkout cannot read it.
    """
    kinds, note = available_kinds()
    notes = [note] if note else []
    # name -> (server kind, directory its tbone comes from; None: the working tree)
    servers: dict[str, tuple[str, Path | None]] = {kind: (kind, None) for kind in kinds}
    table = Table(
        f"Websocket fan-out through uvicorn (median of {runs} runs)",
        [
            "N",
            "K",
            "server",
            "deliveries/s",
            "CPU µs/delivery",
            "paced CPU µs",
            "burst p99 ms",
            "paced p50 ms",
            "paced p99 ms",
            "peak RSS +MiB",
            "delivered",
            "CPU vs raw",
            "CPU vs broadcaster",
            "paced CPU vs broadcaster",
            "paced p99 vs raw",
            "CPU vs landed",
            "paced CPU vs landed",
            "paced p99 vs landed",
        ],
    )
    with ExitStack() as stack:
        if "tbone" in kinds:
            try:
                servers[LANDED] = ("tbone", stack.enter_context(_landed.packages(landed)))
                notes.append(
                    f"{LANDED}: the same tbone server on tbone and tbone_asgi of commit "
                    f"{landed}; the vs-landed ratios are what the working tree costs against it."
                )
            except _landed.Unavailable as exc:
                notes.append(f"{LANDED} left out: {exc}.")
        table.note = " ".join(
            [
                "N clients (websockets sans-I/O, compression off) in separate processes; K "
                "events of ~200 bytes per run, published as fast as each server accepts them.",
                *notes,
            ]
        )
        nan = {"cpu_us": math.nan, "paced_cpu_us": math.nan, "paced_p99_ms": math.nan}
        for n in sizes:
            k = events or events_for(n)
            med = _measure(servers, n, k, runs)
            base = med.get(LANDED, nan)
            for name, m in med.items():
                table.add(
                    n,
                    k,
                    name,
                    m["dps"],
                    m["cpu_us"],
                    m["paced_cpu_us"],
                    m["p99_ms"],
                    m["paced_p50_ms"],
                    m["paced_p99_ms"],
                    m["peak_rss"] / 2**20,
                    f"{m['delivered']:.1%}",
                    ratio(m["cpu_us"], med["raw"]["cpu_us"]),
                    ratio(m["cpu_us"], med["broadcaster"]["cpu_us"]),
                    ratio(m["paced_cpu_us"], med["broadcaster"]["paced_cpu_us"]),
                    ratio(m["paced_p99_ms"], med["raw"]["paced_p99_ms"]),
                    ratio(m["cpu_us"], base["cpu_us"]),
                    ratio(m["paced_cpu_us"], base["paced_cpu_us"]),
                    ratio(m["paced_p99_ms"], base["paced_p99_ms"]),
                )
    return table.render()
