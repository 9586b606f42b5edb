"""Signals, channels and carriers: events inside an asyncio app and out to its clients."""

from __future__ import annotations

from tbone.dispatch.carriers import Carrier
from tbone.dispatch.channels import (
    Channel,
    ChannelNameConflict,
    clear_registry,
    close_all_channels,
    get_channel,
)
from tbone.dispatch.channels.mem import MemoryChannel
from tbone.dispatch.channels.stream import EventStream, SubscriptionClosed
from tbone.dispatch.errors import ChannelUnavailable, StartupStopped, TBoneError
from tbone.dispatch.events import Event, History, MessageTooLarge
from tbone.dispatch.signals import Signal, receiver

__all__ = [
    "Carrier",
    "Channel",
    "ChannelNameConflict",
    "ChannelUnavailable",
    "Event",
    "EventStream",
    "History",
    "MemoryChannel",
    "MessageTooLarge",
    "Signal",
    "StartupStopped",
    "SubscriptionClosed",
    "TBoneError",
    "clear_registry",
    "close_all_channels",
    "get_channel",
    "receiver",
]
