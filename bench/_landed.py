"""The tbone packages of a landed commit, to measure the working tree against them side by side.

``packages(rev)`` writes ``tbone`` and ``tbone_asgi`` as they are in commit ``rev`` into a
temporary directory (``git archive``, no worktree) and removes it on exit. A server started
with that directory first on its import path (``Server(kind, path=...)``) runs the landed
code, while ``bench`` itself still comes from the working tree. A revision that cannot be
read (a shallow clone, no git, not a checkout) raises :class:`Unavailable`, whose message
says why, so the benchmark can leave that server out with a note.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PACKAGES", "REVISION", "Unavailable", "packages"]

# The last commit before flow control (catch-up window, slow watch, publisher gate) was added
# to the fan-out: "tbone" against "tbone (landed)" in one run is then what flow control costs.
# `python -m bench --landed REV` picks another commit.
REVISION = "86e3d76"

PACKAGES = ("tbone", "tbone_asgi")

ROOT = Path(__file__).resolve().parent.parent


class Unavailable(RuntimeError):
    """The packages of a revision cannot be read here; the message says why."""


def _run(args: list[str], stdin: bytes | None = None, why: str = "") -> bytes:
    try:
        result = subprocess.run(args, cwd=ROOT, input=stdin, capture_output=True, check=False)
    except OSError as exc:  # git or tar is not installed
        raise Unavailable(f"{args[0]} cannot run ({exc})") from exc
    if result.returncode != 0:
        error = result.stderr.decode(errors="replace").strip()
        raise Unavailable(error or why or f"{' '.join(args[:2])} failed")
    return result.stdout


@contextlib.contextmanager
def packages(rev: str = REVISION) -> Iterator[Path]:
    """A directory holding ``tbone`` and ``tbone_asgi`` of commit ``rev``; removed on exit."""
    if rev.startswith("-"):  # git would read it as an option
        raise Unavailable(f"{rev!r} is not a revision")
    missing = f"commit {rev} is not in this clone (unknown, or the clone is shallow)"
    _run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], why=missing)
    with tempfile.TemporaryDirectory(prefix="bench-landed-") as tmp:
        archive = _run(["git", "archive", "--format=tar", rev, *PACKAGES])
        _run(["tar", "-x", "-C", tmp], stdin=archive)
        yield Path(tmp)
