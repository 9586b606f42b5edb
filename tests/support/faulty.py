"""``Faulty``: a channel backend that fails with the errors a test gives it, then reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from tbone.dispatch import Channel, Event, History

__all__ = ["Faulty"]


class Faulty(Channel):
    """``listen`` raises each error of ``errors`` in turn, then reads (ready) for ever."""

    backend = "faulty"

    def __init__(self, name: str, errors: list[Exception], **options: Any) -> None:
        super().__init__(name, backoff=(0.01, 0.02), **options)
        self.errors = errors
        self.attempts = 0
        self.tries: asyncio.Queue[int] = asyncio.Queue()  # each attempt, as it starts

    async def store(self, name: str, data: Any) -> Event:
        raise NotImplementedError

    async def listen(self, after: str | None) -> AsyncIterator[Event]:
        self.attempts += 1
        self.tries.put_nowait(self.attempts)
        if self.errors:
            raise self.errors.pop(0)
        self.mark_ready()
        await asyncio.Event().wait()
        yield  # pragma: no cover - never reached; makes this an async generator

    async def read_history(self, since: str | None) -> History:
        return History([], complete=True)

    def fatal_error(self, exc: Exception) -> str | None:
        return "give it the right to" if isinstance(exc, PermissionError) else None
