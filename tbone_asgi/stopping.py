"""A startup that waits ends at once on SIGINT or SIGTERM.

Servers catch the stop signals with ``signal.signal`` (uvicorn does, and restores the previous
handlers when it stops). While the app's lifespan startup runs, uvicorn only notes the signal
and goes on awaiting the startup: a startup that waits for a backend keeps the process alive
through Ctrl-C, a second Ctrl-C and SIGTERM, and a supervisor (``--workers``) waits for it.

:class:`StopSignals` puts a handler in front of the one installed, for as long as it is
entered: the signal still reaches the previous handler (the server notes it and exits as
usual), and the waiting task is cancelled. Python runs signal handlers in the main thread
only, so elsewhere (an app started in a thread, as test clients do) it does nothing. Signals
that are ignored (``SIG_IGN``) or handled outside Python stay as they are.

A signal that came before (uvicorn installs its handler, then imports the app, then starts
its lifespan) is found where uvicorn notes it: a handler that is a method of an object whose
``should_exit`` is true (uvicorn's ``Server.handle_exit``) means the server was asked to stop
already, and the task is cancelled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

__all__ = ["STOP_SIGNALS", "StopSignals"]

#: The signals that stop a server.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """``with StopSignals(task) as stop:``: a stop signal cancels ``task``.

    ``stop.received`` is the name of the first stop signal that arrived meanwhile (None if
    none did): the task tells its own cancellation from others by it. Leaving restores the
    previous handlers (unless someone replaced ours meanwhile: theirs stays), and a signal
    that arrives after that cancels nothing.
    """

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.received: str | None = None
        self._loop = task.get_loop()
        self._previous: dict[int, Any] = {}
        self._active = False

    def __enter__(self) -> StopSignals:
        self._active = True
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            # None: a handler installed outside Python, which could not be put back.
            if previous is None or previous == signal.SIG_IGN:
                continue
            self._previous[signum] = signal.signal(signum, self._handle)
            noted = _noted_stop(previous)
            if noted is not None and self.received is None:
                self.received = noted
                self._loop.call_soon(self._cancel)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._active = False
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
        # A signal handler runs between two bytecodes of the main thread, maybe inside the
        # event loop itself: hand the cancellation to the loop, which wakes up for it.
        if self._active:
            self._loop.call_soon_threadsafe(self._cancel)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            # What would have happened without us (SIGTERM's default: the process ends).
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def _cancel(self) -> None:
        if self._active and not self.task.done():
            self.task.cancel()


def _noted_stop(handler: Any) -> str | None:
    """The signal a server's handler has noted already (uvicorn's ``Server.handle_exit``
    sets ``should_exit`` and keeps ``_captured_signals``), else None."""
    server = getattr(handler, "__self__", None)
    if getattr(server, "should_exit", False) is not True:
        return None
    captured = getattr(server, "_captured_signals", None)
    if isinstance(captured, list) and captured and isinstance(captured[0], int):
        with contextlib.suppress(ValueError):
            return signal.Signals(captured[0]).name
    return "a stop signal"
