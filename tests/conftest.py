"""Shared fixtures: every test starts and ends with an empty channel registry."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tbone.dispatch import close_all_channels


@pytest.fixture(autouse=True)
async def _close_channels() -> AsyncIterator[None]:
    # Channels are process-wide singletons, but each test has its own event loop: close and
    # forget every channel a test left behind, so none leaks into the next test.
    yield
    await close_all_channels()
