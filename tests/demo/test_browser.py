"""The demo page in headless Chromium: two pages stay in step, and survive a server restart.

Set ``TBONE_SCREENSHOT=1`` to refresh ``docs/demo.png`` from this test.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from demo import create_app
from demo.items import ItemStore
from tbone.dispatch import MemoryChannel
from tbone_asgi.uvicorn import WebSocketProtocol
from tests.demo.browser import launch_chromium
from tests.demo.restartable import RestartableServer

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10_000  # ms: the longest any one step may take


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launch_chromium() as launched:
        yield launched


@pytest.fixture
async def server() -> AsyncIterator[RestartableServer]:
    # As `python -m demo` serves it: on prepared frames (deflated once for every page).
    app = create_app(MemoryChannel(name="demo-browser"), ItemStore())
    async with RestartableServer(app, ws=WebSocketProtocol) as running:
        yield running


class Errors(list[str]):
    """What a page reports as an error. While ``server_down`` is set, Chromium's own log line
    for a websocket that finds nothing listening (the page retrying while the server is
    stopped) goes to ``refused`` instead: the browser logs it, no page can silence it."""

    def __init__(self) -> None:
        super().__init__()
        self.server_down = False
        self.refused: list[str] = []

    def console(self, text: str) -> None:
        if self.server_down and "ERR_CONNECTION_REFUSED" in text:
            self.refused.append(text)
        else:
            self.append(f"console.error: {text}")


async def open_page(context: Any, url: str, errors: list[str]) -> Any:
    from playwright.async_api import expect

    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))

    def console(msg: Any) -> None:
        if msg.type != "error":
            return
        if isinstance(errors, Errors):
            errors.console(msg.text)
        else:
            errors.append(f"console.error: {msg.text}")

    page.on("console", console)
    await page.goto(url)
    await expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=WAIT)
    return page


async def add_item(page: Any, name: str, note: str = "") -> None:
    await page.fill("#name", name)
    await page.fill("#note", note)
    await page.click("#add")


async def names(page: Any) -> list[str]:
    texts: list[str] = await page.locator("#items .item-name").all_inner_texts()
    return texts


async def test_two_pages_stay_in_step_across_a_restart(
    browser: Any, server: RestartableServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    errors = Errors()
    context = await browser.new_context(viewport={"width": 1100, "height": 620})
    try:
        first = await open_page(context, server.url, errors)
        second = await open_page(context, server.url, errors)
        # Both pages take each event as the frame deflated once for every page.
        channel = server.app.state.channel
        carriers = [c for c in channel.subscribers("resource_create") if hasattr(c, "prepared")]
        assert len(carriers) == 2
        assert all(c.prepared for c in carriers)

        # A first connection is "connected", not a resume (its catch-up is part of loading).
        for page in (first, second):
            await expect(page.locator("#log .kind")).to_have_text(["connected"], timeout=WAIT)

        # One page creates through the form; both lists show it, from the event.
        await add_item(first, "Buy oat milk", "2 litres, the barista kind")
        for page in (first, second):
            await expect(page.locator("#items .item-name")).to_have_text(
                ["Buy oat milk"], timeout=WAIT
            )
            await expect(page.locator("#count")).to_have_text("1")
        await expect(first.locator("#name")).to_have_value("")  # the form was reset

        # Bad input is explained on the page, and nothing is added.
        await add_item(second, "   ")
        await expect(second.locator("#form-error")).to_have_text("Give the item a name.")

        # The server goes away: the pages say so and keep trying.
        errors.server_down = True
        await server.stop()
        for page in (first, second):
            await expect(page.locator("#status")).to_have_attribute(
                "data-state", "reconnecting", timeout=WAIT
            )
        # A change made while no page is connected...
        store: ItemStore = server.app.state.store
        await store.create({"name": "Made while you were away", "note": "resumed with since"})
        await server.start()  # the same port
        # ...reaches both pages when they reconnect and resume after the last id they saw.
        for page in (first, second):
            await expect(page.locator("#status")).to_have_attribute(
                "data-state", "open", timeout=WAIT
            )
            await expect(page.locator("#items .item-name")).to_have_text(
                ["Made while you were away", "Buy oat milk"], timeout=WAIT
            )
            recoveries = await page.evaluate("window.demo.client.recoveries")
            assert recoveries[-1]["complete"] is True
            assert recoveries[-1]["since"]  # resumed from an id, not from scratch
        # Both pages are open again: every refused retry came (and was logged) before that.
        errors.server_down = False

        # Deleting from one page removes the row from both.
        await second.locator("#items li", has_text="Buy oat milk").get_by_role("button").click()
        for page in (first, second):
            await expect(page.locator("#items .item-name")).to_have_text(
                ["Made while you were away"], timeout=WAIT
            )

        await add_item(second, "Ship the demo", "two windows, one list")
        await add_item(first, "Book the venue", "")
        for page in (first, second):
            await expect(page.locator("#items .item-name")).to_have_count(3, timeout=WAIT)
        await expect(first.locator("#log li")).not_to_have_count(0)
        log = await first.locator("#log .kind").all_inner_texts()
        assert {"create", "delete", "closed", "reconnected", "resumed"} <= set(log)
        assert log.count("connected") == 1
        assert log[-1] == "connected"  # the oldest entry
        # One id style: the log names items as the list does (#<item id>), no event ids.
        listed = set(await first.locator("#items .item-id").all_inner_texts())
        logged = set(await first.locator("#log .id").all_inner_texts())
        assert logged
        assert all(re.fullmatch(r"#[0-9a-f]{6}-\d+", text) for text in logged), logged
        assert listed <= logged

        shot = (
            ROOT / "docs" / "demo.png"
            if os.environ.get("TBONE_SCREENSHOT")
            else tmp_path / "demo.png"
        )
        await first.locator("#name").blur()
        await first.screenshot(path=str(shot), full_page=True, animations="disabled")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        await context.close()
    assert errors == []


async def test_the_page_fits_a_phone(browser: Any, server: RestartableServer) -> None:
    from playwright.async_api import expect

    errors: list[str] = []
    context = await browser.new_context(
        viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True
    )
    try:
        page = await open_page(context, server.url, errors)
        await add_item(page, "A rather long item name that must wrap on a small screen")
        await expect(page.locator("#items .item-name")).to_have_count(1, timeout=WAIT)
        # Nothing sticks out sideways: no horizontal scrolling on a phone.
        widths = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], widths
        # The form's controls are stacked and usable at that width.
        box = await page.locator("#add").bounding_box()
        assert box is not None
        assert box["width"] > 200
        if os.environ.get("TBONE_SCREENSHOT"):
            await page.screenshot(path=str(ROOT / "docs" / "demo-phone.png"), animations="disabled")
    finally:
        await context.close()
    assert errors == []
