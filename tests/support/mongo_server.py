"""A MongoDB wire server for tests: SecantusDB on a free port, in memory, pausable.

``mongod`` cannot be installed on every machine, but SecantusDB can (``pip install
secantusdb``): a standalone server that speaks MongoDB's wire protocol on WiredTiger and is
held to ``mongod``'s behaviour by its authors. :class:`MongoServer` starts one as a child
process (``python -m secantus --port P --storage-path :memory:``), so this process owns it and
can pause it (SIGSTOP: the sockets stay open and nothing answers), resume it, or stop it.

The real-server tests run, in this order of preference, against:

1. ``TBONE_TEST_MONGODB_URL``, a server someone runs (the GitHub workflow's ``mongo:7.0``);
2. a SecantusDB server started for the test session, when the package is installed
   (``.ci/run`` installs it);
3. neither: the tests are skipped with the reason, or fail when ``TBONE_REQUIRE_MONGODB=1``
   or ``CI`` is set (CI must run them, never skip them).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType

import pytest

from tests.support.redis_server import free_port

__all__ = ["SECANTUS", "MongoServer", "external_url", "require_secantus"]

#: The version .ci/run installs; docs/mongo.md says what was verified on it.
SECANTUS = "secantusdb==0.7.0b3"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def require_secantus() -> None:
    """Skip the test when SecantusDB is not installed (fail under ``CI`` or the require flag)."""
    if importlib.util.find_spec("secantus") is not None:
        return
    message = (
        f"no MongoDB server for the real-server tests: pip install '{SECANTUS}' (a MongoDB "
        "wire-compatible server the tests start), or set TBONE_TEST_MONGODB_URL"
    )
    if os.environ.get("CI") or os.environ.get("TBONE_REQUIRE_MONGODB") == "1":
        pytest.fail(message)
    pytest.skip(message)


class MongoServer:
    """One SecantusDB process on a free port of 127.0.0.1 (see the module docstring)."""

    def __init__(self) -> None:
        require_secantus()
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._drainer: threading.Thread | None = None
        self._log = Path(tempfile.mkstemp(prefix="secantus-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> MongoServer:
        """Start the server and wait (bounded) until it says that it listens."""
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "secantus",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                ":memory:",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        listening = threading.Event()
        self._drainer = threading.Thread(
            target=self._drain, args=(self.process, listening), daemon=True
        )
        self._drainer.start()
        if not listening.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"secantus did not listen within {START_TIMEOUT}s: {self.log()}")
        if self.process.poll() is not None:
            raise RuntimeError(f"secantus exited with {self.process.returncode}: {self.log()}")
        return self

    def _drain(self, process: subprocess.Popen[bytes], listening: threading.Event) -> None:
        # Its log goes to a file (read by log()); the line that says it listens is the signal.
        assert process.stdout is not None
        with process.stdout, self._log.open("ab") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if b"listening on" in line:
                    listening.set()
        listening.set()  # it exited: start() reports how

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets open but never answers (a dead link)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM (it removes its in-memory store), SIGKILL if it does not end in time."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused process would not act on SIGTERM
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
        if self._drainer is not None:
            self._drainer.join(STOP_TIMEOUT)  # it closes the pipe once the output ends

    def log(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> MongoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._log.unlink(missing_ok=True)


def external_url() -> str | None:
    """``TBONE_TEST_MONGODB_URL``: a server someone runs, used instead of starting one."""
    return os.environ.get("TBONE_TEST_MONGODB_URL", "").strip() or None
