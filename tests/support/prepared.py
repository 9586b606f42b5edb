"""Clients of every kind and events of every shape, for the prepared-frame tests.

``KINDS``: the extensions each kind of client offers (None: no compression): permessage-deflate
as websockets (and browsers) offer it, with ``server_max_window_bits`` 9 to 15, and with
``client_no_context_takeover``. ``SHAPES``: event data that must arrive exactly: empty, ASCII,
non-ASCII, 64 KiB and at the channel's size limit.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)

from tbone.dispatch.channels import MAX_MESSAGE_BYTES

__all__ = ["AT_LIMIT", "KINDS", "NAME", "SHAPES", "frames", "negotiated", "open_clients"]

KINDS: dict[str, list[Any] | None] = {
    "plain": None,
    "deflate": [ClientPerMessageDeflateFactory(client_max_window_bits=True)],
    **{
        f"server-window-{bits}": [ClientPerMessageDeflateFactory(server_max_window_bits=bits)]
        for bits in range(9, 16)
    },
    "client-no-context-takeover": [ClientPerMessageDeflateFactory(client_no_context_takeover=True)],
}

NAME = "e"
#: The largest data the channel takes: its name plus the data's JSON at max_message_bytes.
AT_LIMIT = "x" * (MAX_MESSAGE_BYTES - len(NAME) - 2)
SHAPES: list[Any] = ["", "plain ASCII text", "non-ASCII: é ß 漢字 🙂", "y" * 65536, AT_LIMIT]


async def open_clients(
    url: str, kinds: dict[str, list[Any] | None] = KINDS
) -> dict[str, ClientConnection]:
    """One client of each kind on ``url`` (subscribed to ``NAME`` by its query)."""
    clients = {}
    for kind, extensions in kinds.items():
        clients[kind] = await connect(
            url, extensions=extensions, compression=None, max_size=2 * MAX_MESSAGE_BYTES, proxy=None
        )
    return clients


async def frames(client: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next ``count`` frames of ``client``, decoded; each wait bounded."""
    return [json.loads(await asyncio.wait_for(client.recv(), 10)) for _ in range(count)]


def negotiated(client: ClientConnection) -> int | None:
    """The server's deflate window on ``client``'s connection, None without deflate."""
    deflate = [e for e in client.protocol.extensions if isinstance(e, PerMessageDeflate)]
    return deflate[0].remote_max_window_bits if deflate else None
