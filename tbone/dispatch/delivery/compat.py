"""What lets a carrier written for TBone work unchanged (``docs/carriers.md``).

TBone's carriers implemented one coroutine, ``deliver(data)``, and some did not call
``super().__init__()``. :func:`wrap_init` gives such a subclass the base state after its own
``__init__``; :func:`check_sends` refuses, when one is made, a subclass that sends nothing;
:func:`send_decoded` hands a frame to ``deliver`` decoded, as TBone did.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from tbone.dispatch import jsonenc

__all__ = ["check_sends", "send_decoded", "wrap_init"]


def wrap_init(cls: type, base_init: Callable[..., None]) -> None:
    """Make ``cls.__init__`` run ``base_init(self, connection)`` when it did not itself.

    Done once per subclass, at its creation, so attribute access stays as fast as on any class.
    """
    init = cls.__dict__.get("__init__")
    if init is None:
        return

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        # Not `self.__dict__`: reading it makes CPython keep the instance's attributes in a
        # real dict, and every attribute access on the carrier gets slower.
        try:
            self.outbox  # noqa: B018 - set by the base __init__
        except AttributeError:
            base_init(self, getattr(self, "connection", None))

    cls.__init__ = __init__  # type: ignore[misc]


def check_sends(cls: type, base: type) -> None:
    """Raise TypeError when ``cls`` overrides neither ``send_text`` nor ``deliver`` of ``base``."""
    inherited = [vars(c) for c in cls.__mro__]
    if all(_owner(inherited, name) is _owner([vars(base)], name) for name in _SENDS):
        raise TypeError(
            f"{cls.__name__} sends nothing: implement async send_text(self, text) (and "
            "close_connection), or, as TBone carriers did, async deliver(self, data)"
        )


_SENDS = ("send_text", "deliver")


def _owner(namespaces: Sequence[Mapping[str, Any]], name: str) -> object:
    # The first definition of `name` along the MRO (its namespaces, in order).
    return next((ns[name] for ns in namespaces if name in ns), None)


async def send_decoded(deliver: Callable[[Any], Awaitable[Any]], text: str, who: object) -> None:
    """Pass the frame ``text`` to a TBone-style ``deliver``, decoded; False means it left."""
    if await deliver(jsonenc.loads(text)) is False:
        raise ConnectionResetError(f"{who!r}: deliver() returned False")
