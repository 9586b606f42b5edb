"""The benchmarks' harness keeps working: each one runs with tiny sizes and prints its table.

Nothing is timed here: the numbers of a run this small mean nothing, so the assertions check
the table's shape, that every implementation produced a row, and that the websocket runs
delivered every frame. Each benchmark runs in its own interpreter (``python -m bench NAME
--quick``), as a user runs it, which also keeps Django's global settings out of this process.
"""

from __future__ import annotations

import re

import pytest

from bench.fanout import ROWS
from tests.support.bench import python_m_bench
from tests.support.redis_server import require_redis_server

pytestmark = pytest.mark.slow  # long: scheduled first (tests/conftest.py)


def run_bench(name: str) -> str:
    """Run ``python -m bench NAME --quick``; its stdout. Fails with stderr when it fails."""
    result = python_m_bench(name, "--quick")
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def rows(output: str) -> list[list[str]]:
    """The body rows of every Markdown table in ``output``, as lists of stripped cells."""
    lines = output.splitlines()
    body = []
    for i, line in enumerate(lines):
        is_row = line.startswith("|") and not line.startswith("|-")
        is_header = i + 1 < len(lines) and lines[i + 1].startswith("|-")
        if is_row and not is_header:
            body.append([c.strip() for c in line.strip().strip("|").split("|")])
    return body


def test_signals_table_compares_all_three() -> None:
    out = run_bench("signals")
    body = rows(out)
    # 2 kinds x 3 sizes, each with a number for tbone, blinker and Django and two ratios.
    assert len(body) == 6, out
    for cells in body:
        assert cells[1] in ("async", "sync")
        assert all(re.fullmatch(r"[\d,.]+", c) for c in cells[2:5]), cells
        assert all(c.endswith("x") for c in cells[5:7]), cells


def test_channel_table_shows_each_variant() -> None:
    out = run_bench("channel")
    names = [r[0] for r in rows(out)]
    assert names == ["encode once (tbone)", "encode per subscriber", "hand loop"], out


def test_fanout_delivers_every_frame_on_every_server() -> None:
    out = run_bench("fanout")
    # tbone_asgi is part of the tree, wsproto and Hypercorn come with the test extra: every row
    # must be measured.
    assert "left out" not in out, out
    main, _, flow = out.partition("### What flow control costs")
    header = next(line for line in main.splitlines() if line.startswith("| N |"))
    names = [c.strip() for c in header.strip().strip("|").split("|")]
    table = [dict(zip(names, cells, strict=True)) for cells in rows(main)]
    # Each row once per group, every connection of the second group on permessage-deflate
    # (a share below 100% would show instead of "yes"), every frame delivered.
    delivered = {(r["server"], r["deflate"]): r["delivered"] for r in table}
    assert delivered == {(name, d): "100.0%" for name in ROWS for d in ("no", "yes")}, out
    assert {"floor", "tbone", "tbone (wsproto)", "tbone (hypercorn)"} <= set(ROWS)
    assert {r["CPU vs floor"] for r in table if r["server"] == "floor"} == {"1.00x"}, out
    # tbone against itself without flow control, per N and group: both ratios.
    costs = rows(flow)
    assert [c[1] for c in costs] == ["no", "yes"], out
    assert all(c[4].endswith("x") and c[7].endswith("x") for c in costs), out


def test_idle_measures_each_server() -> None:
    out = run_bench("idle")
    body = {r[0]: r for r in rows(out)}
    servers = ["bare", "raw", "tbone", "tbone (prepared)"]
    assert list(body) == [*servers, *(f"{s}, deflate" for s in servers)], out
    for baseline in ("bare", "bare, deflate"):
        assert body[baseline][5] == "0.0", out  # the baseline's own "beyond bare" column


def test_scale_delivers_every_frame_on_each_server() -> None:
    out = run_bench("scale")
    body = rows(out)
    # Each row with clients that offer no compression, then with deflate (all 6 of them).
    assert [(r[0], r[1]) for r in body] == [
        (server, deflate)
        for deflate in ("no (0)", "yes (6)")
        for server in ("floor", "tbone", "tbone (prepared)")
    ], out
    assert [r[5:7] for r in body if r[0] == "floor"] == [["1.00x", "1.00x"]] * 2, out


