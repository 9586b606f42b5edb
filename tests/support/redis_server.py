"""A private ``redis-server`` for tests: free port, own data dir, stop, kill, pause and restart.

``RedisServer(data_dir)`` starts nothing until :meth:`RedisServer.start`. The server listens on
127.0.0.1 only, never daemonizes (so this process owns it and can signal it) and keeps its data
in ``data_dir``: with ``persist=True`` every write is appended to an AOF there and fsynced
before Redis answers, so a SIGKILL loses nothing Redis acknowledged or sent to a reader, and
:meth:`RedisServer.restart` brings the same data back on the same port.

``args`` adds options to the command line (``["--cluster-enabled", "yes"]``) and ``config``
names a config file to start from (a Sentinel's, which Sentinel rewrites as it learns the
topology); tests/support/redis_ha.py builds Sentinel and Cluster setups on them.

When the binary is missing, :func:`require_redis_server` skips the test locally and fails it
when the ``CI`` environment variable is set (CI must run the Redis tests, never skip them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pytest

from tests.support.ports import free_port

__all__ = ["RedisServer", "free_port", "require_redis_server"]

START_TIMEOUT = 10.0


def require_redis_server() -> str:
    """The path of ``redis-server``; skips the test when missing (fails under ``CI``)."""
    path = shutil.which("redis-server")
    if path is None:
        message = (
            "redis-server is not installed: apt-get install redis-server "
            "(.ci/run installs it in CI)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _ping(port: int, timeout: float) -> bool:
    # A raw inline PING keeps this module free of the client library under test.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on a fixed free port (see the module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        persist: bool = False,
        args: Sequence[str] = (),
        config: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.binary = require_redis_server()
        self.data_dir = data_dir
        self.persist = persist
        self.args = list(args)
        self.config = config
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log = data_dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait (bounded) until it says it accepts connections.

        Redis tells a supervisor when it is ready (``--supervised systemd``: a ``READY=1``
        datagram on ``NOTIFY_SOCKET``); we are that supervisor, so there is no port polling.
        """
        assert self.process is None or self.process.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            *([str(self.config)] if self.config is not None else []),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
            "--supervised",
            "systemd",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--logfile",
            str(self._log),
        ]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        args += self.args
        # A short directory: unix socket paths are limited to ~107 bytes.
        with (
            tempfile.TemporaryDirectory(prefix="tbr") as short,
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
        ):
            notify_path = os.path.join(short, "notify")
            notify.bind(notify_path)
            notify.settimeout(0.2)
            env = {**os.environ, "NOTIFY_SOCKET": notify_path}
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, env=env)
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    if b"READY=1" in notify.recv(4096):
                        break
                except TimeoutError:  # socket.timeout is TimeoutError since 3.10
                    # A build without systemd support never notifies: accept a PONG then
                    # (a server still loading its data answers -LOADING, not PONG).
                    if _ping(self.port, 0.5):
                        break
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}: {self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"redis-server was not ready within {START_TIMEOUT}s: {self.log_tail()}"
                    )
        if not _ping(self.port, START_TIMEOUT):
            raise RuntimeError(f"redis-server is ready but does not answer PING on {self.port}")

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no final save) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=START_TIMEOUT)

    def restart(self) -> None:
        """Kill the server if it runs, then start it on the same port with the same data."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets open but never answers (a dead link)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()  # a paused process ignores nothing but SIGKILL; be safe anyway
        self.kill()
