"""tbone_asgi.client against a real uvicorn server: order, reconnect, resume, refusals."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import connect as websockets_connect

from tbone.dispatch import MemoryChannel
from tbone_asgi import channel_route
from tbone_asgi import client as client_module
from tbone_asgi.__main__ import listen, main
from tbone_asgi.client import (
    Recovered,
    SubscribeFailed,
    Subscription,
    SubscriptionLost,
    SubscriptionRefused,
    subscribe,
)
from tests.demo.restartable import RestartableServer
from tests.demo.waiting import ready, take
from tests.support.asgi_server import wait_until
from tests.support.web_servers import small_buffer_socket

ROOT = Path(__file__).resolve().parents[2]
FAST = (0.02, 0.1)  # reconnect backoff for tests: first and max delay, in seconds


def make_app(channel: MemoryChannel, events: list[str] | None = None) -> Starlette:
    return Starlette(routes=[channel_route("/ws", channel, events=events)])


@pytest.fixture
async def channel() -> MemoryChannel:
    return MemoryChannel(name="client-test")


@pytest.fixture
async def server(channel: MemoryChannel) -> AsyncIterator[RestartableServer]:
    async with RestartableServer(make_app(channel)) as running:
        yield running


async def test_events_arrive_in_order_with_ids(
    server: RestartableServer, channel: MemoryChannel
) -> None:
    async with subscribe(server.ws_url(), events=["tick", "tock"]) as sub:
        await ready(sub)
        published = [await channel.publish("tick", {"n": n}) for n in range(20)]
        await channel.publish("other", {"n": -1})  # not subscribed: never delivered
        published.append(await channel.publish("tock", {"n": 20}))
        got = await take(sub, 21)
    assert [(e.name, e.data, e.id, e.channel) for e in got] == [
        (e.name, e.data, e.id, "client-test") for e in published
    ]
    assert sub.last_id == published[-1].id
    assert sub.connections == 1


async def test_reconnects_and_resumes_after_a_restart(
    server: RestartableServer, channel: MemoryChannel
) -> None:
    seen: list[Recovered] = []
    async with subscribe(
        server.ws_url(), events=["tick"], backoff=FAST, on_recovered=seen.append
    ) as sub:
        await ready(sub)
        first = await channel.publish("tick", 1)
        assert [e.id for e in await take(sub, 1)] == [first.id]

        await server.stop()  # uvicorn closes the websocket with 1012
        await sub.wait_disconnected(5)
        missed = [await channel.publish("tick", n) for n in (2, 3)]  # while nobody listens
        await server.start()  # the same port

        got = await take(sub, 2)
        assert [e.id for e in got] == [e.id for e in missed]
        assert [e.data for e in got] == [2, 3]
        assert sub.connections == 2
        assert seen == [Recovered("client-test", True, first.id)]
        assert sub.recoveries == seen

        await sub.ping()  # the resumed connection is live, not only replaying
        live = await channel.publish("tick", 4)
        assert [e.id for e in await take(sub, 1)] == [live.id]


async def test_an_incomplete_resume_is_surfaced(channel: MemoryChannel) -> None:
    server = RestartableServer(make_app(channel))
    await server.start()
    recovered = asyncio.Event()
    try:
        async with subscribe(
            server.ws_url(), events=["tick"], backoff=FAST, on_recovered=lambda _: recovered.set()
        ) as sub:
            await ready(sub)
            await channel.publish("tick", 1)
            before = (await take(sub, 1))[0]
            await server.stop()
            # A new process would have a new in-memory channel, with no history of the old one.
            await channel.close(forget=True)
            fresh = MemoryChannel(name="client-test")
            assert fresh is not channel
            assert fresh.epoch != channel.epoch
            server.app = make_app(fresh)
            await server.start()
            await asyncio.wait_for(recovered.wait(), 10)
            assert sub.recoveries == [Recovered("client-test", False, before.id)]
            await sub.ping()
            after = await fresh.publish("tick", 2)
            assert [e.id for e in await take(sub, 1)] == [after.id]
    finally:
        await server.stop()


#: What one replay was once capped at (it then said complete: false and the client went live).
OLD_CAP_BYTES = 16 * 1024 * 1024


async def test_a_long_catch_up_after_a_1013_comes_whole_then_live(
    channel: MemoryChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop stops taking events during a burst of 10 KB events: the client stops reading,
    # and the server closes it with 1013. It reconnects, resumes from the last id it queued
    # and gets the rest (more than a replay was once capped at) in one resume, complete.
    def small_buffers(url: str, **options: Any) -> Any:
        # Linux would otherwise let the kernel take in tens of MB for a client on loopback;
        # and no compression: the bytes on the wire are the bytes published.
        return websockets_connect(url, sock=small_buffer_socket(url), compression=None, **options)

    monkeypatch.setattr(client_module, "connect", small_buffers)
    app = Starlette(routes=[channel_route("/ws", channel, slow_timeout=0.5)])
    async with (
        RestartableServer(app) as server,
        subscribe(server.ws_url(), events=["e"], backoff=FAST, queue_size=10) as sub,
    ):
        await ready(sub)
        pad = "x" * 10_000
        published = [await channel.publish("e", {"n": n, "pad": pad}) for n in range(3000)]
        await wait_until(lambda: channel.stats()["closed_slow"] == 1, timeout=15)
        got = await take(sub, len(published), timeout=30)
        assert [e.id for e in got] == [e.id for e in published]  # in order, each once
        assert sub.connections == 2
        [recovered] = sub.recoveries
        assert (recovered.channel, recovered.complete) == ("client-test", True)
        resumed = published[[e.id for e in published].index(recovered.since) + 1 :]
        assert sum(e.size for e in resumed) > OLD_CAP_BYTES
        await sub.ping()  # live, not replaying
        live = await channel.publish("e", {"n": "live"})
        assert [e.id for e in await take(sub, 1)] == [live.id]
    assert sub.recoveries == [recovered]  # no gap reported


async def test_a_refused_subscription_ends_the_iteration(channel: MemoryChannel) -> None:
    async with (
        RestartableServer(make_app(channel, events=["allowed"])) as server,
        subscribe(server.ws_url(), events=["secret"], backoff=FAST) as sub,
    ):
        with pytest.raises(SubscriptionRefused) as caught:
            await take(sub, 1)
    assert caught.value.status == 403
    assert "403" in str(caught.value)
    assert sub.connections == 0


async def test_a_refusing_close_code_is_not_retried(
    server: RestartableServer, channel: MemoryChannel
) -> None:
    async with subscribe(server.ws_url(), events=["tick"], backoff=FAST) as sub:
        await ready(sub)
        # A frame over the server's 64 KiB limit: the server closes with 1009.
        assert sub._ws is not None
        await sub._ws.send("x" * (65 * 1024))
        with pytest.raises(SubscriptionRefused) as caught:
            await take(sub, 1)
    assert caught.value.code == 1009
    assert sub.connections == 1


async def test_gives_up_after_the_retries_run_out(channel: MemoryChannel) -> None:
    server = RestartableServer(make_app(channel))
    await server.start()
    url = server.ws_url()
    await server.stop()  # nothing listens on that port now
    async with subscribe(url, events=["tick"], retries=2, backoff=FAST) as sub:
        with pytest.raises(SubscriptionLost) as caught:
            await take(sub, 1)
    assert caught.value.attempts == 3
    assert isinstance(caught.value.__cause__, OSError)
    assert "retries=None" in str(caught.value)


async def test_subscribe_and_unsubscribe_while_connected(
    server: RestartableServer, channel: MemoryChannel
) -> None:
    async with subscribe(server.ws_url(), events=["a"]) as sub:
        await ready(sub)
        await sub.subscribe(["b"])  # awaits the server's answer
        await sub.unsubscribe(["a"])
        assert sub.events == ["b"]
        await channel.publish("a", "not any more")
        expected = await channel.publish("b", "yes")
        got = await take(sub, 1)
    assert [(e.name, e.id) for e in got] == [("b", expected.id)]


async def test_a_refused_subscribe_raises_and_the_connection_stays(
    channel: MemoryChannel,
) -> None:
    errors: list[dict[str, Any]] = []
    app = Starlette(
        routes=[channel_route("/ws", channel, authorize=lambda conn, event: event != "secret")]
    )
    async with (
        RestartableServer(app) as server,
        subscribe(server.ws_url(), events=["a"], on_error=errors.append) as sub,
    ):
        await ready(sub)
        with pytest.raises(SubscribeFailed) as caught:
            await sub.subscribe(["b", "secret"])
        assert caught.value.code == "forbidden"
        assert caught.value.events == ["b", "secret"]
        assert sub.events == ["a"]  # all or nothing, and not asked for again on reconnect
        assert [e["code"] for e in errors] == ["forbidden"]
        assert sub.errors == errors
        await channel.publish("b", "not subscribed")
        event = await channel.publish("a", 1)
        assert [e.id for e in await take(sub, 1)] == [event.id]
        await sub.subscribe(["b"])  # accepted: no error
        assert sub.events == ["a", "b"]


def test_bad_arguments_are_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match="ws://"):
        Subscription("http://127.0.0.1:1/ws")
    with pytest.raises(TypeError, match=r"events=\['tick'\]"):
        Subscription("ws://127.0.0.1:1/ws", "tick")
    with pytest.raises(ValueError, match="1 to 200 characters"):
        Subscription("ws://127.0.0.1:1/ws", ["a,b"])
    with pytest.raises(ValueError, match="1 to 200 characters"):
        Subscription("ws://127.0.0.1:1/ws", ["no spaces"])
    with pytest.raises(ValueError, match="retries"):
        Subscription("ws://127.0.0.1:1/ws", retries=-1)
    with pytest.raises(ValueError, match="queue_size"):
        Subscription("ws://127.0.0.1:1/ws", queue_size=0)
    with pytest.raises(ValueError, match="backoff"):
        Subscription("ws://127.0.0.1:1/ws", backoff=(1.0, 0.5))


def test_the_connect_url_carries_events_and_since() -> None:
    sub = Subscription("ws://h:1/ws?token=t&since=old", ["a", "b"], since="17-4")
    assert sub.connect_url() == "ws://h:1/ws?token=t&events=a,b&since=17-4"
    assert Subscription("ws://h:1/ws").connect_url() == "ws://h:1/ws"


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tbone_asgi",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except (asyncio.TimeoutError, TimeoutError):
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_listen_prints_json_lines(
    server: RestartableServer, channel: MemoryChannel
) -> None:
    first = await channel.publish("a", {"n": 1})
    rest = [await channel.publish("a", {"n": 2}), await channel.publish("a", {"text": "é"})]
    code, out, err = await _cli(
        "listen", server.ws_url(), "--events", "a", "--since", first.id, "--count", "2"
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines == [
        {"name": "a", "data": e.data, "id": e.id, "channel": "client-test"} for e in rest
    ]


async def test_cli_reports_a_refusal_and_bad_arguments(server: RestartableServer) -> None:
    app = Starlette(routes=[channel_route("/ws", "cli-refuse", events=["a"])])
    async with RestartableServer(app) as refusing:
        code, _, err = await _cli("listen", refusing.ws_url(), "--events", "b")
    assert code == 1
    assert "HTTP 403" in err
    code, _, err = await _cli("listen", server.ws_url(), "--events", "bad name!")
    assert code == 2
    assert "1 to 200 characters" in err
    code, _, err = await _cli("listen", "http://127.0.0.1:1/ws", "--events", "a")
    assert code == 2
    assert "ws://" in err


async def test_cli_retries_n_makes_n_plus_one_attempts_and_speaks_cli() -> None:
    # A real port that accepts TCP and closes at once: each attempt is one accepted connection.
    accepted = 0

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        code, out, err = await _cli("listen", f"ws://127.0.0.1:{port}/ws", "--retries", "2")
    assert (code, out) == (1, "")
    assert accepted == 3  # the first attempt and 2 retries
    notes = err.splitlines()
    assert len([n for n in notes if "could not connect (" in n and "reconnecting in" in n]) == 2
    assert "could not connect after 3 attempts in a row (--retries 2)" in notes[-1]
    assert "Leave out --retries to keep trying" in notes[-1]
    assert "retries=None" not in err
    assert "# connected" not in err


async def test_cli_retries_0_is_one_attempt_at_a_closed_port() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: the connection is refused
    code, _, err = await _cli("listen", f"ws://127.0.0.1:{port}/ws", "--retries", "0")
    assert code == 1
    assert "reconnecting in" not in err
    assert "could not connect after 1 attempt in a row (--retries 0)" in err
    assert "ConnectionRefusedError" in err


async def test_cli_retrying_forever_says_nothing_answers_and_what_retries_does() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tbone_asgi",
        "listen",
        f"ws://127.0.0.1:{port}/ws",
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    notes: list[str] = []
    try:
        while not notes or not notes[-1].startswith("# nothing answers"):
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, notes
            notes.append(line.decode())
    finally:
        proc.kill()
        await proc.wait()
    # After exactly NOTE_AFTER failed attempts (the backoff starts at 0.1 s: a second or two).
    assert len([n for n in notes if "could not connect (" in n]) == 3
    assert (
        f"# nothing answers at ws://127.0.0.1:{port}/ws: 3 attempts in a row failed" in (notes[-1])
    )
    assert "--retries N gives up after N + 1 failed attempts in a row" in notes[-1]


def test_cli_without_the_client_extra_says_so_in_one_line() -> None:
    # websockets missing, as in an environment without the client extra.
    code = (
        "import sys; sys.modules['websockets'] = None\n"
        "from tbone_asgi.__main__ import main\n"
        "sys.exit(main(['listen', 'ws://127.0.0.1:1/ws']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "python -m tbone_asgi: error: tbone_asgi.client needs the 'websockets' library: "
        "pip install 'tbone-asgi[client]'"
    ]


@pytest.mark.parametrize("bad", ["-1", "two"])
async def test_cli_refuses_a_bad_retries_value(bad: str) -> None:
    code, _, err = await _cli("listen", "ws://127.0.0.1:1/ws", "--retries", bad)
    assert code == 2
    assert f"argument --retries: expected a whole number >= 0, got '{bad}'" in err


def test_cli_help_says_what_retries_counts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["listen", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "retry a failed connection N times in a row, then exit with status 1: N + 1" in (
        help_text
    )


async def test_cli_says_when_it_connects_and_reconnects(
    server: RestartableServer, channel: MemoryChannel
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tbone_asgi",
        "listen",
        server.ws_url(),
        "--events",
        "a,b",
        "--count",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    notes: list[str] = []

    async def note_starting(prefix: str) -> str:
        assert proc.stderr is not None
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 10)).decode()
            assert line, "listen ended early: " + "".join(notes)
            notes.append(line)
            if line.startswith(prefix):
                return line.rstrip("\n")

    try:
        url = server.ws_url()
        assert await note_starting("# connected") == f"# connected to {url} (events: a, b)"
        await wait_until(lambda: channel.stats()["subscribers"] == 1)
        first = await channel.publish("a", 1)
        assert json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))["id"] == first.id
        await server.stop()
        await server.start()
        assert await note_starting("# reconnected") == (
            f"# reconnected to {url} (events: a, b; resuming after {first.id})"
        )
        await note_starting("# resumed after")  # the server's recovered frame
        second = await channel.publish("b", 2)
        assert json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))["id"] == second.id
        assert await asyncio.wait_for(proc.wait(), 10) == 0  # --count 2
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert len([n for n in notes if "connected to" in n]) == 2, notes


async def test_no_reconnect_storm_when_every_connection_is_closed_at_once() -> None:
    # A server that accepts and closes at once with 1013 (as one replaying a backlog bigger
    # than the connection's outbox would): the backoff must keep growing, not restart.
    loop = asyncio.get_running_loop()
    accepted: list[float] = []
    enough = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        accepted.append(loop.time())
        if len(accepted) == 6:
            enough.set()
        await send({"type": "websocket.close", "code": 1013, "reason": "too slow"})

    async with (
        RestartableServer(app, lifespan="off") as server,
        subscribe(server.ws_url(), events=["a"], backoff=(0.01, 0.2)) as sub,
    ):
        await asyncio.wait_for(enough.wait(), 10)
    gaps = [later - earlier for earlier, later in itertools.pairwise(accepted)]
    # Waits are drawn from [d/2, d] with d = 0.01, 0.02, 0.04, 0.08, 0.16: the fifth is >= 0.08.
    assert gaps[4] >= 0.08, gaps
    assert sub.connections >= 5  # the sixth may still be opening on the client side


async def test_a_failing_callback_is_logged_and_the_events_go_on(
    channel: MemoryChannel, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("bug in the caller's callback")

    app = Starlette(routes=[channel_route("/ws", channel, authorize=lambda c, e: e != "no")])
    async with (
        RestartableServer(app) as server,
        subscribe(server.ws_url(), events=["a"], on_error=broken) as sub,
    ):
        await ready(sub)
        with pytest.raises(SubscribeFailed):
            await sub.subscribe(["no"])
        event = await channel.publish("a", 1)
        assert [e.id for e in await take(sub, 1)] == [event.id]
    assert "bug in the caller's callback" in caplog.text


async def test_changes_made_while_disconnected_apply_at_the_next_connection(
    server: RestartableServer, channel: MemoryChannel
) -> None:
    async with subscribe(server.ws_url(), events=["a"], backoff=FAST) as sub:
        await ready(sub)
        first = await channel.publish("a", 1)
        assert [e.id for e in await take(sub, 1)] == [first.id]
        await server.stop()
        await sub.wait_disconnected()
        with pytest.raises(ConnectionError):
            await sub.ping()
        await sub.subscribe(["b"])  # nothing to wait for: asked for at the next connection
        await sub.unsubscribe(["a"])
        assert sub.events == ["b"]
        missed = await channel.publish("b", 2)
        await channel.publish("a", "no longer wanted")
        await server.start()
        assert [e.id for e in await take(sub, 1)] == [missed.id]
        await sub.ping()
        live = await channel.publish("b", 3)
        assert [e.id for e in await take(sub, 1)] == [live.id]


async def test_garbage_from_the_server_is_skipped_and_5xx_is_retried() -> None:
    attempts: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        attempts.append(1)
        if len(attempts) == 1:  # a server that is not ready yet: retried, not a refusal
            await send({"type": "websocket.http.response.start", "status": 503, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"starting"})
            return
        await send({"type": "websocket.accept"})
        for text in ("not json", "[1, 2]", '{"type": "from the future"}'):
            await send({"type": "websocket.send", "text": text})
        frame = {"type": "event", "payload": {"name": "a", "data": 1, "id": "7", "channel": "x"}}
        await send({"type": "websocket.send", "text": json.dumps(frame)})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async with (
        RestartableServer(app, lifespan="off") as server,
        subscribe(server.ws_url(), events=["a"], backoff=FAST) as sub,
    ):
        [event] = await take(sub, 1)
    assert (event.name, event.data, event.id, event.channel) == ("a", 1, "7", "x")
    assert len(attempts) == 2
    assert sub.connections == 1


async def test_listen_in_process_prints_lines_and_notes(
    server: RestartableServer, channel: MemoryChannel
) -> None:
    first = await channel.publish("a", {"n": 1})
    second = await channel.publish("a", {"n": 2})
    out, err = io.StringIO(), io.StringIO()
    code = await listen(server.ws_url(), ["a"], since=first.id, count=1, out=out, err=err)
    assert code == 0
    assert json.loads(out.getvalue()) == {
        "name": "a",
        "data": {"n": 2},
        "id": second.id,
        "channel": "client-test",
    }
    assert await listen(server.ws_url(), ["a"], count=0, out=out, err=err) == 0


async def test_listen_in_process_reports_a_lost_server() -> None:
    server = RestartableServer(Starlette())
    await server.start()
    url = server.ws_url()
    await server.stop()
    err = io.StringIO()
    assert await listen(url, ["a"], retries=0, out=io.StringIO(), err=err) == 1
    assert "could not connect after 1 attempt in a row (--retries 0)" in err.getvalue()


def test_main_rejects_a_bad_url_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["listen", "http://127.0.0.1:1/ws", "--events", "a"]) == 2
    assert "ws://" in capsys.readouterr().err


async def test_an_unreadable_since_is_a_gap_not_the_end(
    server: RestartableServer, channel: MemoryChannel
) -> None:
    # An id the channel cannot read (from another backend, say): the server closes with 1008
    # after a bad_since error. The client reports a gap and starts again from now.
    async with subscribe(server.ws_url(), events=["a"], since="not-an-id", backoff=FAST) as sub:
        await asyncio.wait_for(_first_recovery(sub), 10)
        assert sub.recoveries == [Recovered("", False, "not-an-id")]
        await ready(sub)
        event = await channel.publish("a", 1)
        assert [e.id for e in await take(sub, 1)] == [event.id]
    assert [e["code"] for e in sub.errors] == ["bad_since"]


async def _first_recovery(sub: Subscription) -> None:
    recovered = asyncio.Event()
    sub.on_recovered = lambda _: recovered.set()
    if not sub.recoveries:
        await recovered.wait()
