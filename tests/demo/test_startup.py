"""The demo's startup and shutdown with a backend that is down, frozen or refusing, as a user
runs it: ``uvicorn demo:app``, ``python -m demo``, with ``--workers 2``, in a child process.

Each case waits for a log line of the phase in question (never a sleep), sends SIGINT, SIGTERM
or Ctrl-C (SIGINT to the whole process group, as a terminal does), and asserts the exit status,
the time it took, and the one line that says why. ``TBONE_STARTUP_TIMEOUT`` is 1 s where the
timeout itself is what is tested, and 60 s where a signal must end the wait. Last, in process:
the mirror's wait for the channel's history, bounded by the same timeout.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from demo.startup import CannotStart
from demo.web import create_app
from tbone.dispatch import History, MemoryChannel
from tests.support.child import Child
from tests.support.mongo_server import MongoServer
from tests.support.redis_server import RedisServer, free_port, require_redis_server

pytestmark = pytest.mark.slow  # long: scheduled first (tests/conftest.py)

UVICORN = [str(Path(sys.executable).parent / "uvicorn"), "demo:app", "--port", "0"]
DEMO = [sys.executable, "-m", "demo", "--port", "0"]
WORKERS = ["--workers", "2"]
STARTUP_FAILURE = 3
#: How long a signal may take to end the process (the issue asks for about 10 s).
PROMPT = 5.0

NOT_READY = "demo cannot start: channel 'demo' (redis) is not ready: its backend did not answer"


def env(url: str, timeout: float = 60) -> dict[str, str]:
    return {"TBONE_CHANNEL_URL": url, "TBONE_STARTUP_TIMEOUT": str(timeout)}


def nowhere() -> str:
    """A Redis URL with nothing listening behind it."""
    return f"redis://127.0.0.1:{free_port()}/0"


def reports(child: Child, start: str) -> list[str]:
    """The lines of the log whose message starts with ``start`` (after uvicorn's level)."""
    return [line for line in child.log if line.removeprefix("ERROR:    ").startswith(start)]


def assert_one_line(child: Child, start: str) -> None:
    assert len(reports(child, start)) == 1, child.text
    assert "Traceback" not in child.text, child.text


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_redis_server()
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


# -- startup: the backend does not answer ---------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [UVICORN, DEMO, [*DEMO, *WORKERS]],
    ids=["uvicorn demo:app", "python -m demo", "python -m demo --workers 2"],
)
async def test_a_backend_that_is_down_fails_the_startup_after_the_timeout(
    command: list[str],
) -> None:
    async with Child.start(command, env=env(nowhere(), timeout=1)) as child:
        status, seconds = await child.exit_within(15)
    assert status == STARTUP_FAILURE, child.text
    assert seconds < 1 + PROMPT, child.text
    assert_one_line(child, NOT_READY)
    assert "within 1s (last error: ConnectionError: Error 111 connecting to" in child.text
    assert "Uvicorn running" not in child.text  # never bound its port
    if command[1:3] == ["-m", "demo"]:
        assert "Started server process" not in child.text  # checked before uvicorn started


async def test_under_uvicorn_workers_every_worker_fails_and_one_reports(tmp_path: Path) -> None:
    # uvicorn's supervisor stops when a worker exits with 3, then exits with 0 itself.
    settings = {**env(nowhere(), timeout=1), "TMPDIR": str(tmp_path)}
    async with Child.start([*UVICORN, *WORKERS], env=settings) as child:
        status, seconds = await child.exit_within(20)
    assert status == 0, child.text
    assert seconds < 1 + 10, child.text  # the supervisor's health check takes up to 5 s
    assert_one_line(child, NOT_READY)
    assert child.text.count("Application startup failed. Exiting.") == 2, child.text
    assert "died" not in child.text  # no worker started again


# -- startup: a stop signal ends the wait ---------------------------------------------------


