"""The event every benchmark publishes: about 200 bytes once framed."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["BODY", "event_data"]

BODY = "x" * 96  # with the other fields and the frame envelope: ~200 bytes on the wire


def event_data(seq: int) -> dict[str, Any]:
    """The data of event ``seq``; ``t`` is the publish time (``time.time()``) for latency."""
    return {"seq": seq, "t": time.time(), "user": "bench", "body": BODY}
