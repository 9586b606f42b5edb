"""tbone with its flow control taken out of the fan-out path, to measure what it costs.

``disable()`` (the ``tbone-noflow`` server kind calls it before building the app) turns
:attr:`tbone.dispatch.channels.fanout.Fanout.flow_control` off in this process: every frame is
offered, with no test of each connection's outbox against half its limits, no lag table and
no catch-up window, as before flow control existed. What stays, because it is per event or
per burst rather than per delivery: the publisher gate (one comparison per publish) and the
writer's test for a lagging connection after each frame it sends from its outbox (two
attribute reads). Only for the benchmark: a connection that stops reading now fills its outbox
until it overflows, and is closed then, as before flow control.
"""

from __future__ import annotations

from tbone.dispatch.channels.fanout import Fanout

__all__ = ["disable"]


def disable() -> None:
    """Take flow control out of this process's fan-out (see the module docstring)."""
    Fanout.flow_control = False
