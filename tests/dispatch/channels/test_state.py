"""A channel's consumer state: an enum whose transitions are checked."""

from __future__ import annotations

import pytest

from tbone.dispatch import MemoryChannel
from tbone.dispatch.channels import ChannelState
from tbone.dispatch.channels.state import Lifecycle
from tbone.dispatch.testing import RecordingCarrier


def test_only_the_transitions_of_the_diagram_are_allowed() -> None:
    life = Lifecycle()
    assert life.state is ChannelState.IDLE
    with pytest.raises(RuntimeError, match="cannot go from idle to running"):
        life.to(ChannelState.RUNNING)
    for state in (ChannelState.STARTING, ChannelState.RECONNECTING, ChannelState.RUNNING):
        life.to(state)
    life.to(ChannelState.CLOSED)
    with pytest.raises(RuntimeError, match="cannot go from closed to reconnecting"):
        life.to(ChannelState.RECONNECTING)
    life.to(ChannelState.STARTING)  # started again


def state(channel: MemoryChannel) -> ChannelState:
    return channel.consumer_state  # read afresh each time (no narrowing across awaits)


async def test_a_channel_goes_from_idle_to_running_to_closed_and_back() -> None:
    channel = MemoryChannel(name="states")
    assert state(channel) is ChannelState.IDLE
    assert channel.stats()["consumer"] == "idle"
    channel.subscribe("e", RecordingCarrier())
    await channel.ready()
    assert state(channel) is ChannelState.RUNNING
    assert str(state(channel)) == channel.stats()["consumer"] == "running"
    await channel.close()
    assert state(channel) is ChannelState.CLOSED
    await channel.ready()  # starts again
    assert state(channel) is ChannelState.RUNNING
    await channel.close(forget=True)


def test_a_listen_driven_by_hand_changes_no_state() -> None:
    channel = MemoryChannel(name="by-hand")
    channel.mark_ready()  # as a backend's listen() does, with no consumer started
    assert channel.consumer_state is ChannelState.IDLE
