"""Shared fixtures: every test starts and ends with an empty channel registry; a test marked
``load`` runs untraced by coverage."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from tbone.dispatch import close_all_channels


@pytest.fixture(autouse=True)
async def _close_channels() -> AsyncIterator[None]:
    # Channels are process-wide singletons, but each test has its own event loop: close and
    # forget every channel a test left behind, so none leaks into the next test.
    yield
    await close_all_channels()


@pytest.fixture(autouse=True)
def _untraced_under_load(request: pytest.FixtureRequest) -> Iterator[None]:
    # A load test (marked ``load``) pushes thousands of events through code that the other
    # tests cover line by line; tracing it would double its time and add nothing to the
    # report. pytest-cov's own ``no_cover`` marker fails under ``--no-cov`` (7.1), and under
    # xdist a worker holds a second Coverage that resumes when the first stops: hence the
    # settrace calls, which leave nothing tracing until ``cov.start()`` takes over again.
    cov = request.getfixturevalue("cov") if request.node.get_closest_marker("load") else None
    if cov is None:
        yield
        return
    cov.stop()
    sys.settrace(None)
    threading.settrace(None)
    try:
        yield
    finally:
        cov.start()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    # ``-n auto`` (addopts): two workers more than the cores. The real-server tests spend about
    # a quarter of their time waiting (on timers, child processes, servers starting), so one
    # worker per core leaves the cores idle that long (docs/architecture.md, "The test suite").
    return (os.cpu_count() or 1) + 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Files with a long test (marked ``slow``) run first, so that the short ones fill the gaps
    # at the end instead of leaving the workers waiting on one long file (xdist hands out
    # files in this order, --dist loadfile). Within each group the order is unchanged.
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)
