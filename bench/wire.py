"""Bytes on the wire per event: uncompressed, deflated on its own, deflated with context.

Prepared frames compress each event on its own (``server_no_context_takeover``), so that the
same bytes serve every subscriber; a server that keeps a compressor per connection carries the
context of earlier messages into each new one, which compresses a stream of similar events
better but costs a compressor per connection and the compression of every event once per
subscriber. This measures the first half of that trade, in this process (no sockets): for a
stream of typical JSON events of about 200 B, 2 KB and 20 KB (records of ids, names, prices,
tags, timestamps and short text, different in every event), the average bytes per event of

* the plain frame (what ``--ws-per-message-deflate false`` sends);
* the frame deflated on its own (:func:`tbone.dispatch.wire.prepare`), with a 12-bit window
  (tbone_asgi.uvicorn's, uvicorn's own) and a 15-bit one (aiohttp's and browsers' default);
* the frame deflated by one compressor that keeps its context across the stream, with the
  same windows (what a per-connection compressor sends, after the first few events).
"""

from __future__ import annotations

import datetime
import random
import zlib
from typing import Any

from bench._report import Table
from tbone.dispatch import jsonenc
from tbone.dispatch.wire import prepare, text_frame

__all__ = ["SIZES", "events", "run"]

#: Target event sizes (bytes of the event's frame text).
SIZES = (200, 2_000, 20_000)
WINDOWS = (12, 15)

_WORDS = [
    "order",
    "shipped",
    "paid",
    "pending",
    "item",
    "cart",
    "user",
    "stock",
    "price",
    "update",
    "refund",
    "note",
    "warehouse",
    "express",
    "standard",
    "blue",
    "green",
    "large",
    "small",
    "returned",
    "gift",
]


def _record(rng: random.Random, n: int) -> dict[str, Any]:
    start = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    return {
        "id": 100_000 + n,
        "name": f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {rng.randint(1, 999)}",
        "price": round(rng.uniform(1, 500), 2),
        "qty": rng.randint(1, 20),
        "tags": rng.sample(_WORDS, 3),
        "updated": (start + datetime.timedelta(seconds=rng.randint(0, 86_400))).isoformat(),
        "note": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 8))),
    }


def events(size: int, count: int = 200, seed: int = 1) -> list[str]:
    """``count`` event frames (JSON text) of about ``size`` bytes each, all different."""
    rng = random.Random(seed)
    frames = []
    for seq in range(count):
        records: list[dict[str, Any]] = []
        data: dict[str, Any] = {"seq": seq, "items": records}
        while True:
            frame = jsonenc.dumps(
                {
                    "type": "event",
                    "payload": {
                        "name": "items_changed",
                        "data": data,
                        "id": f"17966{seq:08d}-0",
                        "channel": "shop",
                    },
                }
            )
            if len(frame) >= size or (records and len(frame) > size * 0.9):
                break
            records.append(_record(rng, seq * 1000 + len(records)))
        frames.append(frame)
    return frames


def _with_context(frames: list[str], bits: int) -> float:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -bits, 8)
    total = 0
    for frame in frames:
        data = compressor.compress(frame.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
        total += len(text_frame(data.removesuffix(b"\x00\x00\xff\xff"), compressed=True))
    return total / len(frames)


def run(*, count: int = 200) -> str:
    """Measure each size; return the table (Markdown)."""
    table = Table(
        f"Bytes on the wire per event ({count} different events of each size)",
        [
            "event",
            "plain B",
            *(f"on its own, {bits}-bit B" for bits in WINDOWS),
            *(f"with context, {bits}-bit B" for bits in WINDOWS),
            "on its own vs plain",
            "on its own vs with context",
        ],
        note=(
            "Frame bytes (header included), averaged over the stream. 'on its own': each event "
            "deflated alone, as prepared frames are (tbone_asgi.uvicorn uses a 12-bit window, "
            "aiohttp the client's, 15 by default); 'with context': one compressor for the whole "
            "stream, as a per-connection compressor with context takeover. The two ratios are "
            "for the 12-bit window."
        ),
    )
    for size in SIZES:
        frames = events(size, count)
        plain = sum(len(prepare(f, None)) for f in frames) / count
        alone = [sum(len(prepare(f, bits)) for f in frames) / count for bits in WINDOWS]
        context = [_with_context(frames, bits) for bits in WINDOWS]
        average = sum(len(f.encode()) for f in frames) / count
        table.add(
            f"{average:,.0f} B",
            plain,
            *alone,
            *context,
            f"{alone[0] / plain:.2f}x",
            f"{alone[0] / context[0]:.2f}x",
        )
    return table.render()
