"""docs/deploy.md's recipes as the tests run them: its code blocks, by title, and their parts.

A recipe is taken from the page as written; the tests change only what must differ on a test
machine (ports, the Redis URL, file paths), with :func:`replace`, which fails when the text
to change is not there, so a recipe edited in the docs cannot silently stop being tested.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "docs" / "deploy.md"
BIN = Path(sys.executable).parent


def block(title: str) -> str:
    """The code block of docs/deploy.md whose title is ``title``."""
    pattern = rf"```\w+ title=\"{re.escape(title)}\"\n(.*?)```"
    found = re.search(pattern, DEPLOY.read_text(), flags=re.S)
    assert found, f"docs/deploy.md has no block titled {title!r}"
    return found.group(1)


def command(starts: str) -> str:
    """The one-line ``bash`` command of docs/deploy.md that starts with ``starts``."""
    lines = [
        line
        for body in re.findall(r"```bash\n(.*?)```", DEPLOY.read_text(), flags=re.S)
        for line in body.splitlines()
        if line.startswith(starts)
    ]
    assert len(lines) == 1, f"docs/deploy.md: {len(lines)} commands start with {starts!r}"
    return lines[0]


def replace(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced by ``new``; fails when ``old`` is not in it."""
    assert old in text, f"the recipe no longer holds {old!r}"
    return text.replace(old, new)


def require(program: str, package: str) -> str:
    """The path of ``program``; skips the test when missing (fails under ``CI``)."""
    found = shutil.which(program) or (f"/usr/sbin/{program}" if program == "nginx" else None)
    if found is None or not os.path.exists(found):
        message = f"{program} is not installed: apt-get install {package} (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found
