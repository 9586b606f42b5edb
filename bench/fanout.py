"""Websocket fan-out: N websocket clients per server, K events of ~200 bytes.

The rows (:data:`ROWS`: a :mod:`bench._server` kind and its options, one entry each):

* ``floor``: the cheapest fan-out this machine can do, one pre-built websocket frame written
  with ``transport.write`` to each socket of a minimal asyncio server (no ASGI, no JSON per
  delivery; see :mod:`bench._server`): the bottom every server is measured against;
* ``floor (uvicorn)``: the same loop inside a uvicorn server (on tbone_asgi.uvicorn's
  protocol, writing each connection's prepared frame): what uvicorn itself adds to the floor,
  so that ``tbone (prepared)`` against it is tbone's own part of a delivery;
* ``raw``: the hand-written loop (a Starlette endpoint, ``send_text(json.dumps(...))`` on each
  socket in turn; its publisher waits for each fan-out) and ``broadcaster``
  (encode/broadcaster on ``memory://``), both through uvicorn;
* ``tbone``: tbone_asgi's ``channel_route`` on a MemoryChannel through uvicorn's default
  websocket implementation (``websockets-sansio`` in 0.54); ``tbone (prepared)``: the same app
  on tbone_asgi.uvicorn's protocol (each event's frame built once); ``tbone (websockets)`` and
  ``tbone (wsproto)``: the same app on uvicorn's other two (``--ws``); ``tbone
  (hypercorn)``: the same app on Hypercorn (wsproto underneath). A row whose server is not
  installed (wsproto and Hypercorn are not in the bench extra) is left out with a note;
* ``tbone (no flow control)``: the ``tbone`` row with flow control taken out of the fan-out
  path (:mod:`bench._noflow`); a second table puts the two side by side: what flow control
  costs;
* ``tbone (landed)``, only when a commit is given (``python -m bench fanout --landed REV``):
  the same ``tbone`` server on the tbone and tbone_asgi of that commit (:mod:`bench._landed`),
  so that the "vs landed" ratios are what the working tree's changes cost.

Every row runs in two groups. ``deflate no``: the clients offer no compression. ``deflate
yes``: they offer permessage-deflate as browsers do and the servers accept it (uvicorn with
``--ws-per-message-deflate true``, its own default; Hypercorn accepts whatever is offered;
the floor compresses each event once, without context takeover, where the others compress
it once per connection); the column says what the clients really negotiated. Within a group
a server of every row runs at the same time, each with its own N clients in separate
processes (``bench._client``); each run then gives every server in turn one burst (the
server publishes K events as fast as it accepts them; the round ends when every client holds
every event) and one paced round. The groups run one after the other: at most one group's
servers and connections are up at once (compressed at N = 5,000: 35,000 connections, about
3.5 GiB in the servers, wsproto and Hypercorn keeping a compressor per connection, and 2.5
GiB in the clients). Reported, as medians over the runs:

* deliveries per second: frames received / (last arrival - burst start);
* server CPU µs per delivery: the server process's own CPU time (user + system, read by the
  server itself) over the burst, divided by the frames delivered; "of it kernel": the system
  part (the socket writes are mostly there; the rest is Python and the server's framing);
* burst p99: publish-to-receive latency over every frame of the burst. It includes the
  time an event waits behind the ones published before it, so it is about the burst's length
  for a server that accepts every publish at once (broadcaster, tbone, the floor), and one
  event's fan-out for the hand loop, whose publisher waits for each fan-out before the next;
* paced p50/p99: the same latency when events are published at a steady 25,000 deliveries
  per second (N x rate): the delay of the fan-out itself while a server keeps up with that
  rate; one that does not (compressing per connection at large N may take more than 2 cores
  shared with the clients give) adds the backlog it builds; paced CPU: server CPU µs per
  delivery in that round (each event now wakes each subscriber's sender on its own, where a
  burst lets one wake carry many frames);
* peak RSS growth: the server's peak resident memory during the burst minus its resident
  memory when the burst started (a fan-out that queues without bound shows here);
* delivered: the share of the N x K frames that arrived (a subscriber closed as too slow
  loses frames by design; the table shows it rather than hiding it);
* ratios, each to a row of the same N and group (a compressed row against the compressed
  floor): CPU and paced CPU vs floor (how many times the machine's cheapest fan-out a
  server costs), CPU, paced CPU and burst p99 vs broadcaster, paced p99 vs raw, and with a
  landed row, CPU, paced CPU and paced p99 vs landed.
"""

from __future__ import annotations

import importlib.util
import math
import time
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

from bench import _landed
from bench._procs import Clients, Server
from bench._report import Table, median, percentile, ratio

__all__ = ["LANDED", "ROWS", "Row", "available_kinds", "available_rows", "events_for", "run"]

BASELINES = ("raw", "broadcaster")
LANDED = "tbone (landed)"
LANDED_PREPARED = "tbone (prepared, landed)"
PREPARED = "tbone (prepared)"


