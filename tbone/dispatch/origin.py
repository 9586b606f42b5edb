"""The Origin check that stops cross-site websocket hijacking.

Browsers send an ``Origin`` header with every websocket handshake and, unlike fetch, apply no
CORS rule to websockets: without this check any web page could open a socket to the endpoint
with the visitor's cookies. Rules:

* No ``allowed_origins`` (the default): the Origin must be the same site as the ``Host``
  header (host and port; the scheme is not compared, since a TLS-terminating proxy changes it).
* ``allowed_origins=[...]``: the Origin must be one of them, compared as ``scheme://host[:port]``
  in lower case (a default port may be left out); ``"*"`` allows every origin.
* A request without an Origin header is not from a browser page and is allowed: non-browser
  clients can send any header anyway, so the check would protect nothing there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["OriginPolicy", "header"]

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes) in an ASGI scope, or None."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _normalise(origin: str) -> str | None:
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme):
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


class OriginPolicy:
    """Decides whether a websocket handshake's Origin may connect (see the module rules)."""

    def __init__(self, allowed_origins: Iterable[str] | None = None) -> None:
        if isinstance(allowed_origins, str):
            raise TypeError(
                f"allowed_origins is a list of origins, not the str {allowed_origins!r}: "
                f"use allowed_origins=[{allowed_origins!r}]"
            )
        self.any = False
        self.allowed: set[str] | None = None
        if allowed_origins is not None:
            self.allowed = set()
            for origin in allowed_origins:
                if origin == "*":
                    self.any = True
                    continue
                normal = _normalise(origin)
                if normal is None:
                    raise ValueError(
                        f"allowed origin {origin!r} is not scheme://host[:port], "
                        "e.g. 'https://example.com'"
                    )
                self.allowed.add(normal)

    def allows(self, scope: Mapping[str, Any]) -> bool:
        """True when the handshake in ``scope`` may connect."""
        origin = header(scope, b"origin")
        if origin is None or self.any:
            return True
        normal = _normalise(origin)
        if normal is None:  # "null" (sandboxed frames, file://) or garbage
            return False
        if self.allowed is not None:
            return normal in self.allowed
        host = header(scope, b"host")
        if host is None:
            return False
        scheme = normal.partition("://")[0]
        return normal == _normalise(f"{scheme}://{host}")
