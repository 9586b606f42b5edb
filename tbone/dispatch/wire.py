"""Websocket wire bytes of one text message, built once and written to every connection.

A server frames and compresses each message per connection: N subscribers, N framings and N
deflate runs of the same text. :func:`prepare` does that work once per message and variant
(``Event.wire`` keeps each variant with the event), as gorilla/websocket's ``PreparedMessage``
and uWebSockets' publish do, and every connection that negotiated the same variant is written
the same bytes:

* **plain**: one unmasked text frame with FIN set (RFC 6455 5.2), for a connection without
  permessage-deflate;
* **deflated**, per window size: the message compressed on its own (no context carried from
  one message to the next) with a ``window_bits`` LZ77 window, the trailing ``00 00 ff ff``
  removed and RSV1 set (RFC 7692 7.2.1). Those bytes are valid on every connection that
  negotiated permessage-deflate with ``server_no_context_takeover`` and a
  ``server_max_window_bits`` of at least ``window_bits``.
"""

from __future__ import annotations

import zlib

__all__ = ["DEFLATE_LEVEL", "DEFLATE_MEM_LEVEL", "deflate", "prepare", "text_frame"]

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


def prepare(text: str, window_bits: int | None) -> bytes:
    """The frame of the text message ``text``: plain (None) or deflated with a window."""
    if window_bits is None:
        return text_frame(text.encode())
    return text_frame(deflate(text.encode(), window_bits), compressed=True)