@pytest.mark.parametrize(
    ("command", "how", "expected"),
    [
        (UVICORN, signal.SIGINT, STARTUP_FAILURE),
        (UVICORN, signal.SIGTERM, STARTUP_FAILURE),
        ([*UVICORN, *WORKERS], "ctrl-c", 0),
        ([*UVICORN, *WORKERS], signal.SIGTERM, 0),
        (DEMO, "ctrl-c", 130),
        (DEMO, signal.SIGTERM, -signal.SIGTERM),
        ([*DEMO, *WORKERS], "ctrl-c", 130),
    ],
    ids=[
        "uvicorn demo:app SIGINT",
        "uvicorn demo:app SIGTERM",
        "uvicorn --workers 2 Ctrl-C",
        "uvicorn --workers 2 SIGTERM to the supervisor",
        "python -m demo Ctrl-C",
        "python -m demo SIGTERM",
        "python -m demo --workers 2 Ctrl-C",
    ],
)
async def test_a_stop_signal_ends_the_startup_wait_at_once(
    command: list[str], how: signal.Signals | str, expected: int
) -> None:
    async with Child.start(command, env=env(nowhere())) as child:
        await child.wait_for("backend failed", count=2 if "--workers" in command else 1)
        if how == "ctrl-c":
            child.interrupt()
        else:
            child.send(how)
        status, seconds = await child.exit_within(15)
    assert status == expected, child.text
    assert seconds < PROMPT, child.text
    assert "Traceback" not in child.text, child.text
    if command[:1] == UVICORN[:1]:
        name = "SIGINT" if how == "ctrl-c" else signal.Signals(how).name
        assert_one_line(child, f"demo did not start: {name} stopped the startup after")
        assert "while it waited for channel 'demo' (redis) to reach its backend" in child.text
    elif how == "ctrl-c":
        assert_one_line(child, "demo did not start: SIGINT stopped the check of the backend")


async def test_a_mongodb_url_with_no_server_stops_at_once_on_sigterm() -> None:
    # The driver waits for a server for 5 s (the demo's serverSelectionTimeoutMS) before the
    # first error: the signal comes while the consumer is still inside it.
    url = f"mongodb://127.0.0.1:{free_port()}/tbone"
    async with Child.start(UVICORN, env=env(url)) as child:
        await child.wait_for("Waiting for application startup")
        child.send(signal.SIGTERM)
        status, seconds = await child.exit_within(15)
    assert (status, seconds < PROMPT) == (STARTUP_FAILURE, True), child.text
    assert_one_line(child, "demo did not start: SIGTERM stopped the startup")
    assert "channel 'demo' (mongo) to reach its backend (last error: none yet)" in child.text


async def test_a_frozen_redis_at_startup_stops_at_once_on_sigint(tmp_path: Path) -> None:
    # Stopped with SIGSTOP: the kernel still accepts connections, nothing ever answers.
    with RedisServer(tmp_path) as server:
        server.pause()
        async with Child.start(UVICORN, env=env(server.url)) as child:
            await child.wait_for("Waiting for application startup")
            child.send(signal.SIGINT)
            status, seconds = await child.exit_within(15)
    assert (status, seconds < PROMPT) == (STARTUP_FAILURE, True), child.text
    assert_one_line(child, "demo did not start: SIGINT stopped the startup")


# -- startup: what retrying cannot fix fails at once ----------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis:/127.0.0.1:6390", "RedisChannel url 'redis:/127.0.0.1:6390': it names no host"),
        ("redis://127.0.0.1:6390/abc", "the path must be the database number, not '/abc'"),
        ("mongodb:/127.0.0.1/tbone", "is not a MongoDB URI the driver takes (Invalid URI scheme"),
    ],
)
@pytest.mark.parametrize(
    "command", [UVICORN, [*DEMO, *WORKERS]], ids=["uvicorn demo:app", "python -m demo --workers 2"]
)
async def test_a_malformed_url_fails_at_once_with_the_rule(
    command: list[str], url: str, says: str
) -> None:
    async with Child.start(command, env=env(url)) as child:
        status, seconds = await child.exit_within(15)
    assert (status, seconds < PROMPT) == (STARTUP_FAILURE, True), child.text
    assert_one_line(child, "demo cannot start: TBONE_CHANNEL_URL")
    assert says in child.text
    assert "Waiting for application startup" not in child.text  # the app was never built


async def test_a_startup_timeout_that_is_not_seconds_fails_at_once() -> None:
    settings = {"TBONE_CHANNEL_URL": "", "TBONE_STARTUP_TIMEOUT": "ten"}
    async with Child.start(UVICORN, env=settings) as child:
        status, _ = await child.exit_within(15)
    assert status == STARTUP_FAILURE, child.text
    assert_one_line(child, "demo cannot start: TBONE_STARTUP_TIMEOUT='ten' is not a number")


@pytest.mark.parametrize("command", [UVICORN, DEMO], ids=["uvicorn demo:app", "python -m demo"])
async def test_a_wrong_password_fails_at_once(tmp_path: Path, command: list[str]) -> None:
    with RedisServer(tmp_path) as server:

        async def guard() -> None:
            client = aioredis.Redis(port=server.port)
            await client.config_set("requirepass", "right")
            await client.aclose()

        await guard()
        url = f"redis://:wrong@127.0.0.1:{server.port}/0"
        async with Child.start(command, env=env(url)) as child:
            status, seconds = await child.exit_within(15)
    assert (status, seconds < PROMPT) == (STARTUP_FAILURE, True), child.text
    assert_one_line(child, "demo cannot start: channel 'demo' (redis) is not ready: its backend")
    assert "refused it (AuthenticationError: invalid username-password pair" in child.text
    assert "check the user name and password" in child.text
    assert ":wrong@" not in child.text  # the password is not shown


