"""Free TCP ports for test servers, chosen outside the kernel's ephemeral range.

A test that stops a server and starts it again on the same port (RestartableServer, Redis and
MongoDB restarts) must find the port still free. A port from ``bind(("127.0.0.1", 0))`` is in
the ephemeral range, which the kernel also hands to every outgoing connection: while the server
is down, a client of any test running alongside may be given that port, and the restart fails
with "Address already in use" (seen under load with pytest-xdist). Ports below the range are
never given to outgoing connections.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port"]

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_random = random.SystemRandom()  # not the seeded module state: xdist workers pick apart


def _candidates() -> range:
    try:
        low, high = (int(part) for part in _RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    if low - 10000 >= 1000:
        return range(10000, low)
    return range(high + 1, 65536)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to now, outside the ephemeral range."""
    candidates = _candidates()
    for _ in range(500):
        port = _random.choice(candidates)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or in TIME_WAIT: another one
            return port
    raise RuntimeError(f"no free port in {candidates.start}-{candidates.stop - 1}")
