"""MongoChannel.ready(timeout): what retrying cannot fix fails at once, the rest is waited for.

The real driver (PyMongo async and Motor) against the scripted server of
``tests/support/mongo.py``, which answers the channel's first command (``create``) with the
error a test picks; and a URL with no server behind it.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tbone.dispatch import ChannelUnavailable, close_all_channels
from tbone.dispatch.channels.mongo import MongoChannel
from tests.support.mongo import DRIVERS, ScriptedMongo, connect, reply_cursor
from tests.support.redis_server import free_port

COLLECTION = "tbone_channel_feed"


@pytest.fixture
def mongo() -> Any:
    server = ScriptedMongo().start()
    yield server
    server.stop()


@pytest.fixture(params=DRIVERS)
async def db(request: pytest.FixtureRequest, mongo: ScriptedMongo) -> AsyncIterator[Any]:
    async with connect(request.param, mongo.uri) as client:
        yield client["app"]
        await close_all_channels()


def channel_of(db: Any) -> MongoChannel:
    return MongoChannel(name="feed", db=db, await_time=0.05, backoff=(0.01, 0.02))


@pytest.mark.parametrize(
    ("code", "errmsg", "fix"),
    [
        (18, "Authentication failed.", "check the user name, password and authSource"),
        (13, "not authorized on app to execute command", "grant the user find, insert"),
    ],
    ids=["authentication", "authorization"],
)
async def test_refused_credentials_fail_ready_at_once(
    mongo: ScriptedMongo, db: Any, code: int, errmsg: str, fix: str
) -> None:
    mongo.auto("create", lambda r: r.command_err(code=code, errmsg=errmsg))
    channel = channel_of(db)
    with pytest.raises(ChannelUnavailable) as info:
        await channel.ready(timeout=30)  # at once, not after 30 s (the test's timeout says)
    assert info.value.reason == "refused"
    assert errmsg in str(info.value)
    assert fix in info.value.fix
    assert "app.tbone_channel_feed" in info.value.fix or code == 18


async def test_a_collection_that_is_not_capped_fails_ready_at_once(
    mongo: ScriptedMongo, db: Any
) -> None:
    mongo.auto("create", lambda r: r.command_err(code=48, errmsg="Collection already exists"))
    mongo.auto(
        "listCollections",
        lambda r: reply_cursor(r, [{"name": COLLECTION, "type": "collection", "options": {}}]),
    )
    with pytest.raises(ChannelUnavailable, match="is not capped") as info:
        await channel_of(db).ready(timeout=30)
    assert info.value.fix.startswith("drop the collection, convert it")


async def test_an_error_that_may_pass_is_waited_for(mongo: ScriptedMongo, db: Any) -> None:
    mongo.auto("create", lambda r: r.command_err(code=91, errmsg="The server is shutting down"))
    with pytest.raises(ChannelUnavailable) as info:
        await channel_of(db).ready(timeout=0.5)
    assert info.value.reason == "timeout"
    assert "ShutdownInProgress" in str(info.value) or "shutting down" in str(info.value)


async def test_no_server_fails_after_the_timeout_and_close_stops_every_wait() -> None:
    with warnings.catch_warnings():
        # PyMongo 4.20 leaves a socket unclosed when a connect attempt is cancelled (it
        # closes it on OSError only): its monitor's, as the client closes. Collected here.
        warnings.simplefilter("ignore", ResourceWarning)
        await no_server_then_close()
        gc.collect()


async def no_server_then_close() -> None:
    async with connect("pymongo", f"mongodb://127.0.0.1:{free_port()}") as client:
        channel = MongoChannel(name="nowhere", db=client["app"], backoff=(0.01, 0.02))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ChannelUnavailable, match=r"did not answer within 0\.5s"):
            await channel.ready(timeout=0.5)
        assert loop.time() - started < 2
        # The consumer and the collection's create wait in the driver's server selection
        # (30 s by default): close() stops both, so nothing outlives the channel.
        creating = channel._ensuring
        assert creating is not None
        assert not creating.done()
        publishing = asyncio.ensure_future(channel.publish("e", 1))  # waits for the create
        await asyncio.sleep(0)
        started = loop.time()
        await channel.close()
        assert loop.time() - started < 3  # not the 10 s of the close timeout
        assert creating.done()
        with pytest.raises(ConnectionError, match="closed while it created its collection"):
            await publishing
