"""The serving loop's parts that need no server: ServeOptions, the checks, channel names.

The loop itself runs on real servers in ``tests/support/protocol_cases.py`` (uvicorn, Sanic,
aiohttp), which every framework's tests subclass.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any

import pytest

from tbone.dispatch import MemoryChannel, get_channel
from tbone.dispatch import refusals as refusal_log
from tbone.dispatch.protocol import Limits, Refused
from tbone.dispatch.serving import (
    Checked,
    ServeOptions,
    channel_for,
    check,
    check_channel,
    resolve_channel,
)


def test_defaults() -> None:
    options = ServeOptions()
    assert options.events is None
    assert options.limits == Limits()
    assert (options.close_timeout, options.max_connections) == (5.0, 10_000)
    assert options.carrier_options() == {
        "max_messages": None,
        "max_bytes": None,
        "slow_timeout": None,
    }
    assert ServeOptions(limits=None).limits == Limits()  # type: ignore[arg-type]


def test_options_are_frozen_and_normalised() -> None:
    options = ServeOptions(events=["a", "b", "a"], allowed_origins=["https://app.example"])
    assert options.events == ("a", "b")
    assert options.allowed_origins == ("https://app.example",)
    assert options.origins.allowed == {"https://app.example"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_connections = 1  # type: ignore[misc]
    assert options == ServeOptions(events=("a", "b"), allowed_origins=("https://app.example",))
    assert ServeOptions(max_messages=5, slow_timeout=0.5).carrier_options() == {
        "max_messages": 5,
        "max_bytes": None,
        "slow_timeout": 0.5,
    }


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"events": "resource_create"}, TypeError, "not the str"),
        ({"events": ["no spaces"]}, ValueError, "invalid event names"),
        ({"authorize": "yes"}, TypeError, r"authorize must be a function \(connection, event\)"),
        ({"allowed_origins": "https://a.example"}, TypeError, "allowed_origins=\\['https"),
        ({"allowed_origins": ["a.example"]}, ValueError, "scheme://host"),
        ({"limits": {"max_frame_bytes": 10}}, TypeError, r"limits must be a Limits\(...\)"),
        ({"max_messages": 0}, ValueError, "max_messages must be at least 1, got 0"),
        ({"max_messages": 2.5}, TypeError, "max_messages must be a whole number or None"),
        ({"max_bytes": -1}, ValueError, "max_bytes must be at least 1"),
        ({"slow_timeout": 0}, ValueError, "slow_timeout must be more than 0 seconds"),
        ({"slow_timeout": "5"}, TypeError, "slow_timeout must be a number of seconds or None"),
        ({"close_timeout": None}, TypeError, "close_timeout must be a number of seconds, got"),
        ({"close_timeout": float("nan")}, ValueError, "close_timeout must be more than 0"),
        ({"max_connections": 0}, ValueError, "max_connections must be at least 1, got 0"),
        ({"max_connections": True}, TypeError, "max_connections must be a whole number"),
        ({"max_mesages": 10}, TypeError, "unexpected keyword argument 'max_mesages'"),
    ],
)
def test_bad_options_say_what_is_wrong(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ServeOptions(**options)


def test_check_channel() -> None:
    channel = MemoryChannel(name="checked")
    assert check_channel(channel) is channel
    assert check_channel("name") == "name"
    for bad in ("", 42, None):
        with pytest.raises(TypeError, match="a Channel or a channel name"):
            check_channel(bad)  # type: ignore[arg-type]


def test_a_name_is_the_registered_channel_else_a_memory_one_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tbone.dispatch.serving")
    registered = MemoryChannel(name=f"made-{uuid.uuid4().hex[:8]}")
    assert channel_for(registered.name) is registered
    assert channel_for(registered) is registered
    name = f"forgotten-{uuid.uuid4().hex[:8]}"
    made = channel_for(name)
    assert made is get_channel(name)
    assert type(made) is MemoryChannel
    assert channel_for(name) is made
    assert [r.getMessage() for r in caplog.records] == [
        f"no channel named {name!r} was created in this process; serving a new "
        f"MemoryChannel({name!r}): create the channel at startup so the endpoint serves the "
        f"channel you publish on: ASGI: lifespan=channels_lifespan({name!r}); aiohttp: "
        "app.cleanup_ctx; Sanic: @app.before_server_start; or at import, "
        f'MemoryChannel(name={name!r}) (tbone-asgi docs: Carriers, "Serving the protocol")'
    ]
    # Startup code (channels_lifespan) creates channels by name on purpose: no warning.
    caplog.clear()
    assert type(resolve_channel(f"startup-{uuid.uuid4().hex[:8]}")) is MemoryChannel
    assert caplog.records == []


class FakeHandshake:
    """A handshake as :func:`check` reads it, without a server."""

    logger = logging.getLogger("tests.serving")
    path = "/ws"

    def __init__(self, query: str = "", origin: str | None = None) -> None:
        self.request = {"user": "ada"}
        self._query = query
        self._origin = origin

    def scope(self) -> dict[str, Any]:
        headers = [(b"host", b"example.com")]
        if self._origin is not None:
            headers.append((b"origin", self._origin.encode()))
        return {"headers": headers}

    def query(self) -> tuple[list[str], str | None]:
        if self._query == "bad":
            raise ValueError("bad query string: too many fields")
        events, _, since = self._query.partition("@")
        return [e for e in events.split(",") if e], since or None


async def test_check_runs_origin_query_then_subscriptions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tests.serving")
    refusal_log.forget()
    seen: list[tuple[Any, str]] = []

    def authorize(connection: Any, event: str) -> bool:
        seen.append((connection, event))
        return event != "secret"

    options = ServeOptions(authorize=authorize)
    assert await check(FakeHandshake("a,b@1-1"), options) == Checked(["a", "b"], "1-1")
    assert seen == [({"user": "ada"}, "a"), ({"user": "ada"}, "b")]
    assert await check(FakeHandshake(origin="https://example.com"), options) == Checked([], None)
    refusals = [
        (FakeHandshake("a", origin="https://evil.example"), "forbidden_origin"),
        (FakeHandshake("bad"), "bad_query"),
        (FakeHandshake("a,secret"), "forbidden"),
        (FakeHandshake("@1-1"), "bad_since"),
    ]
    for handshake, code in refusals:
        with pytest.raises(Refused) as info:
            await check(handshake, options)
        assert info.value.code == code
    logged = [r.getMessage().split(". Fix: ")[0] for r in caplog.records]
    assert logged == [
        "refused websocket /ws: forbidden_origin: origin 'https://evil.example' is not allowed",
        "refused websocket /ws: bad_query: bad query string: too many fields",
        "refused websocket /ws: forbidden: subscribing to 'secret' is not allowed",
        "refused websocket /ws: bad_since: since needs events to resume: add events=a,b",
    ]
    assert get_channel("a") is None  # checking makes no channel


async def test_a_refusal_is_a_warning_with_the_fix_once_a_minute_per_kind(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="tests.serving")
    refusal_log.forget()
    clock = [1000.0]
    monkeypatch.setattr(refusal_log.time, "monotonic", lambda: clock[0])
    options = ServeOptions(events=["a"])
    dev_server = FakeHandshake("a", origin="http://localhost:5173")
    for handshake in (dev_server, dev_server, FakeHandshake("b"), dev_server):
        with pytest.raises(Refused):
            await check(handshake, options)
    clock[0] += refusal_log.WARN_EVERY
    with pytest.raises(Refused):
        await check(dev_server, options)
    levels = [(r.levelname, r.getMessage().split(": ")[1]) for r in caplog.records]
    assert levels == [
        ("WARNING", "forbidden_origin"),
        ("INFO", "forbidden_origin"),  # within the minute: INFO, so a loop cannot flood
        ("WARNING", "not_offered"),  # another kind has its own minute
        ("INFO", "forbidden_origin"),
        ("WARNING", "forbidden_origin"),  # a minute later
    ]
    first = caplog.records[0].getMessage()
    assert "origin 'http://localhost:5173' is not allowed. Fix: " in first
    assert "allowed_origins=['http://localhost:5173']" in first
    assert '"Allowed origins in development"' in first
    assert "the next forbidden_origin refusals within 60s are logged at INFO" in first
    assert "events=[...]" in caplog.records[2].getMessage()
