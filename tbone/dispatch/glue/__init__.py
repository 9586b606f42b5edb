"""Framework glue: each framework's ``add_route`` and ``serve``, above channels and serving.

* :mod:`tbone.dispatch.glue.sanic`: a Sanic app (the carrier:
  :mod:`tbone.dispatch.carriers.sanic_carrier`);
* :mod:`tbone.dispatch.glue.aiohttp`: an aiohttp app (the carrier:
  :mod:`tbone.dispatch.carriers.aiohttp_carrier`).

Users import them from the carrier's module, TBone's import path
(``tbone.dispatch.carriers.sanic_websocket``), or from the older
``tbone.dispatch.carriers.{sanic,aiohttp}_routes``; both re-export these. The glue sits above
channels and serving (``docs/architecture.md``), which the carriers beside it must not import.
"""
