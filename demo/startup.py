"""The demo stops at once, with one line, when its channel cannot be built.

A ``TBONE_CHANNEL_URL`` whose library is missing (``redis://`` without the ``redis`` extra) or
whose scheme the demo does not know fails the same way in every process that imports the app,
and always will: retrying cannot help. So:

* the process prints one line saying what to fix (no traceback) and exits with status 3,
  uvicorn's status for a failed startup. ``uvicorn demo:app`` exits with it;
* under ``uvicorn demo:app --workers N`` every worker fails alike, but only the first one to
  fail prints (see :func:`first_to_report`). uvicorn's supervisor (0.50 and later) stops when a
  worker exits with status 3 instead of starting it again; it then exits with status 0 itself;
* ``python -m demo`` (:mod:`demo.__main__`) checks before uvicorn starts: one line, status 3,
  and no worker is started.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from demo.backend import channel_from_env
from tbone.dispatch import Channel

__all__ = [
    "STARTUP_FAILURE",
    "CannotStart",
    "channel_or_exit",
    "checked_channel",
    "fail",
    "first_to_report",
]

#: The exit status of a process that cannot start (uvicorn's ``STARTUP_FAILURE``).
STARTUP_FAILURE = 3

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


def _sweep(folder: Path) -> None:
    # Each failed start under a supervisor leaves one empty marker: remove the old ones.
    now = time.time()
    for marker in folder.glob("tbone-demo-failed-*"):
        with contextlib.suppress(OSError):
            if now - marker.stat().st_mtime > _MARKER_LIFETIME:
                marker.unlink()