# -- serving: the backend freezes or goes away ----------------------------------------------


@pytest.mark.parametrize(
    ("command", "how"),
    [
        (UVICORN, signal.SIGTERM),
        (UVICORN, signal.SIGINT),
        ([*DEMO, *WORKERS], "ctrl-c"),
        ([*DEMO, *WORKERS], signal.SIGTERM),
    ],
    ids=[
        "uvicorn demo:app SIGTERM",
        "uvicorn demo:app SIGINT",
        "python -m demo --workers 2 Ctrl-C",
        "python -m demo --workers 2 SIGTERM",
    ],
)
@pytest.mark.parametrize("fault", ["frozen", "retrying"])
async def test_a_stop_signal_ends_a_server_whose_backend_froze_or_went(
    tmp_path: Path, command: list[str], how: signal.Signals | str, fault: str
) -> None:
    workers = 2 if "--workers" in command else 1
    with RedisServer(tmp_path) as server:
        async with Child.start(command, env=env(server.url)) as child:
            await child.wait_for("Application startup complete", count=workers)
            if fault == "frozen":
                server.pause()  # the consumer's blocked read waits on a silent socket
            else:
                server.kill()
                await child.wait_for("backend failed", count=workers)  # retrying
            if how == "ctrl-c":
                child.interrupt()
            else:
                child.send(how)
            status, seconds = await child.exit_within(20)
    assert seconds < PROMPT + 5, child.text  # a close gives the backend at most 10 s
    # uvicorn ends with the signal it was stopped by (it raises it again once shut down).
    assert status in (0, -signal.SIGTERM), child.text
    assert "Traceback" not in child.text, child.text
    assert child.text.count("Application shutdown complete.") == workers, child.text


@pytest.mark.parametrize(
    ("command", "how"),
    [(UVICORN, signal.SIGTERM), ([*DEMO, *WORKERS], "ctrl-c")],
    ids=["uvicorn demo:app SIGTERM", "python -m demo --workers 2 Ctrl-C"],
)
@pytest.mark.parametrize("fault", ["frozen", "stopped"])
async def test_a_stop_signal_ends_a_server_whose_mongodb_froze_or_went(
    command: list[str], how: signal.Signals | str, fault: str
) -> None:
    workers = 2 if "--workers" in command else 1
    with MongoServer() as server:
        url = f"{server.url}/tbone_demo_{fault}"
        async with Child.start(command, env=env(url)) as child:
            await child.wait_for("Application startup complete", count=workers)
            if fault == "frozen":
                server.pause()  # the tailing cursor's getMore waits on a silent socket
            else:
                server.stop()
                await child.wait_for("backend failed", count=workers)  # retrying
            if how == "ctrl-c":
                child.interrupt()
            else:
                child.send(how)
            status, seconds = await child.exit_within(20)
    assert seconds < PROMPT + 5, child.text  # a close gives the backend at most 10 s
    assert status in (0, -signal.SIGTERM), child.text
    assert "Traceback" not in child.text, child.text
    assert child.text.count("Application shutdown complete.") == workers, child.text


# -- startup: the mirror's history ----------------------------------------------------------


class SilentHistory(MemoryChannel):
    """Ready at once, but its history never comes (a backend that froze after answering)."""

    async def history_page(self, since: str | None, *, limit: int, max_bytes: int) -> History:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")  # pragma: no cover


class BrokenHistory(MemoryChannel):
    async def history_page(self, since: str | None, *, limit: int, max_bytes: int) -> History:
        raise ConnectionError("the backend went away")


@pytest.mark.parametrize(
    ("backend", "problem"),
    [
        (SilentHistory, "its history was not read within 0.3s"),
        (BrokenHistory, "its history could not be read (ConnectionError: the backend went away)"),
    ],
)
async def test_the_mirror_waits_for_the_history_within_the_startup_timeout(
    backend: type[MemoryChannel], problem: str
) -> None:
    channel = backend(name=f"history-{backend.__name__}")
    app = create_app(channel, startup_timeout=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(CannotStart) as info:
        async with app.router.lifespan_context(app):
            pass  # pragma: no cover - the startup fails
    assert loop.time() - started < 3
    assert str(info.value) == (
        f"demo cannot start: channel 'history-{backend.__name__}' (memory) is ready but "
        f"{problem}; check the backend, or raise TBONE_STARTUP_TIMEOUT"
    )
    assert channel.stats()["consumer"] == "closed"  # closed by the lifespan on the way out