def test_wire_measures_each_size_and_way() -> None:
    out = run_bench("wire")
    body = rows(out)
    assert len(body) == 3, out
    for cells in body:
        assert all(re.fullmatch(r"[\d,.]+", c) for c in cells[1:6]), cells
        # An event deflated on its own is smaller than plain, and never below the stream's.
        plain, alone, context = (float(c.replace(",", "")) for c in (cells[1], cells[2], cells[4]))
        assert context <= alone < plain, cells


def test_redis_delivers_every_frame_across_one_two_and_four_workers() -> None:
    require_redis_server()
    out = run_bench("redis")
    body = rows(out)
    delivered = {(r[0], r[1]): r[8] for r in body}
    assert delivered == {
        (server, workers): "100.0%"
        for workers in ("1", "2", "4")
        for server in ("tbone", "broadcaster")
    }, out
    # Each row against broadcaster with as many workers: deliveries/s and paced p99.
    assert all(re.fullmatch(r"[\d.]+x", c) for r in body for c in r[9:11]), out
    assert [r[9:11] for r in body if r[0] == "broadcaster"] == [["1.00x", "1.00x"]] * 3, out


def test_slow_subscribers_are_measured_on_every_server() -> None:
    out = run_bench("slow")
    body = {r[0]: r for r in rows(out)}
    assert set(body) == {"raw", "broadcaster", "tbone"}, out
    # Every kind published everything: 50 small events fit in the kernel's socket buffers.
    assert {r[1] for r in body.values()} == {"50"}, out


def test_server_settings_measures_each_server_before_and_after() -> None:
    out = run_bench("server_settings")
    frames, deflate, pings = (rows(table) for table in out.split("### ")[1:])
    # Every frame over the endpoint's 64 KiB is closed with 1009: by the endpoint once the
    # server handed all of it over (defaults), by the server itself with the setting.
    assert [(r[0], r[2]) for r in frames] == [
        ("uvicorn", "1009 endpoint (3)"),
        ("uvicorn", "1009 server (3)"),
        ("Hypercorn", "1009 endpoint (3)"),
        ("Hypercorn", "1009 server (3)"),
    ], out
    assert [(r[0], r[2]) for r in deflate] == [
        ("uvicorn", "yes"),
        ("uvicorn", "no"),
        ("Hypercorn", "yes"),
        ("Hypercorn", "no"),
    ], out
    # uvicorn drops connections that answer no ping; Hypercorn never checks for pongs.
    assert [(r[0], r[3]) for r in pings] == [("uvicorn", "0"), ("Hypercorn", "2")], out
    assert pings[1][2].startswith("not within"), out


def test_gc_measures_each_server_and_what_a_round_leaves() -> None:
    out = run_bench("gc")
    collections, alive, where = (rows(table) for table in out.split("### ")[1:])
    servers = ["raw", "broadcaster", "tbone"]
    assert [r[0] for r in collections] == servers, out
    assert [r[0] for r in alive] == servers, out
    for cells in collections + alive:
        assert cells[1] == "20", out  # N = 5 clients x K = 4 events, every frame delivered
    for cells in collections:
        worst = cells.pop(7)  # the worst pause, with its generation; "-" for no collection
        assert re.fullmatch(r"-|[\d,.]+ \(gen[012]\)", worst), worst
    for cells in alive:
        each = cells.pop(6)  # objects per delivery of each round counted
        assert re.fullmatch(r"-?[\d.]+ -?[\d.]+ -?[\d.]+", each), each
    for cells in collections + alive:
        assert all(re.fullmatch(r"-?[\d,.]+", c) for c in cells[2:]), cells
    # The allocation check ran: it finds what tbone's MemoryChannel keeps of each event (its
    # history), both as tracked objects and as the lines that allocated them.
    tbone = [r for r in where if r[0] == "tbone"]
    assert ["net objects", "tbone.dispatch.events.Event", "4"] in [
        [r[1], r[3], r[5]] for r in tbone
    ], out
    assert any(r[1] == "new blocks" and r[2].startswith("tbone/dispatch/") for r in tbone), out
