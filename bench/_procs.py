"""Server and client processes for the websocket benchmarks, driven from the harness.

The harness is plain blocking code: it starts each uvicorn server (``bench._server``) and each
websocket client process (``bench._client``) as a subprocess and talks to them over HTTP and
pipes. Every wait is bounded: a process that dies or stalls raises ``BenchError`` naming it,
with the end of its stderr, instead of hanging the run.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["BenchError", "Clients", "Server"]

ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """A benchmark process failed; the message says which and why."""


def _spawn(args: list[str], first: Path | None = None) -> subprocess.Popen[str]:
    # ``first`` shadows the working tree's packages: it goes before ROOT on PYTHONPATH and is
    # the working directory, which ``python -m`` puts ahead of PYTHONPATH.
    path = [str(p) for p in (first, ROOT) if p is not None]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=first or ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _tail(stream: IO[str] | None) -> str:
    if stream is None:
        return ""
    try:
        return stream.read()[-2000:]
    except (OSError, ValueError):
        return ""


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)  # a server blocked on a stuck client may never finish shutting down
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class Server:
    """A ``bench._server`` process of ``kind``; a context manager that stops it on exit.

    With ``path``, the server imports ``tbone`` and ``tbone_asgi`` from that directory instead
    of the working tree (``bench._landed``); it fails to start unless it really did.
    ``options``: more command-line options of ``bench._server`` (``["--server", "hypercorn"]``,
    ``["--ws-max-size", "16777216"]``).
    """

    def __init__(
        self, kind: str, url: str = "", path: Path | None = None, options: Sequence[str] = ()
    ) -> None:
        self.kind = kind
        args = ["-m", "bench._server", kind, *(["--url", url] if url else []), *options]
        self.proc = _spawn(args, path)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise BenchError(f"server {kind!r} did not start: {line!r} {_tail(self.proc.stderr)}")
        self.port = int(line)
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        if path is not None:
            self._check_imports(path)

    def _check_imports(self, path: Path) -> None:
        # Asked of the server itself: a server that imported the working tree instead would
        # compare the code with itself, and the table could not tell.
        modules: dict[str, str] = self.stats().get("modules", {})

        def inside(file: str | None) -> bool:
            return file is not None and Path(file).resolve().is_relative_to(path.resolve())

        wrong = {
            name: modules.get(name)
            for name in ("tbone", "tbone_asgi")
            if not inside(modules.get(name))
        }
        if wrong:
            self.close()
            raise BenchError(f"server {self.kind!r} did not import from {path}: {wrong}")

    def request(self, method: str, path: str) -> dict[str, Any]:
        """An HTTP request to the server; its JSON answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            body = response.read()
        except OSError as exc:
            raise BenchError(f"server {self.kind!r}: {method} {path} failed: {exc}") from exc
        finally:
            conn.close()
        if response.status != 200:
            raise BenchError(f"server {self.kind!r}: {method} {path} -> {response.status} {body!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    def stats(self, reset_peak: bool = False, objects: bool = False) -> dict[str, Any]:
        """CPU seconds, RSS, peak RSS and subscribers of the server process.

        With ``reset_peak`` the next call's peak RSS is the peak since this call (Linux); with
        ``objects`` the answer also counts live objects (after a full garbage collection).
        ``gc``: the server's automatic garbage collections since the last ``reset_peak``
        (``bench._server``'s ``_control_app`` says what it holds).
        """
        query = "&".join(q for q, on in (("reset=1", reset_peak), ("objects=1", objects)) if on)
        return self.request("GET", f"/stats?{query}" if query else "/stats")

    def wait_clients(self, n: int, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until ``n`` subscribers are connected; return the stats at that moment."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["clients"] >= n:
                return stats
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise BenchError(
                    f"server {self.kind!r}: {stats['clients']} of {n} subscribers after {timeout}s"
                )
            time.sleep(0.05)  # polling a counter of another process; bounded by the deadline

    def close(self) -> None:
        _stop(self.proc)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Clients:
    """``n`` websocket connections to ``url`` spread over ``procs`` client processes.

    ``stuck`` connections never read (see ``bench._client``); they cannot be armed. With
    ``deflate`` they offer permessage-deflate; ``deflated`` counts those that negotiated it.
    """

    def __init__(
        self,
        url: str,
        n: int,
        procs: int,
        timeout: float = 60.0,
        stuck: bool = False,
        deflate: bool = False,
    ) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[str]] = []
        share = math.ceil(n / procs)
        counts = [min(share, n - i * share) for i in range(procs) if n - i * share > 0]
        start = time.perf_counter()
        for count in counts:
            self.procs.append(
                _spawn(
                    ["-m", "bench._client", url, str(count), "--timeout", str(timeout)]
                    + (["--stuck"] if stuck else [])
                    + (["--deflate"] if deflate else [])
                )
            )
        opened = [self._read(p) for p in self.procs]
        self.connected = sum(o["connected"] for o in opened)
        self.deflated = sum(o["deflate"] for o in opened)
        self.connect_seconds = time.perf_counter() - start
        if self.connected != n:
            self.close()
            raise BenchError(f"clients: {self.connected} of {n} connections opened")

    def _read(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(5)
            raise BenchError(f"a client process ended ({proc.returncode}): {_tail(proc.stderr)}")
        result: dict[str, Any] = json.loads(line)
        return result

    def _write(self, obj: dict[str, Any]) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(obj) + "\n")
            proc.stdin.flush()

    def arm(self, k: int, latency: bool = True) -> None:
        """Tell every client to expect ``k`` events per connection; returns once all listen.

        ``latency=False``: the round reports no per-frame latencies (for rounds of millions).
        """
        self._write({"expect": k, "latency": latency})
        for proc in self.procs:
            self._read(proc)

    def collect(self) -> dict[str, Any]:
        """Wait for every client's round: merged ``received``, ``latency_us``, ``last``, ``cpu``,
        ``out_of_order``."""
        results = [self._read(p) for p in self.procs]
        return {
            "received": sum(r["received"] for r in results),
            "latency_us": [x for r in results for x in r["latency_us"]],
            "last": max(r["last"] for r in results),
            "cpu": sum(r["cpu"] for r in results),
            "out_of_order": sum(r["out_of_order"] for r in results),
        }

    def close(self) -> None:
        for proc in self.procs:
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"quit": True}) + "\n")
                proc.stdin.flush()
            except (OSError, ValueError):
                pass
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)  # a clean exit; _stop() ends it otherwise
            _stop(proc)

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
