"""The custom backend of docs/channels.md, run as written, and the backend contract.

The example is taken from the docs by its marker and executed, so the docs cannot drift from
what works: it must pass the behaviour suite every backend passes. The consumer's side of
the contract (batches, readiness, ``last_id``, a new event loop) is checked on it too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tbone.dispatch import Channel, Event
from tbone.dispatch.testing import RecordingCarrier
from tests.dispatch.channels.behaviour import ChannelBehaviour, MakeChannel
from tests.support.asgi_server import wait_until

DOCS = Path(__file__).resolve().parents[3] / "docs" / "channels.md"
MARKER = "<!-- example: ListChannel"


def example_backend() -> type[Channel]:
    """Execute the code block that follows the marker in docs/channels.md; its ListChannel."""
    text = DOCS.read_text(encoding="utf-8")
    assert text.count(MARKER) == 1, f"one {MARKER!r} in {DOCS}"
    block = text[text.index(MARKER) :].split("\n", 1)[1]
    assert block.startswith("```python\n"), "the marker goes right above the code block"
    code = block[len("```python\n") : block.index("\n```\n")]
    namespace: dict[str, Any] = {"__name__": "docs_channels_example"}
    exec(compile(code, f"{DOCS} (ListChannel)", "exec"), namespace)
    backend: type[Channel] = namespace["ListChannel"]
    return backend


ListChannel: Any = example_backend()


class TestListChannelBehaviour(ChannelBehaviour):
    @pytest.fixture
    def make_channel(self) -> MakeChannel:
        async def make(name: str, **options: Any) -> Channel:
            channel: Channel = ListChannel(name=name, **options)
            return channel  # closed by the suite's conftest (close_all_channels)

        return make

    # ListChannel keeps every event: it never trims, so there is nothing to report.
    test_trimmed_history_is_reported_incomplete = None  # type: ignore[assignment]


class Watched(ListChannel):  # type: ignore[misc, valid-type]
    """The example, noting what the consumer tells deliver()."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        self.nows: list[bool] = []

    def deliver(self, event: Event, *, now: bool = True) -> None:
        self.nows.append(now)
        super().deliver(event, now=now)


class OneByOne(Watched):
    """Yields single events and never calls mark_ready()."""

    async def listen(self, after: str | None) -> Any:
        self.changed = asyncio.Condition()
        position = len(self.log) if after is None else int(after)
        while True:
            async with self.changed:
                while len(self.log) <= position:
                    await self.changed.wait()
            for event in self.log[position:]:
                position += 1
                yield event


async def test_the_events_of_a_batch_are_delivered_with_more_to_follow_but_the_last() -> None:
    channel = Watched(name="batches")
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    sent = [await channel.publish("e", n) for n in range(3)]  # no await yields: one batch
    await carrier.wait_for(3)
    assert channel.nows == [False, False, True]
    await channel.publish("e", 3)
    await carrier.wait_for(4)
    assert channel.nows[3:] == [True]  # alone: sent at once
    assert channel.last_id == "4"
    assert [e.id for e in sent] == ["1", "2", "3"]


async def test_single_events_are_delivered_at_once_and_make_the_channel_ready() -> None:
    channel = OneByOne(name="one-by-one")
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await wait_until(lambda: channel.changed is not None, what="listen waiting")
    assert channel.stats()["consumer"] == "starting"  # listen never said it was ready
    ready = asyncio.ensure_future(channel.ready())
    await channel.publish("e", 1)
    await channel.publish("e", 2)
    await asyncio.wait_for(ready, 5)  # its first event did
    await carrier.wait_for(2)
    assert channel.nows == [True, True]
    assert channel.stats()["consumer"] == "running"


async def test_last_id_is_the_last_event_delivered_and_read_only() -> None:
    channel = ListChannel(name="last-id")
    assert channel.last_id is None
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    event = await channel.publish("e", "x")
    await carrier.wait_for(1)
    assert channel.last_id == event.id == channel.stats()["last_id"]
    with pytest.raises(AttributeError):
        channel.last_id = "2"


async def test_after_a_fault_listen_reads_on_after_the_last_event_delivered() -> None:
    class Flaky(Watched):
        afters: list[str | None]

        async def listen(self, after: str | None) -> Any:
            self.afters = [*getattr(self, "afters", []), after]
            async for batch in super().listen(after):
                yield batch
                if len(self.afters) == 1:
                    raise ConnectionError("backend went away")

    channel = Flaky(name="flaky", backoff=(0.01, 0.02))
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    await channel.publish("e", 1)
    await carrier.wait_for(1)
    await wait_until(lambda: len(channel.afters) == 2, what="listen called again")
    await channel.publish("e", 2)
    frames = await carrier.wait_for(2)
    assert channel.afters == [None, "1"]
    assert [f["payload"]["data"] for f in frames] == [1, 2]
    assert (channel.stats()["errors"], channel.stats()["reconnects"]) == (1, 1)


async def test_a_new_event_loop_drops_what_was_bound_to_the_old_one() -> None:
    channel = ListChannel(name="loops")

    def other_loop() -> None:
        async def use() -> None:
            carrier = RecordingCarrier()
            channel.subscribe("e", carrier)
            await channel.ready()
            await channel.publish("e", "other loop")
            await carrier.wait_for(1)

        asyncio.run(use())  # ends with the consumer waiting on that loop's Condition

    await asyncio.get_running_loop().run_in_executor(None, other_loop)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)  # on_new_loop() dropped the old Condition
    await channel.ready()
    await channel.publish("e", "this loop")
    assert [f["payload"]["data"] for f in await carrier.wait_for(1)] == ["this loop"]
    assert channel.stats()["errors"] == 0
