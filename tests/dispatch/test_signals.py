"""Signal behaviour, after what Django's tests/dispatch and blinker's tests check, for this API."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from typing import Any

import pytest

from tbone.dispatch import Signal, receiver


class Sender:
    pass


def test_the_seed_example_works_as_written() -> None:
    post_init = Signal()
    calls = []

    def on_init(sender: Any, **kwargs: Any) -> None:
        calls.append((sender, kwargs))

    post_init.connect(on_init)

    class App:
        pass

    async def main() -> None:
        # The seed's fire-and-forget form: runs after the current step, not inline.
        asyncio.ensure_future(post_init.send(sender=App))  # noqa: RUF006
        assert calls == []
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))

    asyncio.run(main())
    assert calls == [(App, {})]


async def test_receivers_get_sender_and_kwargs_in_registration_order() -> None:
    sig = Signal()
    order = []

    def first(sender: Any, **kwargs: Any) -> str:
        order.append(("first", sender, kwargs))
        return "one"

    async def second(sender: Any, **kwargs: Any) -> str:
        await asyncio.sleep(0)
        order.append(("second", sender, kwargs))
        return "two"

    def third(sender: Any, instance: int) -> str:  # no **kwargs needed
        order.append(("third", sender, {"instance": instance}))
        return "three"

    for fn in (first, second, third):
        sig.connect(fn)
    result = await sig.send(Sender, instance=7)
    assert result == [(first, "one"), (second, "two"), (third, "three")]
    assert [o[0] for o in order] == ["first", "second", "third"]
    assert all(o[1] is Sender and o[2] == {"instance": 7} for o in order)


async def test_async_callable_objects_and_partials() -> None:
    sig = Signal()

    class Handler:
        async def __call__(self, sender: Any, **kwargs: Any) -> str:
            await asyncio.sleep(0)
            return "object"

    async def tagged(tag: str, sender: Any, **kwargs: Any) -> str:
        return tag

    handler = Handler()
    sig.connect(handler)
    sig.connect(functools.partial(tagged, "partial"), weak=False)
    assert [r for _, r in await sig.send(None)] == ["object", "partial"]


async def test_sender_filtering() -> None:
    sig = Signal()
    a, b = Sender(), Sender()
    got = []
    sig.connect(lambda sender, **kw: got.append(("a", sender)), sender=a, weak=False)
    sig.connect(lambda sender, **kw: got.append(("any", sender)), weak=False)
    await sig.send(a)
    await sig.send(b)
    assert got == [("a", a), ("any", a), ("any", b)]
    assert sig.has_receivers(a)
    assert sig.has_receivers(b)


async def test_a_dead_sender_does_not_pass_its_receivers_to_a_new_object() -> None:
    sig = Signal()
    got = []

    def on(sender: Any, **kw: Any) -> None:
        got.append(sender)

    sender = Sender()
    sig.connect(on, sender=sender)
    assert sig.has_receivers(sender)
    del sender
    gc.collect()
    # Whatever id the next objects get, none of them is the dead sender.
    for _ in range(100):
        await sig.send(Sender())
    assert got == []
    assert not sig.has_receivers()


async def test_unhashable_and_non_weakrefable_senders() -> None:
    sig = Signal()
    got = []
    sig.connect(lambda sender, **kw: got.append(sender), sender="strings-work", weak=False)
    await sig.send("strings-work")
    await sig.send("other")
    assert got == ["strings-work"]


async def test_connecting_twice_is_one_connection() -> None:
    sig = Signal()
    calls = []

    def on(sender: Any, **kw: Any) -> None:
        calls.append(1)

    sig.connect(on)
    sig.connect(on)
    sig.connect(lambda sender, **kw: calls.append(2), dispatch_uid="uid", weak=False)
    sig.connect(lambda sender, **kw: calls.append(3), dispatch_uid="uid", weak=False)
    await sig.send(None)
    assert calls == [1, 2]


async def test_weak_receivers_are_garbage_collected() -> None:
    sig = Signal()

    def on(sender: Any, **kw: Any) -> None:
        pass

    sig.connect(on)
    assert sig.has_receivers()
    del on
    gc.collect()
    assert not sig.has_receivers()
    assert sig._connections == ()
    assert await sig.send(None) == []


async def test_bound_methods_live_as_long_as_their_instance() -> None:
    sig = Signal()

    class Listener:
        def __init__(self) -> None:
            self.calls = 0

        def on(self, sender: Any, **kw: Any) -> None:
            self.calls += 1

    listener = Listener()
    sig.connect(listener.on)  # a new bound-method object, dropped at once
    gc.collect()
    await sig.send(None)
    assert listener.calls == 1
    assert sig.disconnect(listener.on) is True  # yet another bound-method object
    await sig.send(None)
    assert listener.calls == 1
    sig.connect(listener.on)
    del listener
    gc.collect()
    assert not sig.has_receivers()


async def test_weak_false_keeps_lambdas_alive() -> None:
    sig = Signal()
    got = []
    sig.connect(lambda sender, **kw: got.append("weak"))  # dies at once: the known trap
    sig.connect(lambda sender, **kw: got.append("strong"), weak=False)
    gc.collect()
    await sig.send(None)
    assert got == ["strong"]


async def test_disconnect() -> None:
    sig = Signal()
    sender = Sender()

    def on(sender: Any, **kw: Any) -> None:
        pass

    sig.connect(on, sender=sender)
    assert sig.disconnect(on) is False  # connected for one sender, not for any
    assert sig.disconnect(on, sender=sender) is True
    assert sig.disconnect(on, sender=sender) is False
    sig.connect(on, dispatch_uid="x")
    assert sig.disconnect(dispatch_uid="x") is True
    with pytest.raises(TypeError, match="receiver or its dispatch_uid"):
        sig.disconnect()


async def test_disconnect_during_send_affects_the_next_send() -> None:
    sig = Signal()
    calls = []

    def first(sender: Any, **kw: Any) -> None:
        calls.append("first")
        sig.disconnect(second)
        sig.connect(third)

    def second(sender: Any, **kw: Any) -> None:
        calls.append("second")

    def third(sender: Any, **kw: Any) -> None:
        calls.append("third")

    sig.connect(first)
    sig.connect(second)
    await sig.send(None)
    assert calls == ["first", "second"]  # the snapshot taken when the send started
    calls.clear()
    await sig.send(None)
    assert calls == ["first", "third"]


async def test_the_first_exception_propagates() -> None:
    sig = Signal()
    calls = []

    def bad(sender: Any, **kw: Any) -> None:
        raise ValueError("boom")

    def after(sender: Any, **kw: Any) -> None:
        calls.append("after")

    sig.connect(bad)
    sig.connect(after)
    with pytest.raises(ValueError, match="boom"):
        await sig.send(None)
    assert calls == []


async def test_send_robust_runs_everything_and_returns_exceptions() -> None:
    sig = Signal()

    async def bad(sender: Any, **kw: Any) -> None:
        raise ValueError("boom")

    def good(sender: Any, **kw: Any) -> str:
        return "ok"

    sig.connect(bad)
    sig.connect(good)
    (r1, e1), (r2, ok) = await sig.send_robust(None)
    assert (r1, r2, ok) == (bad, good, "ok")
    assert isinstance(e1, ValueError)


async def test_send_robust_lets_cancellation_through() -> None:
    sig = Signal()
    started = asyncio.Event()

    async def slow(sender: Any, **kw: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    sig.connect(slow)
    task = asyncio.ensure_future(sig.send_robust(None))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_send_nowait_keeps_its_task_and_logs_errors(caplog: pytest.LogCaptureFixture) -> None:
    sig = Signal("post_save")
    done = asyncio.Event()

    def bad(sender: Any, **kw: Any) -> None:
        raise RuntimeError("receiver failed")

    def good(sender: Any, **kw: Any) -> None:
        done.set()

    sig.connect(bad)
    sig.connect(good)
    with caplog.at_level(logging.ERROR, logger="tbone.dispatch.signals"):
        task = sig.send_nowait(Sender)
        assert task in sig._tasks  # referenced: it cannot be garbage collected mid-flight
        del task
        gc.collect()
        await asyncio.wait_for(done.wait(), 5)
        while sig._tasks:
            await asyncio.wait(list(sig._tasks))
    assert "receiver failed" in caplog.text
    assert "'post_save'" in caplog.text


def test_send_nowait_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        Signal().send_nowait(None)


async def test_receiver_decorator() -> None:
    a, b = Signal(), Signal()
    got = []

    @receiver(a)
    def on_a(sender: Any, **kw: Any) -> None:
        got.append("a")

    @receiver([a, b], dispatch_uid="both")
    async def on_both(sender: Any, **kw: Any) -> None:
        got.append("both")

    await a.send(None)
    await b.send(None)
    assert got == ["a", "both", "both"]
    assert on_a.__name__ == "on_a"  # returned unchanged


async def test_connected_to() -> None:
    sig = Signal()
    got = []
    with sig.connected_to(lambda sender, **kw: got.append(sender)):
        await sig.send(1)
    await sig.send(2)
    assert got == [1]
    assert not sig.has_receivers()


def test_connect_refuses_non_callables() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        Signal().connect(42)  # type: ignore[arg-type]


async def test_a_sync_receiver_returning_an_awaitable_is_awaited() -> None:
    sig = Signal()

    async def work() -> str:
        return "awaited"

    def wrapper(sender: Any, **kw: Any) -> Any:
        return work()

    sig.connect(wrapper)
    assert await sig.send(None) == [(wrapper, "awaited")]
    assert repr(sig).startswith("<Signal receivers=1")
    assert sig.receivers() == [wrapper]
