"""Websocket wire bytes of one text message, built once and written to every connection.

A server frames and compresses each message per connection: N subscribers, N framings and N
deflate runs of the same text. A :class:`PreparedMessage` does that work once per message and
variant, as gorilla/websocket's ``PreparedMessage`` and uWebSockets' publish do, and every
connection that negotiated the same variant is written the same bytes:

* **plain**: one unmasked text frame with FIN set (RFC 6455 5.2), for a connection without
  permessage-deflate;
* **deflated**, per window size: the message compressed on its own (no context carried from
  one message to the next) with a ``window_bits`` LZ77 window, the trailing ``00 00 ff ff``
  removed and RSV1 set (RFC 7692 7.2.1). Those bytes are valid on every connection that
  negotiated permessage-deflate with ``server_no_context_takeover`` and a
  ``server_max_window_bits`` of at least ``window_bits``.

Each variant is built on first use and kept with the message.
"""

from __future__ import annotations

import zlib

__all__ = ["DEFLATE_LEVEL", "DEFLATE_MEM_LEVEL", "PreparedMessage", "deflate", "text_frame"]

#: zlib settings of the deflated variant: zlib's default level, and its default memory level
#: (the compressor lives for one message, so its memory is not kept per connection).
DEFLATE_LEVEL = 6
DEFLATE_MEM_LEVEL = 8

_FIN_TEXT = 0x81  # FIN, opcode 1 (text)
_RSV1 = 0x40  # "this message is compressed" under permessage-deflate
_EMPTY_BLOCK = b"\x00\x00\xff\xff"


def text_frame(payload: bytes, *, compressed: bool = False) -> bytes:
    """One unmasked, final text frame carrying ``payload`` (RSV1 set when ``compressed``)."""
    first = _FIN_TEXT | _RSV1 if compressed else _FIN_TEXT
    size = len(payload)
    if size < 126:
        header = bytes((first, size))
    elif size < 1 << 16:
        header = bytes((first, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, 127)) + size.to_bytes(8, "big")
    return header + payload


def deflate(payload: bytes, window_bits: int) -> bytes:
    """``payload`` compressed on its own for permessage-deflate (RFC 7692 7.2.1).

    ``window_bits`` is 9 to 15: zlib cannot make raw deflate streams with an 8-bit window.
    """
    if not 9 <= window_bits <= 15:
        raise ValueError(f"window_bits must be 9 to 15, got {window_bits}")
    compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -window_bits, DEFLATE_MEM_LEVEL)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_EMPTY_BLOCK) else data


class PreparedMessage:
    """The wire bytes of the text message ``text`` (see the module docstring).

    ``frame(None)`` is the plain frame, ``frame(bits)`` the deflated one for a ``bits``
    window; each is built on first use and kept.
    """

    __slots__ = ("_deflated", "_plain", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._plain: bytes | None = None
        # Per window size; nearly always one entry (the server's setting), a few at most.
        self._deflated: dict[int, bytes] | None = None

    def frame(self, window_bits: int | None) -> bytes:
        """The frame for a connection with no compression (None) or a ``window_bits`` window."""
        if window_bits is None:
            plain = self._plain
            if plain is None:
                plain = self._plain = text_frame(self.text.encode())
            return plain
        deflated = self._deflated
        if deflated is None:
            deflated = self._deflated = {}
        data = deflated.get(window_bits)
        if data is None:
            data = deflated[window_bits] = text_frame(
                deflate(self.text.encode(), window_bits), compressed=True
            )
        return data

    def __repr__(self) -> str:
        built = ["plain"] if self._plain is not None else []
        built += [f"deflate-{bits}" for bits in self._deflated or ()]
        return f"<PreparedMessage {len(self.text)} chars, built: {', '.join(built) or 'none'}>"
