"""Floods and leaks: 10,000 connect/subscribe/disconnect cycles against a real uvicorn.

Each cycle connects (subscribed at connect to one of 50 events), subscribes to one more with
a frame, proves it with a ping, and leaves: with a close handshake, or (every 4th) by dropping
the TCP connection.

After a warm-up (caches, free lists and the allocator reach their steady size), the number
of tasks, carriers, protocol sessions and subscriber entries must come back to where they
were, and the process's memory may grow by a small bound only. The cycles run in a fresh
interpreter (tests/reliability/churn.py): the memory of a process that ran other tests first
depends on them.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.churn import CONCURRENCY, CYCLES, WARMUP

ROOT = Path(__file__).resolve().parents[2]
RSS_BOUND = 4 * 1024 * 1024  # bytes the process may grow by over the 9,000 measured cycles


@pytest.mark.slow
@pytest.mark.load
async def test_ten_thousand_connect_subscribe_disconnect_cycles(
    figure: Callable[[str, Any], Any],
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.reliability.churn",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(child.communicate(), 120)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out)
    before, after = result["before"], result["after"]
    assert result["done"] == CYCLES
    assert after == before, f"grew: {before} -> {after}"
    assert after["subscribers"] == after["subscriptions"] == after["live carriers"] == 0
    grown = result["grown"]
    assert grown < RSS_BOUND, f"RSS grew by {grown / 1e6:.1f} MB over {CYCLES - WARMUP} cycles"
    figure("cycles", CYCLES)
    figure("concurrency", CONCURRENCY)
    figure("cycles per second", (CYCLES - WARMUP) / result["elapsed"])
    figure("tasks before/after", f"{before['tasks']}/{after['tasks']}")
    figure("RSS growth over the measured cycles (KiB)", grown // 1024)
