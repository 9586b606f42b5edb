"""A websocket client that does what the browser client does after a close: resume.

``Reader(url)`` connects to ``url`` (which names the events, e.g. ``/ws?events=tick,end``),
and whenever the connection closes it reconnects with ``since=<the last id it saw>``. It keeps
every event id it received, the close codes, and the ``complete`` flag of each ``recovered``
frame, and stops after an ``end`` event::

    reader = Reader(worker.ws_url("/ws?events=tick,end"))
    task = asyncio.ensure_future(reader.run())
    await reader.subscribed.wait()      # its first subscription is in place
    await reader.wait_for(10)           # until it received 10 events
    await reader.wait_for(10, recovered=1)  # and a `recovered` frame
    ...
    await reader.ended.wait()
    reader.ids, reader.closes, reader.recovered, reader.told_of_a_gap
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.exceptions import ConnectionClosed

from tests.support.web_servers import ws_connect

__all__ = ["Reader"]


class Reader:
    """A websocket client that resumes with the last id it saw whenever it is closed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ids: list[str] = []
        self.closes: list[int | None] = []
        self.recovered: list[bool] = []
        self.subscribed = asyncio.Event()
        self.ended = asyncio.Event()
        self._changed = asyncio.Event()

    async def run(self) -> None:
        while not self.ended.is_set():
            since = f"&since={self.ids[-1]}" if self.ids else ""
            try:
                async with ws_connect(self.url + since, open_timeout=10) as ws:
                    # A pong after the connect-time subscription proves it is in place.
                    await ws.send(json.dumps({"type": "ping"}))
                    try:
                        async for text in ws:
                            self._take(json.loads(text))
                            if self.ended.is_set():
                                return
                    except ConnectionClosed:
                        pass
                    self.closes.append(ws.close_code)
            except (OSError, ConnectionClosed, TimeoutError):
                self.closes.append(None)  # refused while the worker could not resume it
            await asyncio.sleep(0.05)  # pacing between reconnects, like a browser's backoff

    def _take(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "pong":
            self.subscribed.set()
        elif frame["type"] == "recovered":
            self.recovered.append(frame["payload"]["complete"])
            self._changed.set()
        elif frame["type"] == "event":
            self.ids.append(frame["payload"]["id"])
            self._changed.set()
            if frame["payload"]["name"] == "end":
                self.ended.set()

    async def wait_for(self, count: int, *, recovered: int = 0, timeout: float = 30.0) -> None:
        """Until ``count`` events (and ``recovered`` frames) arrived; TimeoutError after
        ``timeout`` seconds."""

        async def enough() -> None:
            while len(self.ids) < count or len(self.recovered) < recovered:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(enough(), timeout)

    @property
    def told_of_a_gap(self) -> bool:
        """Closed with 1013 (events lost), and told ``complete: false`` on a resume."""
        return 1013 in self.closes and False in self.recovered
