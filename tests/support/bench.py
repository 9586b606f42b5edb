"""Running ``python -m bench`` as a user does: its own interpreter, from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["python_m_bench"]

ROOT = Path(__file__).resolve().parents[2]


def python_m_bench(
    *args: str, prelude: str = "", timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """``python -m bench ARGS``; with ``prelude``, that Python code runs first in the same
    interpreter (to hide a module, say), then the module as ``-m`` would run it."""
    if prelude:
        run = "import runpy; runpy.run_module('bench', run_name='__main__', alter_sys=True)"
        command = ["-c", f"{prelude}\n{run}", *args]
    else:
        command = ["-m", "bench", *args]
    return subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
