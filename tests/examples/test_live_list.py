"""examples/live_list in headless Chromium: a list that updates live, and resumes after a drop.

The example's FastAPI app is served by uvicorn; the test restarts the server while the page
is open (the page says it lost the connection), adds a to-do meanwhile, and the page, once
reconnected, catches up from the last event it saw and says so. The app's lifespan runs once
around the whole test, as in one process whose connections drop, so the channel keeps the
history the page resumes from. docs/tutorial.md shows these very files.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.demo.browser import launch_chromium
from tests.demo.restartable import RestartableServer

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "live_list"
WAIT = 10_000  # ms: the longest any one step may take


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("live_list_app", EXAMPLE / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def example() -> AsyncIterator[tuple[ModuleType, RestartableServer]]:
    module = load_example()
    app = module.app
    # The lifespan once around the test: the channel lives across the server's restarts.
    async with (
        app.router.lifespan_context(app),
        RestartableServer(app, lifespan="off", ws_max_size=65536) as server,
    ):
        yield module, server


async def test_the_list_updates_live_and_resumes_after_a_restart(
    example: tuple[ModuleType, RestartableServer],
) -> None:
    from playwright.async_api import expect

    module, server = example
    errors: list[str] = []
    async with launch_chromium() as browser:
        page = await browser.new_page()
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        await page.goto(server.url)
        status = page.locator("#status")
        await expect(status).to_have_attribute("data-state", "open", timeout=WAIT)
        log = page.locator("#log li")
        await expect(log).to_have_count(1, timeout=WAIT)
        await expect(log.first).to_contain_text("connected")

        # Added in the page's form, and by another client: both appear from their events.
        await page.fill("#text", "Water the plants")
        await page.click("button")
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            reply = await http.post("/api/todos", json={"text": "Call the bank"})
            assert reply.status_code == 201
        todos = page.locator("#todos li")
        await expect(todos).to_have_text(["Water the plants", "Call the bank"], timeout=WAIT)

        # The server goes away: the page says so and keeps trying.
        await server.stop()
        await expect(status).to_have_attribute("data-state", "reconnecting", timeout=WAIT)
        await expect(status).to_have_text(re.compile(r"reconnecting in \d+\.\d+s"))
        # A to-do made meanwhile (by another worker, say) ...
        await module.add_todo(module.NewTodo(text="Made while you were away"))
        await server.start()  # the same port
        # ... reaches the page when it reconnects and resumes after the last id it saw.
        await expect(status).to_have_attribute("data-state", "open", timeout=WAIT)
        await expect(todos).to_have_text(
            ["Water the plants", "Call the bank", "Made while you were away"], timeout=WAIT
        )
        notes = await log.all_inner_texts()
        kinds = [re.sub(r"^\S+ ", "", text) for text in notes]  # newest first, time removed
        assert kinds[0] == "resumed: caught up with what was missed", notes
        assert kinds[1] == "reconnected", notes
        assert kinds[-1] == "connected", notes
        assert any(kind.startswith("connection lost (code 1012)") for kind in kinds), notes
        await page.close()
    assert errors == []


def test_the_tutorial_shows_the_example_files_as_they_are() -> None:
    tutorial = (ROOT / "docs" / "tutorial.md").read_text()
    blocks: dict[str, Any] = dict(
        re.findall(r"```(?:python|html) title=\"([^\"]+)\"\n(.*?)```", tutorial, flags=re.S)
    )
    assert blocks.keys() == {"app.py", "index.html"}
    for name, text in blocks.items():
        assert text == (EXAMPLE / name).read_text(), f"docs/tutorial.md's {name} differs"
