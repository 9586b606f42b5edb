"""The registry of channels: one channel per name in the process.

``SomeChannel(name="pubsub")`` goes through :class:`ChannelMeta`: the first call makes the
channel and registers it; later calls return that channel (their options are ignored), and a
call with another class raises :class:`~tbone.dispatch.errors.ChannelNameConflict`.
"""

from __future__ import annotations

import abc
from typing import Any

from tbone.dispatch.errors import ChannelNameConflict

__all__ = ["ChannelMeta", "clear", "every", "forget", "lookup"]

_registry: dict[str, Any] = {}


class ChannelMeta(abc.ABCMeta):
    """Makes ``SomeChannel(name=...)`` return the process's one channel of that name."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        name = kwargs.get("name", args[0] if args else None)
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"{cls.__name__} needs a name: {cls.__name__}(name='pubsub'). Channels are "
                "per-process singletons looked up by name."
            )
        existing = _registry.get(name)
        if existing is not None:
            if type(existing) is not cls:
                raise ChannelNameConflict(name, type(existing), cls)
            return existing
        channel = super().__call__(*args, **kwargs)
        _registry[name] = channel
        return channel


def forget(channel: Any) -> None:
    """Remove ``channel`` from the registry (if it is the one registered under its name)."""
    name: str = channel.name
    if _registry.get(name) is channel:
        del _registry[name]


def lookup(name: str) -> Any:
    """The channel registered under ``name``, or None."""
    return _registry.get(name)


def every() -> list[Any]:
    """The registered channels, in creation order."""
    return list(_registry.values())


def clear() -> None:
    """Forget every channel."""
    _registry.clear()
