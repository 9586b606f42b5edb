"""Figures: each reliability test records the numbers it measured, shown after the run.

``figure("reconnect storm: clients", 200)`` stores a number as a JUnit property
(``record_property``) and in a summary printed at the end of the run, with or without ``-s``,
so ``docs/reliability.md`` can quote what the run measured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import RedisServer

_FIGURES: list[tuple[str, str, Any]] = []


@pytest.fixture
def figure(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> Callable[[str, Any], Any]:
    """``figure(label, value)``: record a measured number for the report; returns ``value``."""

    def record(label: str, value: Any) -> Any:
        if isinstance(value, float):
            value = round(value, 4)
        record_property(label, value)
        _FIGURES.append((request.node.name, label, value))
        return value

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for test, label, value in _FIGURES:
        terminalreporter.write_line(f"{test}: {label} = {value}")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for the module's tests (fails in CI when it is not installed)."""
    with RedisServer(Path(tmp_path_factory.mktemp("redis"))) as server:
        yield server.url
