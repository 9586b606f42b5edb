"""The demo stops with one line when its channel cannot be built or its backend cannot be used.

A ``TBONE_CHANNEL_URL`` whose library is missing (``redis://`` without the ``redis`` extra),
whose scheme the demo does not know or that breaks its backend's rules (``redis:/host``,
``redis://host/abc``) fails the same way in every process that imports the app, and always
will: retrying cannot help. So:

* the process prints one line saying what to fix (no traceback) and exits with status 3,
  uvicorn's status for a failed startup. ``uvicorn demo:app`` exits with it;
* under ``uvicorn demo:app --workers N`` every worker fails alike, but only the first one to
  fail prints (see :func:`first_to_report`). uvicorn's supervisor (0.50 and later) stops when a
  worker exits with status 3 instead of starting it again; it then exits with status 0 itself;
* ``python -m demo`` (:mod:`demo.__main__`) checks before uvicorn starts: one line, status 3,
  and no worker is started.

A backend that does not answer is waited for at startup, at most ``TBONE_STARTUP_TIMEOUT``
seconds (:func:`startup_timeout`; one that refuses, a bad password say, is not waited for):
then the startup fails and :class:`OneLineStartupFailure` turns the failure into one line in
uvicorn's log instead of Starlette's traceback; uvicorn exits with status 3.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from demo.backend import channel_from_env
from tbone.dispatch import Channel, StartupStopped, TBoneError

__all__ = [
    "STARTUP_FAILURE",
    "STARTUP_TIMEOUT",
    "CannotStart",
    "OneLineStartupFailure",
    "channel_or_exit",
    "checked_channel",
    "fail",
    "first_to_report",
    "startup_timeout",
    "startup_timeout_or_exit",
]

#: The exit status of a process that cannot start (uvicorn's ``STARTUP_FAILURE``).
STARTUP_FAILURE = 3
#: How long the startup waits for the backend by default (``TBONE_STARTUP_TIMEOUT``), seconds.
STARTUP_TIMEOUT = 10.0

# Markers older than this are left over from supervisors that stopped long ago.
_MARKER_LIFETIME = 600.0


class CannotStart(Exception):
    """The demo cannot start with this environment; the message says what to fix."""


def checked_channel() -> Channel:
    """The channel of ``TBONE_CHANNEL_URL`` (which connects to nothing yet).

    Raises :class:`CannotStart`, with one line naming the fix, for a backend whose library is
    missing or a scheme the demo does not know.
    """
    try:
        return channel_from_env()
    except ImportError as exc:
        # The scheme only: the URL may hold a password.
        scheme = urlsplit(os.environ.get("TBONE_CHANNEL_URL", "").strip()).scheme
        raise CannotStart(
            f"demo cannot start: TBONE_CHANNEL_URL is a {scheme}:// URL, and {exc}"
        ) from exc
    except ValueError as exc:
        raise CannotStart(f"demo cannot start: {exc}") from exc


def startup_timeout() -> float:
    """``TBONE_STARTUP_TIMEOUT``: seconds > 0 (:data:`STARTUP_TIMEOUT` when unset or empty).

    Raises :class:`CannotStart` for anything else.
    """
    text = os.environ.get("TBONE_STARTUP_TIMEOUT", "").strip()
    if not text:
        return STARTUP_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise CannotStart(
            f"demo cannot start: TBONE_STARTUP_TIMEOUT={text!r} is not a number of seconds "
            f"above 0 (unset: {STARTUP_TIMEOUT:g})"
        )
    return value


def startup_timeout_or_exit() -> float:
    """:func:`startup_timeout`, or exit with :data:`STARTUP_FAILURE` after saying why."""
    try:
        return startup_timeout()
    except CannotStart as exc:
        fail(str(exc))


def channel_or_exit() -> Channel:
    """:func:`checked_channel`, or exit with :data:`STARTUP_FAILURE` after saying why.

    The reason is printed on stderr once per process tree (:func:`first_to_report`).
    """
    try:
        return checked_channel()
    except CannotStart as exc:
        fail(str(exc))


def fail(reason: str) -> NoReturn:
    """Print ``reason`` (if this process is the one to report) and exit with status 3."""
    if first_to_report():
        print(reason, file=sys.stderr, flush=True)
    raise SystemExit(STARTUP_FAILURE)


def first_to_report() -> bool:
    """True in a process of its own, and in one process only among a parent's children.

    uvicorn's workers are ``multiprocessing`` children of its supervisor, and they share its
    ``authkey`` (multiprocessing hands it to each child): no other process tree has it. The
    first child to create a marker file named after it reports; the others stay quiet. When
    creating the file fails for another reason, the child reports (twice is better than never).
    """
    if multiprocessing.parent_process() is None:
        return True
    tag = hashlib.sha256(bytes(multiprocessing.current_process().authkey)).hexdigest()[:16]
    folder = Path(tempfile.gettempdir())
    try:
        (folder / f"tbone-demo-failed-{tag}").touch(exist_ok=False)
    except FileExistsError:
        return False
    except OSError:
        return True
    _sweep(folder)
    return True


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class OneLineStartupFailure:
    """An ASGI app that reports ``app``'s failed startup in one line when it knows the cause.

    Starlette answers a lifespan startup that raised with ``lifespan.startup.failed`` whose
    message is the whole traceback, which uvicorn logs. When the error is one of ours (the
    backend not ready, a stop signal, :class:`CannotStart`) its message already says what
    happened and what to do: that one line is sent instead (only by the first process to
    report, see :func:`first_to_report`), and uvicorn adds "Application startup failed.
    Exiting." Other errors keep their traceback. The failure message is held until the app
    raises (Starlette sends it first), so the line names the exception itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold_failure(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and not held:
                held.append(message)  # sent below, once the cause is known
                return
            await send(message)

        try:
            await self.app(scope, receive, hold_failure)
        except BaseException as exc:
            if held:
                await send({**held[0], "message": _one_line(exc, held[0].get("message", ""))})
            raise
        if held:
            await send(held[0])


def _one_line(exc: BaseException, message: str) -> str:
    if isinstance(exc, CannotStart):
        line = str(exc)
    elif isinstance(exc, StartupStopped):
        line = f"demo did not start: {exc}"
    elif isinstance(exc, TBoneError):
        line = f"demo cannot start: {exc}"
    else:
        return message
    return line if first_to_report() else ""


def _sweep(folder: Path) -> None:
    # Each failed start under a supervisor leaves one empty marker: remove the old ones.
    now = time.time()
    for marker in folder.glob("tbone-demo-failed-*"):
        with contextlib.suppress(OSError):
            if now - marker.stat().st_mtime > _MARKER_LIFETIME:
                marker.unlink()
