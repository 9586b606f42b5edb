"""tbone: signals, channels and websocket carriers for asyncio applications."""

from __future__ import annotations

from tbone import _logging

__all__ = ["__version__"]

__version__ = "0.1.0"

# Warnings name their logger even where the app configured no logging (tbone/_logging.py).
_logging.install()
