"""Every entry point's options are typed: mypy, with the project's settings, reports a typo.

``misspelt_option.py`` and ``spelt_option.py`` sit beside this file; pytest does not collect
them (they are not ``test_*.py``) and the project's own mypy run (``packages`` in
pyproject.toml) does not include them, so only this test checks them.
"""

from __future__ import annotations

from pathlib import Path

from mypy import api

HERE = Path(__file__).parent
PYPROJECT = HERE.parents[1] / "pyproject.toml"


def run_mypy(name: str) -> tuple[str, int]:
    stdout, stderr, status = api.run(
        ["--config-file", str(PYPROJECT), "--no-error-summary", str(HERE / name)]
    )
    return stdout + stderr, status


def test_a_misspelt_option_is_a_type_error_on_every_entry_point() -> None:
    source = (HERE / "misspelt_option.py").read_text().splitlines()
    marked = {n for n, line in enumerate(source, start=1) if line.endswith("# misspelt")}
    assert len(marked) == 4
    output, status = run_mypy("misspelt_option.py")
    assert status == 1, output
    reported = {
        int(line.split(":")[1])
        for line in output.splitlines()
        if "misspelt_option.py:" in line and 'Unexpected keyword argument "' in line
    }
    assert reported == marked, output
    assert output.count(": error:") == len(marked), output


def test_the_same_calls_spelt_right_pass() -> None:
    output, status = run_mypy("spelt_option.py")
    assert (status, output) == (0, "")
