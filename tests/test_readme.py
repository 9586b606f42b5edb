"""The README's examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_signals_and_channels_example_runs() -> None:
    block = next(b for b in python_blocks() if "RecordingCarrier" in b)
    out = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "'type': 'event'" in out
    assert "'name': 'resource_create'" in out
    assert "'data': {'pk': 1}" in out


def test_ci_runs_the_readmes_test_command() -> None:
    commands = re.findall(r"```bash\n(.*?)\n```", README.read_text(), flags=re.S)
    assert len(commands) == 2
    demo, tests = commands
    assert demo.endswith("uvicorn demo:app")
    ci_lines = (README.parent / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines
