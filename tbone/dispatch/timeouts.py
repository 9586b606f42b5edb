"""Bounded waits that never lose a cancellation.

On Python 3.10 and 3.11, ``asyncio.wait_for`` swallows a cancellation that arrives in the
same loop iteration as the awaited operation's result: it returns the result, and the task
that was cancelled runs on as if nothing happened (CPython gh-86296, fixed in 3.12, which
rebuilt ``wait_for`` on ``asyncio.timeout``). A consumer loop waiting for a database answer
is exactly that case: ``Channel.close()`` cancels it while the answer comes in, and close
then waits for a task that never ends. Everything in this package that waits with a bound
uses :func:`wait_at_most` instead (``tests/dispatch/test_timeouts.py`` checks both the race
and that no module calls ``asyncio.wait_for``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["wait_at_most"]

T = TypeVar("T")


async def wait_at_most(awaitable: Awaitable[T], timeout: float | None) -> T:
    """Await ``awaitable`` for at most ``timeout`` seconds (None: no bound).

    Raises ``TimeoutError`` (the builtin, which is ``asyncio.TimeoutError`` on 3.11+) when
    the time runs out, after cancelling ``awaitable``. A cancellation of the caller always
    propagates, whatever ``awaitable`` does at the same moment.
    """
    if timeout is None:
        return await awaitable
    if sys.version_info >= (3, 11):
        # asyncio.timeout runs the awaitable in this task (no task per call) and tells its
        # own expiry apart from a cancellation from outside.
        bound = asyncio.timeout(timeout)
        try:
            async with bound:
                return await awaitable
        except TimeoutError:
            if bound.expired():
                raise TimeoutError(f"no answer within {timeout:g}s") from None
            raise  # the awaitable's own
    return await _wait_at_most_310(awaitable, timeout)  # pragma: no cover - Python 3.10


async def _wait_at_most_310(awaitable: Awaitable[T], timeout: float) -> T:  # pragma: no cover
    # asyncio.wait() raises the caller's CancelledError even when the task has just finished.
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.wait((task,))
        raise
    if not done:
        task.cancel()
        await asyncio.wait((task,))
        if not task.cancelled() and task.exception() is None:
            return task.result()  # it finished while being cancelled
        raise TimeoutError(f"no answer within {timeout:g}s")
    return task.result()
