"""What the package reads of Starlette that Starlette does not publish.

* ``WebSocket._send``: the ASGI ``send`` a Starlette ``WebSocket`` wraps, so frames skip
  ``WebSocket.send_text``'s state checks once the socket is accepted.
* ``starlette._exception_handler``: its ``wrap_app_handling_exceptions`` wraps ``send`` in a
  closure ``sender`` that watches ``http.response.start`` and passes every message on; for
  websocket frames it is one coroutine per frame and nothing else, so :func:`unwrap_send`
  takes the ``send`` out of its closure cell.

Tested on the Starlette releases in :data:`TESTED`;
``tests/dispatch/private/test_starlette.py`` fails when the installed one moves either.
Without them, frames go through the wrappers (slower, same result).
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["SURFACE", "TESTED", "surface_problem", "unwrap_send", "websocket_send"]

#: The Starlette releases this module was tested on.
TESTED = ("1.10.0",)
#: What it reads.
SURFACE = ("WebSocket._send", "starlette._exception_handler.<locals>.sender (closure: send)")

ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_WRAPPER_MODULE = "starlette._exception_handler"


def websocket_send(websocket: Any) -> ASGISend | None:
    """The ASGI ``send`` of a Starlette ``WebSocket``, or None for anything else."""
    send: ASGISend | None = getattr(websocket, "_send", None)
    if send is not None and hasattr(websocket, "application_state"):
        return send
    return None


def unwrap_send(send: ASGISend) -> ASGISend:
    """``send`` without the Starlette wrappers that only watch HTTP responses.

    Any other wrapper (an application's middleware) is kept.
    """
    while (
        getattr(send, "__module__", None) == _WRAPPER_MODULE
        and getattr(send, "__qualname__", "").endswith("<locals>.sender")
        and isinstance(send, types.FunctionType)
        and send.__closure__ is not None
        and "send" in send.__code__.co_freevars
    ):
        send = send.__closure__[send.__code__.co_freevars.index("send")].cell_contents
    return send


def surface_problem() -> str | None:
    """What this module needs of the installed Starlette and it lacks, or None."""
    import starlette._exception_handler as handler
    from starlette.websockets import WebSocket

    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "websocket.connect"}

    websocket = WebSocket({"type": "websocket", "path": "/", "headers": []}, receive, send)
    if websocket_send(websocket) is not send:
        return "a WebSocket no longer keeps its send as _send"
    wrap = getattr(handler, "wrap_app_handling_exceptions", None)
    if wrap is None:
        return f"{_WRAPPER_MODULE} has no wrap_app_handling_exceptions"
    codes = [c for c in _nested_codes(wrap.__code__) if c.co_name == "sender"]
    if not any("send" in code.co_freevars for code in codes):
        return f"{_WRAPPER_MODULE} no longer wraps send in a closure named sender"
    return None


def _nested_codes(code: types.CodeType) -> list[types.CodeType]:
    found = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found += [const, *_nested_codes(const)]
    return found
