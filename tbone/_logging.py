"""tbone's warnings, readable where the app configured no logging (``uvicorn app:app``).

Python prints a record that no handler takes with its "last resort" handler: the bare
message, without level or logger, so a line like "no channel named 'pubsub' was created..."
cannot be traced to tbone, nor silenced by name. :class:`Fallback` sits on the ``tbone`` and
``tbone_asgi`` loggers and does what the last resort would, WARNING and above on stderr, but
names the level and the logger (``WARNING:  tbone_asgi: ...``, uvicorn's own layout). It
steps aside as soon as any other handler would take the record (the app's logging config,
pytest's capture, a handler on the logger itself), so nothing is ever printed twice.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["Fallback", "install"]


class _Format(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"{record.levelname + ':':<9} {record.name}: {record.message}"


class Fallback(logging.Handler):
    """Print WARNING and above when no other handler on the record's way up would."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(_Format())

    def handle(self, record: logging.LogRecord) -> bool:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            for handler in logger.handlers:
                if handler is not self and record.levelno >= handler.level:
                    return False  # someone else prints it
            if not logger.propagate:
                break
            logger = logger.parent
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


_fallback = Fallback()


def install() -> None:
    """Put the one :class:`Fallback` on tbone's two top loggers (again: no effect)."""
    for name in ("tbone", "tbone_asgi"):
        logger = logging.getLogger(name)
        if _fallback not in logger.handlers:
            logger.addHandler(_fallback)
