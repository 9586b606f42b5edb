"""Every private surface of another library this package reads, one module per library.

A library's non-public attributes can move in any release. So each use of them lives in the
module of that library here, which names the attributes (``SURFACE``), the releases they were
tested on (``TESTED``) and a ``surface_problem`` check; ``tests/dispatch/private/`` fails when the
installed release no longer has them. Every caller degrades to the library's public API when
the check fails (and logs one line), never failing a connection.

* :mod:`~tbone.dispatch._private.starlette`: a ``WebSocket``'s ``send``, and Starlette's
  exception-handling wrapper around it.
* :mod:`~tbone.dispatch._private.uvicorn`: the protocol object behind ``send`` (its transport
  and config), and what ``tbone_asgi.uvicorn.WebSocketProtocol`` uses of its base class.
* :mod:`~tbone.dispatch._private.aiohttp`: a ``WebSocketResponse``'s writer and transport.
* :mod:`~tbone.dispatch._private.sanic`: Sanic's websocket object and its transport.

None imports its library: the functions look at objects the library made, and each module is
imported only by the code that serves that library.
"""
