"""RedisChannel before it serves: its URL checked when made, and ``ready(timeout)`` on a real
``redis-server`` that refuses it (password, ACL, database number) or is not there at all."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tbone.dispatch import ChannelUnavailable
from tbone.dispatch.channels.redis import URL_RULE, RedisChannel
from tests.support.redis_server import RedisServer, free_port

PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server with a password, 4 databases, and a user allowed nothing but PING."""
    with RedisServer(tmp_path_factory.mktemp("guarded"), args=["--databases", "4"]) as server:

        async def guard() -> None:
            # Set once started: the start-up check pings without a password.
            client = aioredis.Redis(port=server.port)
            await client.execute_command("ACL", "SETUSER", "pinger", "on", ">pw", "+ping")
            await client.config_set("requirepass", PASSWORD)
            await client.aclose()

        asyncio.run(guard())
        yield server


def url(server: RedisServer, auth: str, db: int = 0) -> str:
    return f"redis://{auth}127.0.0.1:{server.port}/{db}"


@pytest.mark.parametrize(
    ("auth", "db", "error", "fix"),
    [
        ("", 0, "AuthenticationError: Authentication required", "check the user name and pass"),
        (":wrong@", 0, "AuthenticationError: invalid username-password", "check the user name"),
        ("pinger:pw@", 0, "NoPermissionError", "let the user run EVAL and the stream commands"),
        (f":{PASSWORD}@", 4, "ResponseError: DB index is out of range", "below the server's"),
    ],
    ids=["no password", "wrong password", "acl", "database number"],
)
async def test_what_retrying_cannot_fix_fails_ready_at_once(
    guarded: RedisServer, auth: str, db: int, error: str, fix: str
) -> None:
    channel = RedisChannel(name=f"refused-{db}-{len(auth)}", url=url(guarded, auth, db))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ChannelUnavailable) as info:
        await channel.ready(timeout=30)
    assert loop.time() - started < 2  # at once: the first answer says it all
    assert info.value.reason == "refused"
    assert info.value.last_error is not None
    assert info.value.last_error.startswith(error)
    assert fix in info.value.fix
    assert PASSWORD not in str(info.value)


async def test_the_right_password_is_ready(guarded: RedisServer) -> None:
    channel = RedisChannel(name="allowed", url=url(guarded, f":{PASSWORD}@", 3))
    await channel.ready(timeout=10)
    assert channel.stats()["consumer"] == "running"


async def test_no_server_is_waited_for_until_the_timeout() -> None:
    channel = RedisChannel(name="nowhere", url=f"redis://127.0.0.1:{free_port()}/0")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ChannelUnavailable) as info:
        await channel.ready(timeout=0.5)
    assert 0.5 <= loop.time() - started < 2
    assert info.value.reason == "timeout"
    assert "Connection refused" in str(info.value) or "Connect call failed" in str(info.value)


async def test_a_server_that_starts_late_is_ready_within_the_timeout(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    channel = RedisChannel(name="late", url=server.url, backoff=(0.05, 0.1))
    waiting = asyncio.ensure_future(channel.ready(timeout=20))
    try:
        await asyncio.to_thread(server.start)
        await asyncio.wait_for(waiting, 20)
    finally:
        await channel.close()
        server.kill()


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("redis:/127.0.0.1:6390", "it names no host"),
        ("redis://127.0.0.1:6390/abc", "the path must be the database number, not '/abc'"),
        ("redis://127.0.0.1:6390/0/1", "the path must be the database number"),
        ("redis://:6390/0", "it names no host"),
        ("redis://127.0.0.1:99999/0", "the port must be a number from 1 to 65535"),
        ("redis://127.0.0.1:port/0", "the port must be a number from 1 to 65535"),
        ("redis://127.0.0.1:0/0", "the port must be a number from 1 to 65535"),
        ("http://127.0.0.1:6379/0", "the scheme must be redis, rediss or unix, not 'http'"),
        ("127.0.0.1:6379", "the scheme must be redis, rediss or unix"),
        ("unix://", "it names no socket path"),
        ("redis://127.0.0.1/0?sockettimeout=1", "unexpected keyword argument 'sockettimeout'"),
        ("redis://127.0.0.1/0?db=two", "Invalid value for 'db'"),
    ],
)
def test_a_url_that_cannot_name_a_server_fails_when_the_channel_is_made(
    bad: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=r"^RedisChannel url ") as info:
        RedisChannel(name="bad-url", url=bad)
    message = str(info.value)
    assert message == f"RedisChannel url {bad!r}: {message.split(': ', 1)[1]}"
    assert problem in message
    assert message.endswith(f"; use {URL_RULE}")
    assert "\n" not in message


@pytest.mark.parametrize(
    "good",
    [
        "redis://127.0.0.1",
        "redis://127.0.0.1:6379/15",
        "redis://user:pw@127.0.0.1:6379/0",
        "redis://[::1]:6379/2",
        "rediss://cache.example:6380/0",
        "unix:///run/redis.sock?db=1",
        "redis://127.0.0.1:6379/0?socket_keepalive=true",
    ],
)
def test_good_urls_are_taken(good: str) -> None:
    assert RedisChannel(name=f"good-{good}", url=good).url == good


def test_a_password_in_a_bad_url_is_not_shown() -> None:
    with pytest.raises(ValueError, match=r"'redis://user:\*\*\*@127\.0\.0\.1:6379/x'") as info:
        RedisChannel(name="secret", url="redis://user:hunter2@127.0.0.1:6379/x")
    assert "hunter2" not in str(info.value)
