"""The tbone-asgi demo: ``uvicorn demo:app`` from the repository root, then open the page.

``TBONE_CHANNEL_URL`` picks the channel backend (see :mod:`demo.backend`); ``python -m demo``
checks it before it starts uvicorn (:mod:`demo.__main__`); ``docs/demo.md`` walks through it.
"""

from __future__ import annotations

from typing import Any

from demo.web import create_app

__all__ = ["app", "create_app"]


def __getattr__(name: str) -> Any:
    # ``demo.app`` (the ASGI app ``uvicorn demo:app`` serves) is built on first access, not at
    # import: importing ``demo.items`` or ``demo.create_app`` (as the tests do) creates no
    # channel and reads no environment. Its channel comes from ``TBONE_CHANNEL_URL``; one that
    # cannot be built ends the process with one line and status 3 (see demo.startup), and so
    # does a backend that is not ready within ``TBONE_STARTUP_TIMEOUT`` (a failed startup,
    # reported in one line by OneLineStartupFailure).
    if name == "app":
        from demo.startup import OneLineStartupFailure, channel_or_exit, startup_timeout_or_exit

        timeout = startup_timeout_or_exit()
        app = OneLineStartupFailure(create_app(channel_or_exit(), startup_timeout=timeout))
        globals()["app"] = app
        return app
    raise AttributeError(f"module 'demo' has no attribute {name!r}")
