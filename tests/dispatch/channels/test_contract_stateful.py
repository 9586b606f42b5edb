"""The contract between channels and carriers: a state machine, two channels, four connections.

Random interleavings of subscribe, unsubscribe (with the carrier that subscribed, or with a new
carrier object for the same connection), unsubscribe_all, publish, a deliberate close and a
close for being too slow. The model says, at every step, which connections each channel must
list for each event name, how many connections each channel and the process hold, what each
close counts, and which events each connection has received: exactly those published on a
name while it was subscribed to it, in order, on each channel.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tbone.dispatch import MemoryChannel
from tbone.dispatch.carriers import live_connections
from tbone.dispatch.testing import RecordingCarrier
from tests.support.asgi_server import wait_until

NAMES = ("a", "b")
CHANNELS = 2
CONNECTIONS = 4
_numbers = itertools.count()

channels = st.integers(0, CHANNELS - 1)
connections = st.integers(0, CONNECTIONS - 1)
names = st.sampled_from(NAMES)


class ContractModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.baseline = live_connections()
        run = next(_numbers)
        self.channels = [MemoryChannel(name=f"contract{run}-{i}") for i in range(CHANNELS)]
        self.carriers = [RecordingCarrier() for _ in range(CONNECTIONS)]
        # subscribed[channel][connection]: the names it is subscribed to there
        self.subscribed: list[list[set[str]]] = [
            [set() for _ in range(CONNECTIONS)] for _ in range(CHANNELS)
        ]
        self.closed = [False] * CONNECTIONS
        self.close_codes: list[int | None] = [None] * CONNECTIONS  # the first close counts
        self.expected: dict[tuple[int, int, str], list[int]] = {}
        self.closed_slow = [0] * CHANNELS
        self.published = 0
        for channel in self.channels:  # consumers run even before the first subscriber
            self.run(channel.ready())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 20))

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        async def inside() -> Any:
            return function(*args, **kwargs)

        return self.run(inside())

    @rule(channel=channels, connection=connections, name=names)
    def subscribe(self, channel: int, connection: int, name: str) -> None:
        carrier = self.carriers[connection]
        if self.closed[connection]:
            with pytest.raises(ValueError, match="is closed"):
                self.call(self.channels[channel].subscribe, name, carrier)
            return
        self.call(self.channels[channel].subscribe, name, carrier)
        self.subscribed[channel][connection].add(name)

    @rule(channel=channels, connection=connections, name=names, same_object=st.booleans())
    def unsubscribe(self, channel: int, connection: int, name: str, same_object: bool) -> None:
        carrier = self.carriers[connection]
        if not same_object:  # what the seed does: a new carrier for the same websocket
            carrier = RecordingCarrier(carrier.connection)
        was_on = name in self.subscribed[channel][connection]
        assert self.channels[channel].unsubscribe(name, carrier) is was_on
        self.subscribed[channel][connection].discard(name)

    @rule(channel=channels, connection=connections)
    def unsubscribe_all(self, channel: int, connection: int) -> None:
        self.channels[channel].unsubscribe_all(
            RecordingCarrier(self.carriers[connection].connection)
        )
        self.subscribed[channel][connection].clear()

    @rule(channel=channels, name=names)
    def publish(self, channel: int, name: str) -> None:
        number = self.published
        self.published += 1
        target = self.channels[channel]

        async def publish_and_deliver() -> None:
            event = await target.publish(name, number)
            await wait_until(lambda: target.last_id == event.id, what="the event delivered")

        self.run(publish_and_deliver())
        for connection in range(CONNECTIONS):
            if name in self.subscribed[channel][connection]:
                self.expected.setdefault((channel, connection, name), []).append(number)

    @precondition(lambda self: not all(self.closed))
    @rule(connection=connections, slow=st.booleans())
    def close(self, connection: int, slow: bool) -> None:
        carrier = self.carriers[connection]
        if slow:
            self.call(carrier.close_soon, "subscriber too slow")
            self.run(wait_until(lambda: carrier.closed_with is not None, what="1013 sent"))
        else:
            self.run(carrier.close(1000))
        if not self.closed[connection]:
            self.close_codes[connection] = 1013 if slow else 1000
            for channel in range(CHANNELS):
                if slow and self.subscribed[channel][connection]:
                    self.closed_slow[channel] += 1
                self.subscribed[channel][connection].clear()
        self.closed[connection] = True

    @invariant()
    def channels_list_exactly_the_models_subscribers(self) -> None:
        for index, channel in enumerate(self.channels):
            for name in NAMES:
                listed = [self.carriers.index(c) for c in channel.subscribers(name)]
                wanted = [i for i in range(CONNECTIONS) if name in self.subscribed[index][i]]
                assert sorted(listed) == wanted, (index, name)
            stats = channel.stats()
            assert stats["subscribers"] == sum(1 for s in self.subscribed[index] if s)
            assert stats["subscriptions"] == sum(len(s) for s in self.subscribed[index])
            assert stats["closed_slow"] == self.closed_slow[index]
        anywhere = sum(
            1 for i in range(CONNECTIONS) if any(self.subscribed[c][i] for c in range(CHANNELS))
        )
        assert live_connections() - self.baseline == anywhere

    @invariant()
    def a_connection_is_closed_once_with_its_first_code(self) -> None:
        assert [c.close_code if c.closed else None for c in self.carriers] == self.close_codes

    @invariant()
    def each_connection_received_what_it_was_subscribed_to(self) -> None:
        for connection, carrier in enumerate(self.carriers):
            for channel in range(CHANNELS):
                for name in NAMES:
                    got = [
                        f["payload"]["data"]
                        for f in carrier.frames
                        if f["type"] == "event"
                        and f["payload"]["channel"] == self.channels[channel].name
                        and f["payload"]["name"] == name
                    ]
                    assert got == self.expected.get((channel, connection, name), [])

    def teardown(self) -> None:
        async def close() -> None:
            for channel in self.channels:
                await channel.close(forget=True)

        self.run(close())
        self.loop.close()


ContractModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestContract = ContractModel.TestCase
