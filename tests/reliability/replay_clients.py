"""Clients that ask for long replays, in a process of their own (so the server's memory is
measured alone): ``python -m tests.reliability.replay_clients <ws-url> <clients> <resumes>
<since> [--stuck K]``.

Each client connects to ``<ws-url>`` (no subscription), sends ``resumes`` subscribe frames
with ``since`` (far back) for event ``e`` at once, and reads as fast as it can until it has
had an answer to each: a ``recovered`` frame or an error frame. The first ``K`` clients do not
read (``--stuck``) until a line arrives on stdin (the test sends it once the server closed
them); then they read until closed. Prints one JSON line for the readers, then one for the
stuck ones: per client, the events read, the ``complete`` flags of its ``recovered`` frames,
the error codes and messages, and the close code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

import websockets

__all__: list[str] = []


async def one(url: str, resumes: int, since: str, stuck: asyncio.Event | None) -> dict[str, Any]:
    frame = json.dumps({"type": "subscribe", "payload": {"events": ["e"], "since": since}})
    result: dict[str, Any] = {"events": 0, "recovered": [], "errors": [], "closed": None}
    async with websockets.connect(url, proxy=None, compression=None, max_size=None) as ws:
        for _ in range(resumes):
            await ws.send(frame)
        if stuck is not None:
            ws.transport.pause_reading()
            await stuck.wait()
            ws.transport.resume_reading()
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 15)
            result["closed"] = ws.close_code
            return result
        try:
            while len(result["recovered"]) + len(result["errors"]) < resumes:
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                kind = message["type"]
                if kind == "event":
                    result["events"] += 1
                elif kind == "recovered":
                    result["recovered"].append(message["payload"]["complete"])
                elif kind == "error":
                    result["errors"].append(message["payload"])
        except websockets.ConnectionClosed:
            pass
        result["closed"] = ws.close_code
    return result


async def main(url: str, clients: int, resumes: int, since: str, stuck: int) -> None:
    told = asyncio.Event()
    stuck_ones = [asyncio.ensure_future(one(url, resumes, since, told)) for _ in range(stuck)]
    readers = await asyncio.gather(
        *(one(url, resumes, since, None) for _ in range(clients - stuck))
    )
    print(json.dumps(readers), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    told.set()
    print(json.dumps(await asyncio.gather(*stuck_ones)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("clients", type=int)
    parser.add_argument("resumes", type=int)
    parser.add_argument("since")
    parser.add_argument("--stuck", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.clients, args.resumes, args.since, args.stuck))
