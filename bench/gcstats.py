"""The garbage collector during fan-out: its pauses in paced rounds, and what a round leaves.

``python -m bench gc``. The servers ``raw``, ``broadcaster`` and ``tbone``
(:mod:`bench._server`) run side by side, each with its own N clients, in the harness of
:mod:`bench.fanout`, and every round is one of its paced rounds: K events at N x rate =
25,000 deliveries per second, each event fanned out before the next. uvicorn's keepalive
pings are off (``pings=True`` leaves them on): every 20 s each connection allocates for its
ping, which comes with time, not with events. Every server first gets a round that is not
measured (the warm-up). Then:

**Timed rounds** (medians over the runs). A gc callback in the server (``/stats``, ``gc``)
counts the round's automatic collections per generation and times each one from its "start"
to its "stop" callback. Reported: the frames delivered, the collections of each generation,
their total time, the longest pause (median, and the worst of all runs), collections per
1,000 deliveries and the round's p99 latency. A collection of generation 0 runs each time the
objects the collector tracks grow by 700 (``gc.get_threshold()``): one tracked object per
delivery that outlives its send until the event's fan-out ends means about 1.4 collections
per 1,000 deliveries, and the older generations' collections walk every survivor again. (What
those collections free is no measure of the fan-out: mostly the harness's own HTTP requests,
whose uvicorn protocol objects are cyclic. The cyclic garbage a round makes is in the next
table.)

**What a round leaves alive.** Around each of ``rounds`` more paced rounds, after a full
collection at both ends, the server counts how its live memory blocks
(``sys.getallocatedblocks()``) and the objects the collector tracks (by type) changed: net,
so an object made to replace one that died (a connection's latest frame in the server's
buffers) adds nothing, and what stays adds one per delivery or one per event. The target: ~0
per delivery. A channel with history keeps each event (tbone's MemoryChannel keeps the last
10,000): a few objects per event, which is ~0 per delivery at any N; raw and broadcaster keep
no history. The count of a window with no round (the two requests themselves) is
subtracted. Reported: the round with the median count of objects, since what a connection
gets once, the first time it needs it (tbone's writer task, the first time a connection's
frames must queue), shows in one round only; every round's count is in the table too. In
that round, ``young``: the tracked
objects generation 0 held at each automatic collection, by type, over the deliveries: what
lived long enough past its allocation for the collector to walk it, even though it died
later (0 when no collection ran); and ``garbage``: the cyclic garbage the round made (what
its collections freed and what a full collection finds at its end).

**Where it comes from** (not timed: tracemalloc makes the server several times slower, so
this round is paced ``slower`` times slower to keep each event's fan-out before the next):
the memory blocks allocated in the round and still alive at its end, by the line that
allocated them, whether they replaced an older one or not (a count of about N is one per
connection, of about K one per event, of about N x K one per delivery), and the young
objects of that round with the line that allocated them. Python 3.11's tracemalloc cannot
place an instance with a ``__dict__`` or memory reused from a free list (it never sees such
an allocation): those show with no line ('-') or not at all.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import ExitStack
from typing import Any

from bench._procs import Clients, Server
from bench._report import Table, fmt, median, percentile

__all__ = ["run"]


def _round(
    server: Server, clients: Clients, k: int, rate: float, latency: bool = True
) -> dict[str, Any]:
    clients.arm(k, latency=latency)
    server.request("POST", f"/burst?k={k}&rate={rate}")
    return clients.collect()


def _timed(server: Server, clients: Clients, k: int, rate: float) -> dict[str, float]:
    server.stats(reset_peak=True)  # starts a new interval of the gc counts too
    got = _round(server, clients, k, rate)
    gc = server.stats()["gc"]
    deliveries = got["received"]
    return {
        "deliveries": deliveries,
        "gen0": gc["collections"][0],
        "gen1": gc["collections"][1],
        "gen2": gc["collections"][2],
        "gc_ms": sum(gc["seconds"]) * 1000,
        "longest_ms": gc["longest"] * 1000,
        "longest_gen": gc["longest_generation"],
        "per_1k": sum(gc["collections"]) / max(1, deliveries) * 1000,
        "p99_ms": percentile(got["latency_us"], 99) / 1000,
    }


def _window(
    server: Server, clients: Clients | None, k: int, rate: float, trace: bool
) -> dict[str, Any]:
    """An allocation window around a paced round of ``k`` events (none without ``clients``)."""
    server.request("POST", f"/alloc?action=start{'&trace=1' if trace else ''}")
    if clients is None:
        # As long as a round, up to a second: the start request's connection is gone by the
        # stop, as it is after a round.
        time.sleep(min(1.0, k / rate))
        got = {"received": 0}
    else:
        got = _round(server, clients, k, rate, latency=False)
    answer = server.request("POST", "/alloc?action=stop")
    blocks = answer.get("blocks", [])
    return {
        "deliveries": got["received"],
        "garbage": answer["garbage"],
        "net_blocks": answer["net_blocks"],
        "net_objects": Counter(dict(answer["net_objects"])),
        "blocks": Counter({line: count for line, count, _, _ in blocks}),
        "from": {line: source for line, _, _, source in blocks if source != line},
        "young": Counter({(kind, line): count for kind, line, count in answer.get("young", [])}),
    }


def _minus(a: Counter[Any], b: Counter[Any]) -> Counter[Any]:
    """``a - b`` keeping negative counts (``Counter.__sub__`` drops them)."""
    out = Counter(a)
    out.subtract(b)
    return out


def _alive(
    server: Server, clients: Clients, k: int, rate: float, slower: float, rounds: int
) -> dict[str, Any]:
    _window(server, None, k, rate, trace=True)  # the first use makes a few caches: not counted
    empty = _window(server, None, k, rate, trace=False)
    nets = []
    for _ in range(rounds):
        net = _window(server, clients, k, rate, trace=False)
        net["net_objects"] = _minus(net["net_objects"], empty["net_objects"])
        net["objects"] = sum(net["net_objects"].values())
        nets.append(net)
    traced_empty = _window(server, None, k, rate, trace=True)
    traced = _window(server, clients, k, rate / slower, trace=True)
    # The median round by objects left: something made once per connection (the first time
    # it needs it) shows in one round only, while what a delivery keeps shows in every round.
    net = sorted(nets, key=lambda w: w["objects"])[(rounds - 1) // 2]
    return {
        "deliveries": max(1, net["deliveries"]),
        "each": [w["objects"] / max(1, w["deliveries"]) for w in nets],
        "net_blocks": net["net_blocks"] - empty["net_blocks"],
        "net_objects": net["net_objects"],
        "garbage": net["garbage"] - empty["garbage"],
        "young": net["young"],
        "traced_deliveries": max(1, traced["deliveries"]),
        "blocks": _minus(traced["blocks"], traced_empty["blocks"]),
        "from": traced["from"],
        "traced_young": traced["young"],
    }


def run(
    *,
    n: int = 5000,
    runs: int = 3,
    events: int | None = None,
    rate: float | None = None,
    slower: float = 10.0,
    top: int = 4,
    pings: bool = False,
    rounds: int = 3,
) -> str:
    """Run the benchmark with N clients per server; return its three tables (Markdown).

    ``events`` and ``rate``: K and events per second of the paced rounds (default: those of
    :func:`bench.fanout.paced_for`); ``slower``: how many times slower the traced round is
    paced; ``top``: lines and types listed per server and measure; ``pings``: leave uvicorn's
    keepalive pings on; ``rounds``: rounds counting what is left alive (the median is
    reported).
    """
    from bench.fanout import available_kinds, client_procs, paced_for

    kinds, note = available_kinds()
    default_k, default_rate = paced_for(n)
    k = events or default_k
    rate = rate or default_rate
    timed: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    alive: dict[str, dict[str, Any]] = {}
    threshold: list[int] = []
    with ExitStack() as stack:
        pairs: dict[str, tuple[Server, Clients]] = {}
        for kind in kinds:
            options = [] if pings else ["--ws-ping-interval", "0"]
            server = stack.enter_context(Server(kind, options=options))
            timeout = max(60.0, 2 * k * slower / rate)
            clients = stack.enter_context(Clients(server.ws_url, n, client_procs(n), timeout))
            server.wait_clients(n)
            pairs[kind] = (server, clients)
        for server, clients in pairs.values():
            _round(server, clients, k, rate, latency=False)  # the warm-up
        for _ in range(runs):
            for kind, (server, clients) in pairs.items():
                timed[kind].append(_timed(server, clients, k, rate))
        for kind, (server, clients) in pairs.items():
            alive[kind] = _alive(server, clients, k, rate, slower, rounds)
            threshold = server.stats()["gc"]["threshold"]
    setting = (
        f"N clients in separate processes; paced rounds of K = {k} events at {rate:,.4g} "
        f"events/s (N x rate = {n * rate:,.0f} deliveries/s) after a warm-up round; uvicorn's "
        f"keepalive pings {'on' if pings else 'off'}."
    )
    collections = Table(
        f"The garbage collector in paced rounds, N = {n:,} (median of {runs} runs)",
        [
            "server",
            "deliveries",
            "gen0",
            "gen1",
            "gen2",
            "GC ms",
            "longest pause ms",
            "worst pause ms",
            "collections /1k deliveries",
            "paced p99 ms",
        ],
        note=" ".join(
            [
                setting,
                "A gc callback in each server counts and times its automatic collections "
                f"(thresholds {tuple(threshold)}); worst pause: the longest of all runs, "
                "and the generation it collected.",
                note,
            ]
        ).strip(),
    )
    for kind, samples in timed.items():
        m = {key: median([s[key] for s in samples]) for key in samples[0]}
        worst = max(samples, key=lambda s: s["longest_ms"])
        collections.add(
            kind,
            int(m["deliveries"]),
            m["gen0"],
            m["gen1"],
            m["gen2"],
            m["gc_ms"],
            m["longest_ms"],
            f"{fmt(worst['longest_ms'])} (gen{worst['longest_gen']})"
            if worst["longest_gen"] >= 0
            else "-",  # no collection in any run
            m["per_1k"],
            m["p99_ms"],
        )
    left = Table(
        f"What a paced round leaves alive, N = {n:,} (median of {rounds} rounds)",
        [
            "server",
            "deliveries",
            "blocks /delivery",
            "blocks /event",
            "objects /delivery",
            "objects /event",
            "objects /delivery, each round",
            "young /delivery",
            "garbage /delivery",
        ],
        note=(
            "Net change over a round of K events, after a full collection at both ends (the "
            "round with the median count of objects; each round's in its own column): "
            "memory blocks allocated (sys.getallocatedblocks) and objects the collector tracks "
            "(an object that replaced one that died counts 0); young: the objects generation "
            "0 held at each automatic collection in the round; garbage: the cyclic garbage "
            "the round made."
        ),
    )
    lines = Table(
        f"Where it comes from, N = {n:,} (the top {top} per server and measure)",
        [
            "server",
            "measure",
            "allocated at",
            "type",
            "from",
            "count",
            "/event",
            "/connection",
            "/delivery",
        ],
        note=(
            "net objects: tracked objects the round added, by type; new blocks: memory blocks "
            f"allocated in the round (paced {slower:g}x slower, tracemalloc on) and alive at "
            "its end, replacing older ones or not; young: what generation 0 held at "
            "collections, by type (the round above) and by line (young, traced: the traced "
            "round). from: the innermost line of tbone, tbone_asgi or bench on the way to a "
            "library's allocation; '-': a block tracemalloc cannot place (Python 3.11: an "
            "instance with a __dict__, or memory reused from a free list)."
        ),
    )
    for kind, a in alive.items():
        deliveries, traced = a["deliveries"], a["traced_deliveries"]
        objects = sum(a["net_objects"].values())
        left.add(
            kind,
            deliveries,
            f"{a['net_blocks'] / deliveries:.4f}",
            a["net_blocks"] / k,
            f"{objects / deliveries:.4f}",
            objects / k,
            " ".join(f"{x:.4f}" for x in a["each"]),
            f"{sum(a['young'].values()) / deliveries:.4f}",
            f"{a['garbage'] / deliveries:.4f}",
        )
        for type_, count in a["net_objects"].most_common(top):
            if count >= k / 2:
                per = f"{count / deliveries:.4f}"
                lines.add(kind, "net objects", "", type_, "", count, count / k, count / n, per)
        for line, count in a["blocks"].most_common(top):
            if count >= k / 2:
                per = f"{count / traced:.4f}"
                source = a["from"].get(line, "")
                lines.add(
                    kind, "new blocks", line or "-", "", source, count, count / k, count / n, per
                )
        for (type_, _), count in a["young"].most_common(top):
            if count >= deliveries / 1000:
                per = f"{count / deliveries:.4f}"
                lines.add(kind, "young", "", type_, "", count, "", "", per)
        for (type_, line), count in a["traced_young"].most_common(top):
            if count >= traced / 1000:
                per = f"{count / traced:.4f}"
                lines.add(kind, "young, traced", line or "-", type_, "", count, "", "", per)
    return "\n".join(table.render() for table in (collections, left, lines))
