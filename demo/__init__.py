"""The tbone-asgi demo: ``uvicorn demo:app`` from the repository root, then open the page.

``TBONE_CHANNEL_URL`` picks the channel backend (see :mod:`demo.backend`); ``docs/demo.md``
walks through it.
"""

from __future__ import annotations

from demo.app import create_app

__all__ = ["app", "create_app"]

#: The app ``uvicorn demo:app`` serves (its channel comes from ``TBONE_CHANNEL_URL``).
app = create_app()
