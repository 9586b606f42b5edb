"""Option checks agree everywhere: TypeError for a wrong type, ValueError for a wrong value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tbone.dispatch import MemoryChannel
from tbone.dispatch.checks import seconds, whole_number
from tbone.dispatch.serving import ServeOptions
from tbone_asgi.client import Subscription


def test_whole_numbers() -> None:
    whole_number("n", 1)
    whole_number("n", None, optional=True)
    for wrong in ("1", 1.0, True, None):
        with pytest.raises(TypeError, match="n must be a whole number"):
            whole_number("n", wrong)
    with pytest.raises(ValueError, match="n must be at least 4096 \\(bytes\\), got 100"):
        whole_number("n", 100, minimum=4096, why=" (bytes)")


def test_seconds() -> None:
    seconds("t", 0.5)
    seconds("t", 0, zero=True)
    for wrong in ("1", True, None):
        with pytest.raises(TypeError, match="t must be a number of seconds"):
            seconds("t", wrong)
    for out in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="t must be more than 0 seconds"):
            seconds("t", out)


MAKERS: dict[str, Callable[[Any], object]] = {
    "channel history": lambda v: MemoryChannel(name=f"checks-{v!r}", history=v),
    "channel queue_size": lambda v: MemoryChannel(name=f"checks-q-{v!r}", queue_size=v),
    "route max_messages": lambda v: ServeOptions(max_messages=v),
    "client queue_size": lambda v: Subscription("ws://h:1/ws", queue_size=v),
}


@pytest.mark.parametrize("where", sorted(MAKERS))
def test_every_part_raises_the_same_errors(where: str) -> None:
    make = MAKERS[where]
    with pytest.raises(TypeError, match="must be a whole number"):
        make("10")
    with pytest.raises(ValueError, match="must be at least 1, got 0"):
        make(0)
