"""tbone with its flow control taken out of the fan-out path, to measure what it costs.

``disable()`` (the ``tbone-noflow`` server kind calls it before building the app) replaces
``Fanout.deliver`` with the same loop minus the flow-control work per delivery: the test of
each connection's outbox against half its limits, the lag table and the catch-up window. Every
frame is offered, as before flow control existed. What stays, because it is per event or
per burst rather than per delivery: the publisher gate (one comparison per publish) and the
writer's test for a lagging connection after each frame it sends from its outbox (two
attribute reads). Only for the benchmark: a connection that stops reading now fills its outbox
until it overflows, and is closed then, as before flow control.
"""

from __future__ import annotations

from tbone.dispatch.channels.fanout import Fanout
from tbone.dispatch.events import Event

__all__ = ["disable"]


def _deliver(self: Fanout, event: Event, now: bool = True) -> None:
    # Fanout.deliver without the lag and behind checks (keep in step with it otherwise).
    subs = self.by_event.get(event.name)
    if subs:
        text = event.frame
        size = event.size
        delivered = 0
        for sub in tuple(subs):
            hold = sub.hold
            if hold is not None and hold.intercept(event):
                continue
            if sub.frames:
                if sub.carrier.offer(text, size, now=now):
                    delivered += 1
            elif sub.carrier.offer_event(event, now=now):
                delivered += 1
        self.counts["delivered"] += delivered


def disable() -> None:
    """Take flow control out of this process's fan-out (see the module docstring)."""
    Fanout.deliver = _deliver  # type: ignore[method-assign]
