"""A command in a child process whose output is read line by line, signalled and timed.

::

    async with Child.start([uvicorn, "demo:app", "--port", "0"], env=env) as child:
        await child.wait_for("Waiting for application startup")   # bounded, never a sleep
        child.send(signal.SIGINT)                                   # or child.interrupt()
        status, seconds = await child.exit_within(5)                # timed from the signal

The child runs in a session of its own, so :meth:`Child.interrupt` can do what Ctrl-C in a
terminal does: SIGINT to every process of the group (a supervisor and its workers alike).
Whatever is still running when the block ends is killed, group and all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

__all__ = ["Child"]

ROOT = Path(__file__).resolve().parents[2]


class Child:
    """A running command (see the module docstring). ``log``: its output lines so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log: list[str] = []
        self._signalled: float | None = None
        self._ended = False
        self._arrived = asyncio.Condition()
        self._reading = asyncio.ensure_future(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        command: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> AsyncIterator[Child]:
        """Run ``command`` from ``cwd`` (default: the repository root), stdout and stderr as
        one stream."""
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=cwd or ROOT,
            env={**os.environ, **(env or {})},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        child = cls(process)
        try:
            yield child
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # workers left behind, if any
            await asyncio.wait_for(child._reading, 5)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            async with self._arrived:
                self.log.append(raw.decode(errors="replace").rstrip())
                self._arrived.notify_all()
        async with self._arrived:
            self._ended = True
            self._arrived.notify_all()

    @property
    def text(self) -> str:
        return "\n".join(self.log)

    async def wait_for(self, pattern: str, timeout: float = 15.0, *, count: int = 1) -> str:
        """The ``count``-th line matching ``pattern`` (a regex); AssertionError after ``timeout``
        or when the output ends first."""
        found = re.compile(pattern)

        def matches() -> list[str]:
            return [line for line in self.log if found.search(line)]

        async def arrive() -> str:
            async with self._arrived:
                while len(matches()) < count:
                    if self._ended:
                        raise AssertionError(f"no {pattern!r} before the end:\n{self.text}")
                    await self._arrived.wait()
                return matches()[count - 1]

        try:
            return await asyncio.wait_for(arrive(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.text}") from None

    def send(self, sig: int) -> None:
        """Send ``sig`` to the child itself; the exit is timed from now."""
        self._signalled = time.monotonic()
        self.process.send_signal(sig)

    def interrupt(self) -> None:
        """Ctrl-C in a terminal: SIGINT to the child's whole process group."""
        self._signalled = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)

    async def exit_within(self, timeout: float) -> tuple[int, float]:
        """(exit status, seconds since the signal, or since this call); AssertionError when it
        has not exited within ``timeout`` seconds (then the group is killed)."""
        since = self._signalled if self._signalled is not None else time.monotonic()
        try:
            status = await asyncio.wait_for(self.process.wait(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
            raise AssertionError(f"still running {timeout}s later:\n{self.text}") from None
        await asyncio.wait_for(self._reading, 5)  # the last lines are in the log
        return status, time.monotonic() - since
