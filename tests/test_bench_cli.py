"""``python -m bench``'s command line: plain-text help, one clear line for a missing extra."""

from __future__ import annotations

import re
from importlib.metadata import requires

import pytest

from bench.__main__ import BENCHMARKS, EXTRA, INSTALL, main
from tests.support.bench import python_m_bench


def test_help_is_plain_text() -> None:
    result = python_m_bench("--help")
    assert result.returncode == 0, result.stderr
    assert "``" not in result.stdout  # no reStructuredText markup
    assert not re.search(r":\w+:`", result.stdout), result.stdout
    assert INSTALL in result.stdout
    for name in BENCHMARKS:
        assert name in result.stdout


def test_a_missing_extra_is_one_line_before_anything_runs() -> None:
    # blinker missing, as without the bench extra (None in sys.modules: not found).
    result = python_m_bench(
        "signals", "--quick", prelude="import sys; sys.modules['blinker'] = None"
    )
    assert result.returncode == 1
    assert result.stdout == ""  # not even the header: nothing ran
    assert result.stderr.splitlines() == [
        f"python -m bench: the benchmarks need blinker, not installed: {INSTALL}"
    ]


def test_an_import_error_during_a_run_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(quick: bool, runs: int | None) -> str:
        raise ModuleNotFoundError("No module named 'somelib'", name="somelib")

    monkeypatch.setitem(BENCHMARKS, "signals", broken)
    assert main(["signals", "--quick"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"python -m bench: benchmark 'signals' cannot import somelib: {INSTALL}"
    ]


def test_the_extra_checked_is_the_bench_extra() -> None:
    bench = [r for r in requires("tbone-asgi") or [] if re.search(r"extra == .bench.", r)]
    names = {re.split(r"[\[<>=!~;\s]", r, maxsplit=1)[0].lower() for r in bench}
    assert names == set(EXTRA)
