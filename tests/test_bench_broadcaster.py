"""broadcaster's private surface (bench._broadcaster) is where the benchmark was tested.

Fails when the installed broadcaster moves what ``restart_listener`` reaches into: update
``bench/_broadcaster.py`` (and its TESTED) before benchmarking with that broadcaster.
"""

from __future__ import annotations

import broadcaster
from broadcaster import Broadcast

from bench import _broadcaster


async def test_the_redis_backend_has_the_surface() -> None:
    broadcast = Broadcast("redis://127.0.0.1:1")  # never connected: only its objects are read
    assert _broadcaster.surface_problem(broadcast) is None, broadcaster.__version__


def test_a_backend_without_it_is_named() -> None:
    assert _broadcaster.surface_problem(object()) == "Broadcast has no _backend"
