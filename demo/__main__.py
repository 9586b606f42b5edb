"""``python -m demo [uvicorn options]``: check the channel, then run ``uvicorn demo:app``.

The options are uvicorn's (``--port 8001``, ``--workers 2``, ``--ws-max-size 65536``...).
The channel of ``TBONE_CHANNEL_URL`` is built here first, before any worker exists: one that
cannot be built (its library is missing, its scheme unknown) is reported in one line and the
command exits with status 3. Otherwise this process becomes ``python -m uvicorn demo:app``
with the same options (same pid, same signals, uvicorn's exit status).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from demo.startup import STARTUP_FAILURE, CannotStart, checked_channel

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Check the channel, then become uvicorn; exit with status 3 if the check fails."""
    try:
        checked_channel()
    except CannotStart as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(STARTUP_FAILURE) from None
    args = list(sys.argv[1:] if argv is None else argv)
    # exec, not uvicorn.main() in this process: the server starts from a clean interpreter,
    # without the channel built for the check.
    os.execv(sys.executable, [sys.executable, "-m", "uvicorn", "demo:app", *args])


if __name__ == "__main__":
    main()
