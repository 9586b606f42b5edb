"""ProtocolSession on a MemoryChannel and a RecordingCarrier: every rule, plus a fuzz."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tbone.dispatch import MemoryChannel
from tbone.dispatch.protocol import (
    Limits,
    ProtocolSession,
    Refused,
    check_connect,
    check_event_names,
    valid_event_name,
)
from tbone.dispatch.testing import RecordingCarrier


def sub(*events: str, since: str | None = None) -> str:
    payload: dict[str, Any] = {"events": list(events)}
    if since is not None:
        payload["since"] = since
    return json.dumps({"type": "subscribe", "payload": payload})


def unsub(*events: str) -> str:
    return json.dumps({"type": "unsubscribe", "payload": {"events": list(events)}})


PING = '{"type":"ping"}'


@pytest.fixture
async def channel() -> AsyncIterator[MemoryChannel]:
    channel = MemoryChannel(name="proto", history=5)
    yield channel
    await channel.close(forget=True)


def make(channel: MemoryChannel, **options: Any) -> tuple[ProtocolSession, RecordingCarrier]:
    carrier = RecordingCarrier()
    return ProtocolSession(channel, carrier, **options), carrier


def codes(frames: list[Any]) -> list[str]:
    return [f["payload"]["code"] for f in frames if f["type"] == "error"]


# -- names and limits ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "resource_create", "user:1.update-x", "x" * 200])
def test_valid_event_names(name: str) -> None:
    assert valid_event_name(name)


@pytest.mark.parametrize("name", ["", "x" * 201, "a b", "é", "a/b", 3, None, ["a"]])
def test_invalid_event_names(name: Any) -> None:
    assert not valid_event_name(name)


def test_check_event_names_says_what_is_wrong() -> None:
    with pytest.raises(TypeError, match="not the str"):
        check_event_names("resource_create")
    with pytest.raises(ValueError, match=r"\['a b'\]"):
        check_event_names(["ok", "a b"])
    with pytest.raises(ValueError, match="invalid event names"):
        ProtocolSession(object(), RecordingCarrier(), events=["bad name"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_frame_bytes": 0}, "max_frame_bytes"),
        ({"max_errors": 0}, "max_errors"),
        ({"max_messages_per_second": 0}, "float\\('inf'\\)"),
        ({"burst": 0.5}, "burst"),
    ],
)
def test_limits_refuse_nonsense(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Limits(**options)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_frame_bytes": "65536"}, "Limits.max_frame_bytes must be a whole number"),
        ({"max_errors": 2.5}, "Limits.max_errors must be a whole number"),
        ({"max_subscriptions": True}, "Limits.max_subscriptions must be a whole number"),
        ({"max_messages_per_second": "50"}, "Limits.max_messages_per_second must be a number"),
        ({"max_resumes_per_minute": None}, "Limits.max_resumes_per_minute must be a number"),
        ({"burst": "10"}, "Limits.burst must be a number of frames or None"),
    ],
)
def test_limits_refuse_a_wrong_type_with_type_error(options: dict[str, Any], match: str) -> None:
    with pytest.raises(TypeError, match=match):
        Limits(**options)


@pytest.mark.parametrize("option", ["max_replay_events", "max_replay_bytes"])
def test_the_replay_caps_are_deprecated_and_say_what_bounds_a_replay(option: str) -> None:
    Limits(max_replay_events=10_000, max_replay_bytes=16 * 1024 * 1024)  # the defaults: silent
    with pytest.warns(DeprecationWarning, match=r"MemoryChannel\(history=") as caught:
        Limits(**{option: 1})
    assert caught[0].filename == __file__  # it points at the code that set it


async def test_a_session_replays_everything_whatever_its_limits_say(
    channel: MemoryChannel,
) -> None:
    first = await channel.publish("a", 0)
    for i in range(1, 5):
        await channel.publish("a", i)
    with pytest.warns(DeprecationWarning, match="max_replay_events"):
        limits = Limits(max_replay_events=1, max_replay_bytes=1)
    session, carrier = make(channel, limits=limits)
    assert await session.receive(sub("a", since=first.id)) is None
    frames = await carrier.wait_for(5)
    assert [f["payload"]["data"] for f in frames[:4]] == [1, 2, 3, 4]
    assert frames[4] == {"type": "recovered", "payload": {"channel": "proto", "complete": True}}


# -- the happy path ------------------------------------------------------------------------------


async def test_subscribe_receive_in_order_and_unsubscribe(channel: MemoryChannel) -> None:
    session, carrier = make(channel)
    assert await session.receive(sub("a", "b")) is None
    assert await session.receive(PING) is None
    for i in range(5):
        await channel.publish("a" if i % 2 else "b", i)
    frames = await carrier.wait_for(6)
    assert frames[0] == {"type": "pong"}
    assert [f["payload"]["data"] for f in frames[1:]] == [0, 1, 2, 3, 4]
    assert channel.stats()["subscriptions"] == 2

    assert await session.receive(unsub("a", "never-subscribed")) is None
    assert list(session.subscribed) == ["b"]
    await channel.publish("a", "gone")
    await channel.publish("b", "kept")
    frames = await carrier.wait_for(7)
    assert frames[6]["payload"]["data"] == "kept"
    session.end()
    session.end()  # idempotent
    assert channel.stats()["subscribers"] == 0


async def test_bytes_frames_are_utf8_json(channel: MemoryChannel) -> None:
    session, carrier = make(channel)
    assert await session.receive(PING.encode()) is None
    assert await session.receive(b"\xff\xfe") is None
    frames = await carrier.wait_for(2)
    assert frames[0] == {"type": "pong"}
    assert codes(frames) == ["bad_json"]


async def test_start_subscribes_and_resumes(channel: MemoryChannel) -> None:
    first = await channel.publish("a", 1)
    await channel.publish("b", 2)
    await channel.publish("a", 3)
    session, carrier = make(channel)
    await session.start(["a"], since=first.id)
    frames = await carrier.wait_for(2)
    assert frames[0]["payload"]["data"] == 3
    assert frames[1] == {"type": "recovered", "payload": {"channel": "proto", "complete": True}}
    await channel.publish("a", 4)
    assert (await carrier.wait_for(3))[2]["payload"]["data"] == 4


async def test_resume_after_trimmed_history_says_incomplete(channel: MemoryChannel) -> None:
    first = await channel.publish("a", 0)
    for i in range(1, 10):  # history keeps 5
        await channel.publish("a", i)
    session, carrier = make(channel)
    assert await session.receive(sub("a", since=first.id)) is None
    frames = await carrier.wait_for(6)
    assert [f["payload"]["data"] for f in frames[:5]] == [5, 6, 7, 8, 9]
    assert frames[5]["payload"]["complete"] is False


async def test_start_uses_fixed_events_and_accept_comes_first(channel: MemoryChannel) -> None:
    order: list[str] = []
    carrier = RecordingCarrier()
    session = ProtocolSession(channel, carrier, events=["a", "b"])

    async def accept() -> None:
        order.append(f"accept subscribers={channel.stats()['subscribers']}")

    await session.start(accept=accept)
    assert order == ["accept subscribers=0"]
    assert list(session.subscribed) == ["a", "b"]


# -- refusals ------------------------------------------------------------------------------------


async def test_start_refuses_before_anything_is_subscribed(channel: MemoryChannel) -> None:
    accepted = False

    async def accept() -> None:
        nonlocal accepted
        accepted = True

    session, _ = make(channel, authorize=lambda conn, event: event != "secret")
    with pytest.raises(Refused) as info:
        await session.start(["a", "secret"], accept=accept)
    assert (info.value.code, info.value.event) == ("forbidden", "secret")
    assert not accepted
    assert channel.stats()["subscriptions"] == 0

    fixed, _ = make(channel, events=["a"])
    with pytest.raises(Refused, match="not_offered"):
        await fixed.start(["b"])
    with pytest.raises(Refused, match="bad_event"):
        await make(channel)[0].start(["no spaces"])
    with pytest.raises(Refused, match="bad_since"):
        await make(channel)[0].start([], since="1-1")
    with pytest.raises(Refused, match="bad_since"):
        await make(channel)[0].start(["a"], since="not-an-id")
    assert channel.stats()["subscriptions"] == 0
    small, _ = make(channel, limits=Limits(max_subscriptions=1))
    with pytest.raises(Refused, match="too_many_subscriptions"):
        await small.start(["a", "b"])


async def test_check_connect_checks_as_start_does_without_a_session() -> None:
    asked: list[tuple[Any, str]] = []

    def authorize(connection: Any, event: str) -> bool:
        asked.append((connection, event))
        return event != "secret"

    assert await check_connect(["a", "b", "a"], authorize=authorize, connection="c") == ["a", "b"]
    assert asked == [("c", "a"), ("c", "b")]
    assert await check_connect([], fixed_events=["x", "y"]) == ["x", "y"]
    assert await check_connect("a") == ["a"]
    with pytest.raises(Refused) as info:
        await check_connect(["a", "secret"], authorize=authorize)
    assert (info.value.code, info.value.event) == ("forbidden", "secret")
    with pytest.raises(Refused, match="not_offered"):
        await check_connect(["b"], fixed_events=["a"])
    with pytest.raises(Refused, match="bad_since"):
        await check_connect([], since="1-1")
    with pytest.raises(Refused, match="too_many_subscriptions"):
        await check_connect(["a", "b"], limits=Limits(max_subscriptions=1))
    with pytest.raises(ValueError, match="invalid event names"):
        await check_connect(["a"], fixed_events=["no spaces"])


async def test_begin_subscribes_what_was_checked_without_asking_again(
    channel: MemoryChannel,
) -> None:
    asked: list[str] = []

    def authorize(connection: Any, event: str) -> bool:
        asked.append(event)
        return True

    first = await channel.publish("a", 1)
    await channel.publish("a", 2)
    names = await check_connect(["a", "b"], since=first.id, authorize=authorize)
    session, carrier = make(channel, authorize=authorize)
    await session.begin(names, first.id)
    assert asked == ["a", "b"]  # once each, by check_connect
    frames = await carrier.wait_for(2)
    assert frames[0]["payload"]["data"] == 2
    assert frames[1]["type"] == "recovered"
    assert list(session.subscribed) == ["a", "b"]
    bad, _ = make(channel)
    with pytest.raises(Refused, match="bad_since"):
        await bad.begin(["a"], "not-an-id")
    assert channel.subscribers("a") == [carrier]
    await session.begin([])  # nothing to do
    assert channel.stats()["subscriptions"] == 2


async def test_authorize_may_be_async_and_sees_the_connection(channel: MemoryChannel) -> None:
    seen: list[tuple[Any, str]] = []

    async def authorize(connection: Any, event: str) -> bool:
        seen.append((connection, event))
        return event.startswith("public.")

    session, carrier = make(channel, authorize=authorize, connection="conn-1")
    assert await session.receive(sub("public.a")) is None
    assert await session.receive(sub("public.b", "private.c")) is None
    frames = await carrier.wait_for(1)
    assert codes(frames) == ["forbidden"]
    assert "private.c" in frames[0]["payload"]["message"]
    assert list(session.subscribed) == ["public.a"]  # the refused frame subscribed nothing
    assert seen[0] == ("conn-1", "public.a")


async def test_a_failing_authorize_refuses(
    channel: MemoryChannel, caplog: pytest.LogCaptureFixture
) -> None:
    def authorize(connection: Any, event: str) -> bool:
        raise LookupError("no user store")

    session, carrier = make(channel, authorize=authorize)
    assert await session.receive(sub("a")) is None
    assert codes(await carrier.wait_for(1)) == ["forbidden"]
    assert "no user store" in caplog.text
    # Only a real True lets a subscription through, not a truthy value.
    truthy, carrier2 = make(channel, authorize=lambda c, e: "yes")
    assert await truthy.receive(sub("a")) is None
    assert codes(await carrier2.wait_for(1)) == ["forbidden"]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[" * 5000 + "]" * 5000, "bad_json"),
        ('"just a string"', "bad_frame"),
        ("[1, 2]", "bad_frame"),
        ('{"payload": {}}', "bad_frame"),
        ('{"type": 7}', "bad_frame"),
        ('{"type": "publish", "payload": {"name": "a", "data": 1}}', "unknown_type"),
        ('{"type": "subscribe"}', "bad_payload"),
        ('{"type": "subscribe", "payload": ["a"]}', "bad_payload"),
        ('{"type": "subscribe", "payload": {"events": "a"}}', "bad_payload"),
        ('{"type": "subscribe", "payload": {"events": []}}', "bad_payload"),
        ('{"type": "subscribe", "payload": {"events": [1]}}', "bad_event"),
        ('{"type": "subscribe", "payload": {"events": ["a b"]}}', "bad_event"),
        ('{"type": "subscribe", "payload": {"events": ["a"], "since": 5}}', "bad_since"),
        ('{"type": "subscribe", "payload": {"events": ["a"], "since": "x"}}', "bad_since"),
        ('{"type": "unsubscribe", "payload": {"events": null}}', "bad_payload"),
    ],
)
async def test_bad_frames_get_an_error_and_the_session_goes_on(
    channel: MemoryChannel, frame: str, code: str
) -> None:
    session, carrier = make(channel)
    assert await session.receive(frame) is None
    assert await session.receive(PING) is None
    frames = await carrier.wait_for(2)
    assert codes(frames) == [code]
    assert frames[1] == {"type": "pong"}
    assert session.errors == 0  # the good frame reset the count
    assert channel.stats()["subscriptions"] == 0  # client data never subscribed or published
    assert channel.stats()["published"] == 0


async def test_subscription_limits(channel: MemoryChannel) -> None:
    session, carrier = make(channel, limits=Limits(max_subscriptions=3, max_events_per_subscribe=2))
    assert await session.receive(sub("a", "b", "c")) is None
    assert await session.receive(sub("a", "b")) is None
    assert await session.receive(sub("c")) is None
    assert await session.receive(sub("c", "d")) is None
    assert await session.receive(sub("a")) is None  # already on: not a new subscription
    frames = await carrier.wait_for(2)
    assert codes(frames) == ["too_many_events", "too_many_subscriptions"]
    assert list(session.subscribed) == ["a", "b", "c"]


async def test_fixed_events_refuse_others(channel: MemoryChannel) -> None:
    session, carrier = make(channel, events=["a"])
    assert await session.receive(sub("b")) is None
    assert codes(await carrier.wait_for(1)) == ["not_offered"]


async def test_too_big_frames_close_with_1009(channel: MemoryChannel) -> None:
    session, _ = make(channel, limits=Limits(max_frame_bytes=100))
    assert await session.receive("x" * 101) == 1009
    assert await session.receive(b"x" * 101) == 1009
    assert await session.receive("é" * 51) == 1009  # 102 bytes in UTF-8
    assert await session.receive('{"type":"ping"}' + " " * 80) is None


async def test_garbage_in_a_row_closes_with_1008(channel: MemoryChannel) -> None:
    session, carrier = make(channel, limits=Limits(max_errors=3))
    assert await session.receive("x") is None
    assert await session.receive(PING) is None  # resets the count
    assert await session.receive("x") is None
    assert await session.receive("x") is None
    assert await session.receive("x") == 1008
    assert len(codes(await carrier.wait_for(5))) == 4


async def test_flooding_closes_with_1008(channel: MemoryChannel) -> None:
    session, carrier = make(channel, limits=Limits(max_messages_per_second=1.0, burst=3))
    results = [await session.receive(PING) for _ in range(4)]
    assert results == [None, None, None, 1008]
    assert len(await carrier.wait_for(3)) == 3


async def test_receive_after_end_is_ignored(channel: MemoryChannel) -> None:
    session, carrier = make(channel)
    session.end()
    assert await session.receive(sub("a")) is None
    assert channel.stats()["subscriptions"] == 0
    assert carrier.texts == []


async def test_a_closed_carrier_is_not_subscribed(channel: MemoryChannel) -> None:
    session, carrier = make(channel)
    await carrier.close(1000)
    assert await session.receive(sub("a")) is None
    assert channel.stats()["subscriptions"] == 0
    assert session.subscribed == {}


# -- fuzz ----------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
_payloads = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"events": st.one_of(_json, st.lists(st.one_of(st.text(max_size=20), _json), max_size=4))},
        optional={"since": _json},
    ),
)
_frames = st.one_of(
    st.builds(
        lambda kind, payload: json.dumps({"type": kind, "payload": payload}),
        st.one_of(st.sampled_from(["subscribe", "unsubscribe", "ping", "event"]), _json),
        _payloads,
    ),
    _json.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),
    st.integers(1, 20_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 20_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(60_000, 70_000).map(lambda n: json.dumps({"type": "ping", "pad": "x" * n})),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frames=st.lists(_frames, min_size=1, max_size=4))
def test_fuzz_receive_never_raises_and_recovers(frames: list[str | bytes]) -> None:
    async def run() -> None:
        channel = MemoryChannel(name="fuzz")
        carrier = RecordingCarrier()
        session = ProtocolSession(
            channel,
            carrier,
            limits=Limits(max_errors=1000, max_messages_per_second=float("inf")),
        )
        try:
            for frame in frames:
                assert await session.receive(frame) in (None, 1009)
            before = len(carrier.texts)
            assert await session.receive(sub("fuzz.ok")) is None
            assert await session.receive(PING) is None
            got = await carrier.wait_for(before + 1)
            assert got[-1] == {"type": "pong"}
            assert "fuzz.ok" in session.subscribed
            assert channel.stats()["published"] == 0
        finally:
            session.end()
            await channel.close(forget=True)

    asyncio.run(run())
