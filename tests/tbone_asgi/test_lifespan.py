"""channels_lifespan(ready_timeout=...): a startup that waits for its channels, within a bound,
and that SIGINT or SIGTERM ends at once.

In process: the lifespan entered directly, on the backend of ``tests/support/faulty.py``, with
real signals sent to this process (pytest runs tests in the main thread) and a recording
handler in place of the server's. Then ``uvicorn`` in a child process with a Redis that is not
there: what a user sees without the demo's one-line report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from tbone.dispatch import ChannelUnavailable, MemoryChannel, StartupStopped
from tbone_asgi import channels_lifespan
from tbone_asgi.stopping import STOP_SIGNALS, StopSignals
from tests.support.child import Child
from tests.support.faulty import Faulty
from tests.support.redis_server import free_port


@pytest.fixture
def server_handler() -> Iterator[list[int]]:
    """A handler for SIGINT and SIGTERM that records the signals, as uvicorn's does."""
    received: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {signum: signal.signal(signum, record) for signum in STOP_SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def handlers() -> dict[int, Any]:
    return {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}


async def test_without_ready_timeout_the_startup_does_not_wait() -> None:
    channel = Faulty("down-no-wait", [ConnectionError("down")] * 10_000)
    async with channels_lifespan(channel)(None) as state:
        assert state is None
        assert channel.stats()["consumer"] in ("starting", "reconnecting")


async def test_the_startup_waits_until_every_channel_is_ready() -> None:
    late = Faulty("late", [ConnectionError("down"), ConnectionError("still down")])

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        assert late.stats()["consumer"] == "running"  # the channels first
        yield {"started": True}

    lifespan = channels_lifespan(late, "memory-ready", lifespan=app_lifespan, ready_timeout=5)
    async with lifespan(None) as state:
        assert state == {"started": True}
    assert late.stats()["consumer"] == "closed"


async def test_a_channel_that_is_not_ready_in_time_fails_the_startup_and_is_closed() -> None:
    down = Faulty("down", [ConnectionError("refused")] * 10_000)
    entered = []

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[None]:
        entered.append(app)
        yield

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ChannelUnavailable, match=r"did not answer within 0\.3s") as info:
        async with channels_lifespan(down, lifespan=app_lifespan, ready_timeout=0.3)(None):
            pass  # pragma: no cover - the startup fails
    assert 0.3 <= loop.time() - started < 3
    assert info.value.last_error == "ConnectionError: refused"
    assert entered == []
    assert down.stats()["consumer"] == "closed"  # no consumer left retrying


async def test_the_channels_are_waited_for_at_the_same_time() -> None:
    fine = MemoryChannel(name="fine")
    down = [Faulty(f"down-{n}", [ConnectionError("down")] * 10_000) for n in range(3)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ChannelUnavailable, match=r"'down-0' .* within 1s"):
        async with channels_lifespan(fine, *down, ready_timeout=1)(None):
            pass  # pragma: no cover - the startup fails
    assert loop.time() - started < 2.5  # not 1 s for each channel in turn
    assert all(channel.stats()["consumer"] == "closed" for channel in down)


async def test_a_refusal_fails_the_startup_at_once() -> None:
    refused = Faulty("refused", [PermissionError("wrong password")] * 10_000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ChannelUnavailable, match="retrying cannot fix that; give it the right"):
        async with channels_lifespan(refused, ready_timeout=30)(None):
            pass  # pragma: no cover - the startup fails
    assert loop.time() - started < 3


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
async def test_a_stop_signal_ends_the_wait_and_still_reaches_the_server(
    server_handler: list[int], signum: int
) -> None:
    down = Faulty("stopped", [ConnectionError("down")] * 10_000)
    before = handlers()
    starting = asyncio.ensure_future(channels_lifespan(down, ready_timeout=30)(None).__aenter__())
    await asyncio.wait_for(down.tries.get(), 5)  # the startup waits, its handler in place
    assert handlers() != before
    loop = asyncio.get_running_loop()
    signalled = loop.time()
    os.kill(os.getpid(), signum)
    with pytest.raises(StartupStopped) as info:
        await asyncio.wait_for(starting, 5)
    assert loop.time() - signalled < 3  # at once, with room for a busy machine
    name = signal.Signals(signum).name
    assert info.value.signal == name
    assert isinstance(info.value, InterruptedError)
    message = str(info.value)
    assert message.startswith(f"{name} stopped the startup after ")
    assert "while it waited for channel 'stopped' (faulty) to reach its backend" in message
    assert "(last error: ConnectionError: down)" in message
    assert server_handler == [signum]  # the server noted it, and will exit
    assert handlers() == before  # put back
    assert down.stats()["consumer"] == "closed"


async def test_a_stop_signal_ends_the_apps_own_startup_too(server_handler: list[int]) -> None:
    stuck = asyncio.Event()
    cleaned = []

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[None]:
        try:
            stuck.set()
            await asyncio.Event().wait()  # a startup of its own that never ends
            yield  # pragma: no cover
        finally:
            cleaned.append(True)

    lifespan = channels_lifespan("fine", lifespan=app_lifespan, ready_timeout=30)
    starting = asyncio.ensure_future(lifespan(None).__aenter__())
    await asyncio.wait_for(stuck.wait(), 5)
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(StartupStopped, match="while it waited for the app's lifespan to start"):
        await asyncio.wait_for(starting, 5)
    assert cleaned == [True]
    assert server_handler == [signal.SIGINT]


