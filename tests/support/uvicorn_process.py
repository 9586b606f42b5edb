"""``uvicorn app:app`` in a child process: a worker of a deployment, with its own channels.

::

    async with uvicorn_process(app_dir, env={"REDIS_URL": url}) as worker:
        await worker.get("/stats")               # JSON from the worker
        worker.ws_url("/ws?events=a")            # for a websocket client
        worker.log                               # what it logged so far

Each worker is its own process on its own free port (two of them are two workers, or two
hosts, with their own channel singletons), so a test knows which worker holds which
connection. Startup is awaited (lifespan included) from the log line uvicorn prints, bounded
in time; on exit the worker gets SIGTERM (uvicorn shuts down gracefully) and is killed if it
has not stopped within ``stop_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.redis_server import free_port

__all__ = ["Worker", "uvicorn_process"]

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """A running ``uvicorn`` child process (see the module docstring)."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.log: list[str] = []

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def get(self, path: str, timeout: float = 10.0) -> Any:
        """GET ``path`` and return its JSON (raises on an HTTP error)."""
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(f"http://127.0.0.1:{self.port}{path}")
            response.raise_for_status()
            return response.json()

    async def _read_log(self, started: asyncio.Future[None]) -> None:
        # Read stderr to the end: a full pipe would block the worker.
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.log.append(raw.decode(errors="replace").rstrip())
            if not started.done() and "Application startup complete" in self.log[-1]:
                started.set_result(None)
        if not started.done():
            started.set_exception(AssertionError("uvicorn exited:\n" + "\n".join(self.log)))


@contextlib.asynccontextmanager
async def uvicorn_process(
    app_dir: Path,
    *,
    env: dict[str, str],
    app: str = "app:app",
    start_timeout: float = 30.0,
    stop_timeout: float = 15.0,
) -> AsyncIterator[Worker]:
    """Run ``uvicorn <app> --app-dir <app_dir>`` on a free port; yield it once started."""
    port = free_port()
    options = [f"--app-dir={app_dir}", "--host=127.0.0.1", f"--port={port}", "--no-access-log"]
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "uvicorn", app, *options),
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stderr=asyncio.subprocess.PIPE,
    )
    worker = Worker(process, port)
    started = asyncio.get_running_loop().create_future()
    reading = asyncio.ensure_future(worker._read_log(started))
    try:
        await asyncio.wait_for(started, start_timeout)
        yield worker
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), stop_timeout)
            except (asyncio.TimeoutError, TimeoutError):
                process.kill()
                await process.wait()
        await asyncio.wait_for(reading, stop_timeout)
        if not started.done():
            started.cancel()
        elif not started.cancelled():
            started.exception()  # retrieved: an early exit was reported above
