"""A frame over ``--ws-max-size`` on tbone_asgi.uvicorn's protocol: 1009, then a clean close.

uvicorn's own protocol closes the socket right after its close frame with the rest of the
refused frame unread, so the kernel sends a reset; behind a proxy that reset can overtake the
close frame and the client sees 1006 (seen through nginx, tests/deploy/test_nginx.py). With
the package's protocol the client reads the 1009 close frame and then a plain end of stream,
and the server closes once the client has, or after its close timeout when the client never
does. A raw socket plays the client, so that nothing hides a reset.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any

import pytest
from starlette.applications import Starlette

from tbone_asgi import channel_route
from tbone_asgi.uvicorn import WebSocketProtocol
from tests.support.asgi_server import run_uvicorn, wait_until

LIMIT = 65536
SIZE = 70_000  # the refused frame: more than LIMIT, and more than one read of the server


class QuickClose(WebSocketProtocol):
    """The package's protocol with a short close timeout (uvicorn's is 10 s)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_timeout = 0.5


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    header = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", len(payload)) + mask
    return header + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /ws?events=e HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def read_to_end(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything until the server's end of stream; a reset raises ConnectionResetError."""
    data = b""
    while chunk := await asyncio.wait_for(reader.read(65536), timeout):
        data += chunk
    return data


def close_code(data: bytes) -> int:
    # The server's close frame: 0x88, a 7-bit length, then the code (unmasked).
    at = data.index(b"\x88")
    code: int = struct.unpack("!H", data[at + 2 : at + 4])[0]
    return code


@pytest.mark.parametrize("client", ["closes", "stays"])
async def test_the_client_reads_1009_then_an_end_of_stream_not_a_reset(client: str) -> None:
    app = Starlette(routes=[channel_route("/ws", "linger")])
    async with run_uvicorn(app, ws=QuickClose, ws_max_size=LIMIT) as server:
        # uvicorn's own table of open connections (test introspection).
        connections = server.server.server_state.connections
        reader, writer = await open_raw(server.port)
        writer.write(masked_text_frame(b"x" * SIZE))
        await writer.drain()
        # The close frame, then the end of the server's stream: no reset.
        data = await read_to_end(reader, 5)
        assert close_code(data) == 1009
        loop = asyncio.get_running_loop()
        started = loop.time()
        if client == "closes":
            writer.write_eof()  # a client that answers: the server closes at once
            await wait_until(lambda: not connections, timeout=0.4)
        else:  # a client that never closes: the server ends it after its close timeout
            await wait_until(lambda: not connections, timeout=3)
            assert loop.time() - started >= 0.3
        writer.close()


async def test_stock_uvicorn_resets_instead() -> None:
    # Why the package's protocol lingers: uvicorn's own closes with the refused frame unread,
    # and the kernel resets the connection (the close frame may or may not be read first).
    # When this fails, uvicorn lingers itself and the override can go.
    app = Starlette(routes=[channel_route("/ws", "linger")])
    async with run_uvicorn(app, ws="websockets-sansio", ws_max_size=LIMIT) as server:
        reader, writer = await open_raw(server.port)
        writer.write(masked_text_frame(b"x" * SIZE))
        await writer.drain()
        with pytest.raises(ConnectionResetError):
            await read_to_end(reader, 5)
        writer.close()
