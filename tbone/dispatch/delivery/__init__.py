"""The parts a :class:`~tbone.dispatch.carriers.Carrier` is made of, one job each.

* :mod:`~tbone.dispatch.delivery.life`: the carrier's life as an enum with checked
  transitions (:class:`Life`), and the close handshakes still running.
* :mod:`~tbone.dispatch.delivery.outbox`: the bounded outbox, its writer task and the flow
  control thresholds (:class:`Outbox`, the base class of every carrier).
* :mod:`~tbone.dispatch.delivery.watch`: the slow rule's check of a connection that is behind
  (:class:`SlowWatch`).
* :mod:`~tbone.dispatch.delivery.links`: the channels a connection is subscribed on
  (:class:`Links`, the :class:`Link` protocol) and the one live carrier per connection.
* :mod:`~tbone.dispatch.delivery.compat`: what lets a carrier written for TBone work unchanged.

This package imports no carrier, channel or framework: ``tbone.dispatch.carriers`` builds the
``Carrier`` facade on top of it. The rules are stated once, in ``docs/channels.md#flow-control``
and ``docs/carriers.md#the-contract``.
"""

from __future__ import annotations

from tbone.dispatch.delivery.life import Closed, InvalidTransition, Life
from tbone.dispatch.delivery.links import Link, Links
from tbone.dispatch.delivery.outbox import Outbox
from tbone.dispatch.delivery.watch import SlowWatch

__all__ = ["Closed", "InvalidTransition", "Life", "Link", "Links", "Outbox", "SlowWatch"]