async def test_a_signal_after_the_startup_cancels_nothing(server_handler: list[int]) -> None:
    before = handlers()
    async with channels_lifespan("served", ready_timeout=5)(None):
        assert handlers() == before
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.05)  # a stray cancellation would land here
    assert server_handler == [signal.SIGTERM]


async def test_a_task_that_is_cancelled_otherwise_is_not_taken_for_a_stop() -> None:
    down = Faulty("cancelled", [ConnectionError("down")] * 10_000)
    starting = asyncio.ensure_future(channels_lifespan(down, ready_timeout=30)(None).__aenter__())
    await asyncio.wait_for(down.tries.get(), 5)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting


def test_outside_the_main_thread_no_handler_is_installed() -> None:
    installed: list[dict[int, Any]] = []

    async def enter() -> None:
        task = asyncio.current_task()
        assert task is not None
        with StopSignals(task):
            installed.append(handlers())

    before = handlers()
    thread = threading.Thread(target=asyncio.run, args=(enter(),))
    thread.start()
    thread.join(10)
    assert installed == [before]


def test_ready_timeout_must_be_seconds() -> None:
    with pytest.raises(ValueError, match="ready_timeout must be seconds > 0 or None"):
        channels_lifespan("x", ready_timeout=0)


APP = """
from starlette.applications import Starlette

from tbone.dispatch.channels.redis import RedisChannel
from tbone_asgi import channel_route, channels_lifespan

pubsub = RedisChannel(name="pubsub", url="redis://127.0.0.1:{port}/0")
app = Starlette(
    routes=[channel_route("/ws", "pubsub")],
    lifespan=channels_lifespan("pubsub", ready_timeout={timeout}),
)
"""


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
async def test_uvicorn_exits_at_once_on_a_stop_signal_while_redis_is_not_there(
    tmp_path: Path, signum: int
) -> None:
    (tmp_path / "app.py").write_text(APP.format(port=free_port(), timeout=60))
    uvicorn = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(tmp_path)]
    async with Child.start([*uvicorn, "--port", "0"]) as child:
        await child.wait_for("backend failed")  # the startup waits, the consumer retries
        child.send(signum)
        status, seconds = await child.exit_within(10)
    assert status == 3, child.text  # uvicorn's status for a failed startup
    assert seconds < 5, child.text
    assert f"StartupStopped: {signal.Signals(signum).name} stopped the startup" in child.text


async def test_uvicorn_exits_after_the_ready_timeout_when_redis_is_not_there(
    tmp_path: Path,
) -> None:
    (tmp_path / "app.py").write_text(APP.format(port=free_port(), timeout=1))
    uvicorn = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(tmp_path)]
    async with Child.start([*uvicorn, "--port", "0"]) as child:
        status, seconds = await child.exit_within(15)
    assert status == 3, child.text
    assert seconds < 10, child.text  # 1 s of waiting, and uvicorn's own start
    assert "ChannelUnavailable: channel 'pubsub' (redis) is not ready" in child.text
    assert "Application startup failed. Exiting." in child.text
    assert "Uvicorn running" not in child.text  # never served


SLOW_IMPORT = """
import os
import pathlib
import time

# One write per line: print() writes the text and its newline apart, and the two workers'
# lines then run together on the shared pipe.
os.write(2, f"importing the app in {{os.getpid()}}\\n".encode())
gate = pathlib.Path({gate!r})
deadline = time.monotonic() + 20
while not gate.exists() and time.monotonic() < deadline:  # the test opens it after its signal
    time.sleep(0.01)
"""


async def test_a_stop_signal_before_the_startup_began_ends_it_at_once(tmp_path: Path) -> None:
    # A uvicorn worker installs its handlers, then imports the app, then starts the lifespan:
    # a signal in between is only noted by uvicorn. The startup finds it noted and ends.
    gate = tmp_path / "gate"
    app = SLOW_IMPORT.format(gate=str(gate)) + APP.format(port=free_port(), timeout=60)
    (tmp_path / "app.py").write_text(app)
    uvicorn = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(tmp_path)]
    async with Child.start([*uvicorn, "--port", "0", "--workers", "2"]) as child:
        first = await child.wait_for("importing the app in ")
        await child.wait_for("importing the app in ", count=2)
        os.kill(int(first.rsplit(" ", 1)[1]), signal.SIGTERM)
        gate.touch()
        status, seconds = await child.exit_within(15)  # timed from here
    # The worker ends with 3 at once; the supervisor then stops the other one and exits 0.
    assert status == 0, child.text
    assert seconds < 10, child.text  # the supervisor's health check takes up to 5 s
    assert "StartupStopped: SIGTERM stopped the startup after" in child.text
    assert "failed to start, stopping the parent process" in child.text


async def test_a_stop_the_server_noted_before_the_wait_ends_it_at_once() -> None:
    class Server:  # what uvicorn's Server keeps of the signals it caught
        def __init__(self) -> None:
            self.should_exit = True
            self._captured_signals = [signal.SIGINT]

        def handle_exit(self, signum: int, frame: FrameType | None) -> None:
            pass  # pragma: no cover - no signal is sent

    server = Server()
    previous = {signum: signal.signal(signum, server.handle_exit) for signum in STOP_SIGNALS}
    try:
        down = Faulty("noted", [ConnectionError("down")] * 10_000)
        with pytest.raises(StartupStopped, match=r"^SIGINT stopped the startup after 0\.0s"):
            async with channels_lifespan(down, ready_timeout=30)(None):
                pass  # pragma: no cover - the startup fails
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
