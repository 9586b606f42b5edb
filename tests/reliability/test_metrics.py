"""The Prometheus endpoint (tbone_asgi.metrics) over a real uvicorn, and its text format."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette

from tbone.dispatch import MemoryChannel, jsonenc
from tbone.dispatch.channels.redis import RedisChannel
from tbone.dispatch.testing import RecordingCarrier
from tbone_asgi import channel_route
from tbone_asgi.metrics import CONTENT_TYPE, MetricsApp, metrics_route, render_metrics
from tests.support.asgi_server import run_uvicorn
from tests.support.redis_server import RedisServer
from tests.support.web_servers import ws_connect

_SAMPLE = re.compile(r'^([a-z_]+)\{channel="((?:[^"\\]|\\.)*)",backend="([a-z]+)"\} (\S+)$')


def parse(text: str) -> dict[tuple[str, str], float]:
    """Samples by (metric, channel); checks every sample's metric was announced by # TYPE."""
    typed: set[str] = set()
    samples: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP ") or not line:
            continue
        match = _SAMPLE.match(line)
        assert match is not None, f"not a Prometheus sample line: {line!r}"
        metric, channel, _backend, value = match.groups()
        assert metric in typed, f"{metric} has no # TYPE line before its samples"
        samples[(metric, channel)] = float(value)
    return samples


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis-metrics")) as server:
        yield server


async def test_counters_over_uvicorn(redis_server: RedisServer) -> None:
    feed = MemoryChannel(name="feed")
    stream = RedisChannel(
        name="stream", url=redis_server.url, block_ms=200, probe_interval=1.0, backoff=(0.05, 0.2)
    )
    app = Starlette(routes=[channel_route("/ws", feed), metrics_route("/metrics")])
    async with run_uvicorn(app) as server, httpx.AsyncClient(trust_env=False) as http:
        async with ws_connect(server.ws_url("/ws?events=tick")) as ws:
            await ws.send('{"type":"ping"}')
            assert jsonenc.loads(await ws.recv()) == {"type": "pong"}  # subscribed by now
            for n in range(3):
                await feed.publish("tick", {"n": n})
            got = [jsonenc.loads(await ws.recv())["payload"]["data"] for _ in range(3)]
            assert got == [{"n": 0}, {"n": 1}, {"n": 2}]

            # A subscriber that stops reading is closed with 1013 and counted.
            stuck = RecordingCarrier(max_messages=2, slow_timeout=0.3)
            stuck.block()
            feed.subscribe("tick", stuck)
            for n in range(3, 8):
                await feed.publish("tick", {"n": n})
            assert (await stuck.wait_closed())[0] == 1013

            # The Redis reader reports its lag once it has read a batch.
            watcher = RecordingCarrier()
            stream.subscribe("x", watcher)
            await stream.ready()
            await stream.publish("x", 1)
            await watcher.wait_for(1)

            response = await http.get(server.url + "/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"] == CONTENT_TYPE
            samples = parse(response.text)
            assert samples[("tbone_channel_subscribers", "feed")] == 1
            assert samples[("tbone_channel_published_total", "feed")] == 8
            # The websocket's 8 frames, plus what the stuck carrier accepted before overflowing.
            assert samples[("tbone_channel_delivered_total", "feed")] >= 8
            assert samples[("tbone_channel_closed_slow_total", "feed")] == 1
            assert samples[("tbone_channel_consumer_running", "feed")] == 1
            assert samples[("tbone_channel_published_total", "stream")] == 1
            assert samples[("tbone_channel_subscribers", "stream")] == 1
            assert 0 <= samples[("tbone_channel_reader_lag_seconds", "stream")] < 5
            assert 0 <= samples[("tbone_channel_reader_last_answer_seconds", "stream")] < 5
            # A MemoryChannel reports no reader lag: absent, not a made-up 0.
            assert ("tbone_channel_reader_lag_seconds", "feed") not in samples

            head = await http.head(server.url + "/metrics")
            assert head.status_code == 200
            assert head.content == b""
            post = await http.post(server.url + "/metrics")
            assert post.status_code == 405
        await stream.close(forget=True)


async def test_pure_asgi_app_over_uvicorn() -> None:
    MemoryChannel(name="solo")
    app = MetricsApp(["solo", "never-created"])
    async with run_uvicorn(app) as server, httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(server.url + "/anything")
        put = await http.put(server.url + "/")
    assert response.status_code == 200
    samples = parse(response.text)
    assert samples[("tbone_channel_subscribers", "solo")] == 0
    # Asking for a name must not create the channel, nor invent samples for it.
    assert not any(channel == "never-created" for _, channel in samples)
    assert put.status_code == 405
    assert put.headers["allow"] == "GET, HEAD"


def test_label_values_are_escaped() -> None:
    MemoryChannel(name='we"ird\\name\nx')
    text = render_metrics()
    assert 'channel="we\\"ird\\\\name\\nx"' in text
    assert parse(text)[("tbone_channel_published_total", 'we\\"ird\\\\name\\nx')] == 0


def test_no_channels_no_samples() -> None:
    assert render_metrics([]) == ""


def test_a_single_name_is_refused_with_a_hint() -> None:
    with pytest.raises(TypeError, match=r"channels=\['pubsub'\]"):
        MetricsApp("pubsub")  # type: ignore[arg-type]


def test_a_failing_stats_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(MemoryChannel):
        def stats(self) -> dict[str, object]:
            raise RuntimeError("backend exploded")

    Broken(name="broken")
    MemoryChannel(name="fine")
    samples = parse(render_metrics())
    assert ("tbone_channel_subscribers", "fine") in samples
    assert not any(channel == "broken" for _, channel in samples)
    assert "stats() failed" in caplog.text


def test_backend_counters_are_served_where_reported() -> None:
    class WithGaps(MemoryChannel):
        def stats(self) -> dict[str, object]:
            return {**super().stats(), "gaps": 2, "last_answer_s": None}

    WithGaps(name="gappy")
    MemoryChannel(name="plain")
    samples = parse(render_metrics())
    assert samples[("tbone_channel_gaps_total", "gappy")] == 2
    assert samples[("tbone_channel_gaps_total", "plain")] == 0
    # None means "not known yet": no sample rather than a made-up number.
    assert ("tbone_channel_reader_last_answer_seconds", "gappy") not in samples
