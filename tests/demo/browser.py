"""Headless Chromium for tests, driven by Playwright's async API.

Debian's ``chromium`` is used (no browser download is possible in CI or here). When it is
missing a test is skipped locally, but fails when ``CI`` is set: CI installs it, so a missing
browser there is a broken setup, not a reason to pass.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

__all__ = ["CHROMIUM_ARGS", "chromium_path", "launch_chromium"]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium_path() -> str:
    """The Chromium binary, or skip (fail under CI) when there is none."""
    found = os.environ.get("TBONE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(found):
        message = (
            f"chromium not found ({found}); install it (apt-get install chromium) "
            "or set TBONE_CHROMIUM to its path"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@contextlib.asynccontextmanager
async def launch_chromium() -> AsyncIterator[Any]:
    """``async with launch_chromium() as browser``: a Playwright ``Browser``, closed (with its
    driver) when the block ends, also when the block raises."""
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
