"""``python -m demo [uvicorn options]``: check the channel, then run ``uvicorn demo:app``.

The options are uvicorn's (``--port 8001``, ``--workers 2``, ``--ws-max-size 65536``...).
The channel of ``TBONE_CHANNEL_URL`` is built here first, before any worker exists, and must
read its backend within ``TBONE_STARTUP_TIMEOUT`` seconds (10 by default): a channel that
cannot be built (its library is missing, its scheme unknown, its URL malformed) or a backend
that refuses or does not answer is reported in one line and the command exits with status 3.
Ctrl-C during the check ends it at once (status 130). Otherwise this process becomes ``python
-m uvicorn demo:app`` with the same options (same pid, same signals, uvicorn's exit status),
on tbone_asgi's websocket protocol, which builds each event's frame once for every page
(``--ws tbone_asgi.uvicorn:WebSocketProtocol``, unless the options name another ``--ws``),
with uvicorn's frame limit at the endpoint's (``--ws-max-size 65536`` unless given).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from demo.startup import STARTUP_FAILURE, CannotStart, checked_channel, startup_timeout
from tbone.dispatch import Channel, ChannelUnavailable
from tbone.dispatch.protocol import Limits

__all__ = ["main"]

#: The exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
#: The websocket protocol the demo runs on: each event's frame built once (docs/asgi.md).
PREPARED = "tbone_asgi.uvicorn:WebSocketProtocol"


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Check the channel, then become uvicorn; exit with status 3 if the check fails."""
    try:
        timeout = startup_timeout()
        asyncio.run(check_ready(checked_channel(), timeout))
    except CannotStart as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(STARTUP_FAILURE) from None
    except KeyboardInterrupt:
        print("demo did not start: SIGINT stopped the check of the backend", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(arg == "--ws" or arg.startswith("--ws=") for arg in args):
        args = ["--ws", PREPARED, *args]
    if not any(arg == "--ws-max-size" or arg.startswith("--ws-max-size=") for arg in args):
        # The endpoint refuses bigger client frames (Limits.max_frame_bytes): uvicorn need not
        # read them whole first (docs/asgi.md, "Server settings").
        args = ["--ws-max-size", str(Limits().max_frame_bytes), *args]
    # exec, not uvicorn.main() in this process: the server starts from a clean interpreter,
    # without the channel built for the check.
    os.execv(sys.executable, [sys.executable, "-m", "uvicorn", "demo:app", *args])


async def check_ready(channel: Channel, timeout: float) -> None:
    """Wait until ``channel`` reads its backend (at most ``timeout`` seconds), then close it.

    Raises :class:`CannotStart` with the channel's one-line reason otherwise.
    """
    try:
        await channel.ready(timeout=timeout)
    except ChannelUnavailable as exc:
        raise CannotStart(f"demo cannot start: {exc}") from None
    finally:
        await channel.close()


if __name__ == "__main__":
    main()
