"""tbone: signals, channels and websocket carriers for asyncio applications."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
