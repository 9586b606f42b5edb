"""``Channel.ready(timeout)``: a bounded wait for the consumer, and errors retrying cannot fix.

The backend here (:class:`tests.support.faulty.Faulty`) fails with the errors a test gives it,
then reads; its ``fatal_error`` calls ``PermissionError`` unfixable. The real backends'
classifications run against real servers in their own tests (``test_redis_startup.py``,
``test_mongo_ready.py``).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from tbone.dispatch import ChannelUnavailable, TBoneError
from tests.support.faulty import Faulty


async def test_ready_returns_once_the_consumer_reads_after_faults() -> None:
    channel = Faulty("after-faults", [ConnectionError("down"), TimeoutError("slow")])
    await channel.ready(timeout=5)
    assert channel.attempts == 3
    assert channel.stats()["consumer"] == "running"
    await channel.ready(timeout=0)  # ready: no wait at all


async def test_a_backend_that_never_answers_fails_after_the_timeout() -> None:
    channel = Faulty("down", [ConnectionError(f"refused {n}") for n in range(10_000)])
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ChannelUnavailable) as info:
        await channel.ready(timeout=0.3)
    assert 0.3 <= loop.time() - started < 2
    error = info.value
    assert isinstance(error, TBoneError)
    assert isinstance(error, ConnectionError)  # what a caller of a network wait expects
    assert (error.channel, error.backend, error.reason) == ("down", "faulty", "timeout")
    assert error.last_error is not None
    assert error.last_error.startswith("ConnectionError: refused")
    assert error.waited == 0.3
    message = str(error)
    assert "\n" not in message
    assert message.startswith("channel 'down' (faulty) is not ready: its backend did not answer")
    assert "within 0.3s (last error: ConnectionError: refused" in message
    assert "check that the backend runs" in message
    # The consumer goes on retrying: the timeout bounds the wait, not the channel.
    attempts = channel.attempts
    while channel.tries.get_nowait() < attempts:
        pass
    assert await asyncio.wait_for(channel.tries.get(), 5) == attempts + 1
    assert channel.stats()["consumer"] == "reconnecting"


async def test_an_error_retrying_cannot_fix_fails_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = Faulty("refused", [PermissionError("bad password")] * 10_000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with (
        caplog.at_level(logging.ERROR, "tbone.dispatch.channels"),
        pytest.raises(ChannelUnavailable) as info,
    ):
        await channel.ready(timeout=30)  # also with no timeout at all (below)
    assert loop.time() - started < 3  # at once, not after the 30 s
    error = info.value
    assert error.reason == "refused"
    assert error.fix == "give it the right to"
    assert str(error) == (
        "channel 'refused' (faulty) is not ready: its backend refused it (PermissionError: "
        "bad password), and retrying cannot fix that; give it the right to"
    )
    assert "retrying cannot fix this: give it the right to" in caplog.text
    with pytest.raises(ChannelUnavailable, match="refused it"):
        await channel.ready()


async def test_a_passing_fault_after_an_unfixable_one_is_waited_for_again() -> None:
    # The server's settings may change: the consumer retries, and the last error decides.
    channel = Faulty("changes", [PermissionError("no"), ConnectionError("restarting")])
    with pytest.raises(ChannelUnavailable, match="refused it"):
        await channel.ready(timeout=5)
    assert await asyncio.wait_for(channel.tries.get(), 5) == 1
    # The second attempt fails with a fault that may pass: ready() waits for the third.
    assert await asyncio.wait_for(channel.tries.get(), 5) == 2
    await channel.ready(timeout=5)
    assert channel.attempts == 3
    assert channel.stats()["consumer"] == "running"


async def test_a_channel_closed_during_the_wait_ends_it() -> None:
    channel = Faulty("closing", [ConnectionError("down")] * 10_000)
    waiting = asyncio.ensure_future(channel.ready(timeout=30))
    await asyncio.sleep(0)  # it waits now
    await channel.close()
    with pytest.raises(ChannelUnavailable, match="it was closed before its backend answered"):
        await asyncio.wait_for(waiting, 5)


async def test_cancelling_the_wait_leaves_nothing_behind() -> None:
    channel = Faulty("cancelled", [ConnectionError("down")] * 10_000)
    tasks = asyncio.all_tasks()
    waiting = asyncio.ensure_future(channel.ready(timeout=30))
    await asyncio.sleep(0)  # it waits now
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    left = asyncio.all_tasks() - tasks - {channel._consumer}
    assert not left


async def test_a_faulty_classification_hook_is_a_passing_fault(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Faulty):
        def fatal_error(self, exc: Exception) -> str | None:
            raise RuntimeError("bug in the hook")

    channel = Broken("broken-hook", [PermissionError("no")])
    with caplog.at_level(logging.ERROR, "tbone.dispatch.channels"):
        await channel.ready(timeout=5)
    assert "fatal_error() failed" in caplog.text


async def test_a_negative_timeout_is_refused() -> None:
    channel = Faulty("negative", [])
    with pytest.raises(ValueError, match="timeout must be seconds >= 0 or None"):
        await channel.ready(timeout=-1)