class Row(NamedTuple):
    """A server of the table: its ``bench._server`` kind and more of its options, the modules
    it needs beyond the bench extra, and where its tbone comes from (None: the working tree)."""

    kind: str
    options: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    path: Path | None = None


# The rows, in the table's order; a new one is one more entry.
ROWS: dict[str, Row] = {
    "floor": Row("floor"),
    # The floor's loop inside uvicorn (on the prepared protocol): uvicorn's part of a delivery.
    "floor (uvicorn)": Row("floor-uvicorn", ("--ws", "prepared")),
    "raw": Row("raw"),
    "broadcaster": Row("broadcaster"),
    "tbone": Row("tbone"),  # uvicorn's default websocket implementation: websockets-sansio
    # The same app on tbone_asgi.uvicorn's protocol: each event's frame built once.
    PREPARED: Row("tbone", ("--ws", "prepared")),
    "tbone (websockets)": Row("tbone", ("--ws", "websockets")),
    "tbone (wsproto)": Row("tbone", ("--ws", "wsproto"), ("wsproto",)),
    "tbone (hypercorn)": Row("tbone", ("--server", "hypercorn"), ("hypercorn",)),
    # The same as "tbone", with flow control out of the fan-out path (bench._noflow).
    "tbone (no flow control)": Row("tbone-noflow"),
}

# The row "tbone" is measured against for the cost of flow control (its own table).
NO_FLOW = "tbone (no flow control)"

# The columns added when a landed row runs.
VS_LANDED = ("CPU vs landed", "paced CPU vs landed", "paced p99 vs landed")

# The servers' options in the compressed group: accept the clients' permessage-deflate offer.
DEFLATE = ("--ws-per-message-deflate", "true")


def available_kinds() -> tuple[list[str], str]:
    """The server kinds that can run here, and a note on any left out."""
    try:
        from tbone_asgi import channel_route  # noqa: F401
    except ImportError as exc:
        return list(BASELINES), f"tbone left out: tbone_asgi.channel_route is missing ({exc})."
    return [*BASELINES, "tbone"], ""


def available_rows() -> tuple[dict[str, Row], list[str]]:
    """The rows of :data:`ROWS` that can run here, and a note on each left out."""
    kinds, note = available_kinds()
    rows: dict[str, Row] = {}
    notes = [note] if note else []
    for name, row in ROWS.items():
        missing = [m for m in row.needs if importlib.util.find_spec(m) is None]
        if row.kind == "tbone" and "tbone" not in kinds:
            continue  # the note above says why
        if missing:
            notes.append(f"{name} left out: {', '.join(missing)} is not installed.")
            continue
        rows[name] = row
    return rows, notes


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
        "paced_kernel_us": (after["system"] - before["system"]) / max(1, got["received"]) * 1e6,
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
        "kernel_us": (after["system"] - before["system"]) / received * 1e6,
        "p99_ms": percentile(latency, 99) / 1000,
        "peak_rss": after["peak_rss"] - before["rss"],
        "delivered": got["received"] / (clients.n * k),
    }


def _measure(
    rows: dict[str, Row], n: int, k: int, runs: int, deflate: bool
) -> dict[str, dict[str, float]]:
    """Start a server of every row with its own N clients (offering permessage-deflate, and the
    servers accepting it, with ``deflate``), run them ``runs`` times in turn; the median of each
    measure per row, and ``deflated``: the share of connections that negotiated deflate."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in rows}
    with ExitStack() as stack:
        pairs: dict[str, tuple[Server, Clients]] = {}
        for name, row in rows.items():
            options = [*row.options, *(DEFLATE if deflate else ())]
            server = stack.enter_context(Server(row.kind, path=row.path, options=options))
            clients = stack.enter_context(
                Clients(server.ws_url, n, client_procs(n), deflate=deflate)
            )
            server.wait_clients(n)
            pairs[name] = (server, clients)
        for _ in range(runs):
            for name, (server, clients) in pairs.items():
                sample = _burst(server, clients, k)
                sample.update(_paced(server, clients, n))
                sample["deflated"] = clients.deflated / n
                samples[name].append(sample)
    return {
        name: {key: median([s[key] for s in runs_]) for key in runs_[0]}
        for name, runs_ in samples.items()
    }


def _negotiated(share: float) -> str:
    """The deflate column: "yes" when every connection negotiated it, "no" when none did."""
    return "yes" if share == 1 else "no" if share == 0 else f"{share:.0%}"


def run(
    *,
    sizes: tuple[int, ...] = (100, 1000, 5000),
    runs: int = 3,
    events: int | None = None,
    landed: str | None = None,
) -> str:
    """Run the benchmark for each N in ``sizes``; return the table (Markdown).

    ``landed``: a commit whose tbone runs as one more row, ``tbone (landed)``, with ratios to
    it (``bench._landed.REVISION``: the fan-out before flow control); left out, with a note,
    when this checkout cannot read it.
    """
    rows, notes = available_rows()
    with ExitStack() as stack:
        if landed is not None and "tbone" in rows:
            try:
                path = stack.enter_context(_landed.packages(landed))
                rows[LANDED] = rows["tbone"]._replace(path=path)
                if PREPARED in rows:
                    rows[LANDED_PREPARED] = rows[PREPARED]._replace(path=path)
                notes.append(
                    f"{LANDED}: the same tbone server on tbone and tbone_asgi of commit "
                    f"{landed} ({LANDED_PREPARED}: on the prepared protocol); the vs-landed "
                    "ratios are what the working tree costs against it, each path against its own."
                )
            except _landed.Unavailable as exc:
                notes.append(f"{LANDED} left out: {exc}.")
        vs_landed = LANDED in rows
        table = Table(
            f"Websocket fan-out (median of {runs} runs)",
            [
                "N",
                "K",
                "server",
                "deflate",
                "deliveries/s",
                "CPU µs/delivery",
                "of it kernel",
                "paced CPU µs",
                "of it kernel",
                "burst p99 ms",
                "paced p50 ms",
                "paced p99 ms",
                "peak RSS +MiB",
                "delivered",
                "CPU vs floor",
                "paced CPU vs floor",
                "CPU vs broadcaster",
                "paced CPU vs broadcaster",
                "burst p99 vs broadcaster",
                "paced p99 vs raw",
                *(VS_LANDED if vs_landed else ()),
            ],
        )
        table.note = " ".join(
            [
                "N clients (websockets sans-I/O) per server in separate processes; K events of "
                "~200 bytes per run, published as fast as each server accepts them. floor: one "
                "pre-built frame written to each socket by a minimal asyncio server. tbone: "
                "uvicorn's default websocket implementation (websockets-sansio); (websockets), "
                "(wsproto): its other two; (hypercorn): Hypercorn. deflate yes: the clients "
                "offer permessage-deflate as browsers do and every server accepts it (the "
                "floor compresses each event once, the others once per connection). The two "
                "groups run one after the other; every ratio is to the row of the same N and "
                "group.",
                *notes,
            ]
        )
        flow = Table(
            f"What flow control costs: tbone against {NO_FLOW} (median of {runs} runs)",
            [
                "N",
                "deflate",
                "CPU µs/delivery",
                "without",
                "ratio",
                "paced CPU µs",
                "without",
                "paced ratio",
            ],
            note=f"{NO_FLOW}: the tbone server with bench._noflow's fan-out, which offers every "
            "frame without testing the connection's outbox, lag or the catch-up window; side by "
            "side in the runs above.",
        )
        for n in sizes:
            k = events or events_for(n)
            for deflate in (False, True):
                med = _measure(rows, n, k, runs, deflate)
                if NO_FLOW in med and "tbone" in med:
                    on, off = med["tbone"], med[NO_FLOW]
                    flow.add(
                        n,
                        _negotiated(on["deflated"]),
                        on["cpu_us"],
                        off["cpu_us"],
                        ratio(on["cpu_us"], off["cpu_us"]),
                        on["paced_cpu_us"],
                        off["paced_cpu_us"],
                        ratio(on["paced_cpu_us"], off["paced_cpu_us"]),
                    )
                floor, raw, broadcaster = med["floor"], med["raw"], med["broadcaster"]
                for name, m in med.items():
                    cells = [
                        n,
                        k,
                        name,
                        _negotiated(m["deflated"]),
                        m["dps"],
                        m["cpu_us"],
                        m["kernel_us"],
                        m["paced_cpu_us"],
                        m["paced_kernel_us"],
                        m["p99_ms"],
                        m["paced_p50_ms"],
                        m["paced_p99_ms"],
                        m["peak_rss"] / 2**20,
                        f"{m['delivered']:.1%}",
                        ratio(m["cpu_us"], floor["cpu_us"]),
                        ratio(m["paced_cpu_us"], floor["paced_cpu_us"]),
                        ratio(m["cpu_us"], broadcaster["cpu_us"]),
                        ratio(m["paced_cpu_us"], broadcaster["paced_cpu_us"]),
                        ratio(m["p99_ms"], broadcaster["p99_ms"]),
                        ratio(m["paced_p99_ms"], raw["paced_p99_ms"]),
                    ]
                    if vs_landed:
                        # Each path against its own: prepared rows against the landed prepared.
                        own = name in (PREPARED, LANDED_PREPARED) and LANDED_PREPARED in med
                        base = med[LANDED_PREPARED if own else LANDED]
                        cells += [
                            ratio(m["cpu_us"], base["cpu_us"]),
                            ratio(m["paced_cpu_us"], base["paced_cpu_us"]),
                            ratio(m["paced_p99_ms"], base["paced_p99_ms"]),
                        ]
                    table.add(*cells)
    return table.render() + ("\n\n" + flow.render() if flow.rows else "")
