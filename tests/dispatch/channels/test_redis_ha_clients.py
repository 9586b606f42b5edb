"""RedisChannel on the clients of Redis as it runs in production: Sentinel and Cluster.

The demo's ``redis+sentinel://`` and ``redis+cluster://`` URLs build those clients, so they
are tested here too, against a private Sentinel setup and a private 3-master cluster
(tests/support/redis_ha.py). Failovers and outages are in tests/reliability/.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from demo.backend import make_channel
from tbone.dispatch.channels.redis import RedisChannel
from tbone.dispatch.testing import RecordingCarrier
from tests.support.redis_ha import SERVICE, ClusterSetup, SentinelSetup, cli

OPTIONS: dict[str, Any] = {"block_ms": 200, "probe_interval": 1.0, "backoff": (0.05, 0.5)}


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    with SentinelSetup(Path(tmp_path_factory.mktemp("sentinel"))) as setup:
        yield setup


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    with ClusterSetup(Path(tmp_path_factory.mktemp("cluster"))) as setup:
        yield setup


@pytest.fixture
async def cluster_client(cluster: ClusterSetup) -> AsyncIterator[RedisCluster]:
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports])
    yield client
    await client.aclose()


async def round_trip(channel: RedisChannel, count: int = 3) -> list[str]:
    """Publish ``count`` events to a subscriber; check it got them and history holds them."""
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    await channel.ready()
    published = [(await channel.publish("e", {"n": n})).id for n in range(count)]
    frames = await carrier.wait_for(count)
    assert [f["payload"]["id"] for f in frames] == published
    past = await channel.history(since=published[0])
    assert (past.complete, [e.id for e in past]) == (True, published[1:])
    page = await channel.history_page(None, limit=2, max_bytes=1 << 20)
    assert (page.complete, page.more, [e.id for e in page]) == (True, True, published[:2])
    return published


# -- the client= argument ---------------------------------------------------------------------


def test_a_sync_cluster_client_is_refused_with_the_fix(cluster: ClusterSetup) -> None:
    with (
        redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0]) as client,
        pytest.raises(TypeError, match=r"redis\.asyncio\.Redis or RedisCluster") as info,
    ):
        RedisChannel(name="sync-cluster", client=client)  # type: ignore[arg-type]
    assert "the sync redis.Redis and redis.RedisCluster cannot be used" in str(info.value)


async def test_sentinel_master_for_is_a_client_like_any(sentinels: SentinelSetup) -> None:
    sentinel = Sentinel(sentinels.sentinel_addresses)
    master = sentinel.master_for(SERVICE)
    channel = RedisChannel(name="via-sentinel", client=master, **OPTIONS)
    try:
        await round_trip(channel)
        # The reader reads from the master Sentinel names, on a connection of its own.
        clients = cli(sentinels.master_port(), "CLIENT", "LIST")
        assert "cmd=xread" in clients
    finally:
        await channel.close(forget=True)
        for client in (master, *sentinel.sentinels):
            await client.aclose()


async def test_each_channel_lives_in_the_slot_of_its_one_key(
    cluster: ClusterSetup, cluster_client: RedisCluster
) -> None:
    channels = [RedisChannel(name=f"slot{n}", client=cluster_client, **OPTIONS) for n in "abc"]
    try:
        for channel in channels:
            published = await round_trip(channel)
            # Stored on the master of the key's slot: one key, one slot, one master.
            port = cluster.port_of_key(channel.key)
            assert cli(port, "XLEN", channel.key) == str(len(published))
    finally:
        for channel in channels:
            await channel.close(forget=True)


async def test_a_slot_moved_to_another_master_is_followed(
    cluster: ClusterSetup, cluster_client: RedisCluster
) -> None:
    channel = RedisChannel(name="resharded", client=cluster_client, **OPTIONS)
    carrier = RecordingCarrier()
    channel.subscribe("e", carrier)
    try:
        await channel.ready()
        before = await channel.publish("e", "before")
        await carrier.wait_for(1)
        source = cluster.port_of_key(channel.key)
        target = next(port for port in cluster.ports if port != source)
        await asyncio.to_thread(cluster.move_slot_of, channel.key, target)
        assert cluster.port_of_key(channel.key) == target
        # The reader was told MOVED, asks the cluster client again, and reads on there.
        after = await channel.publish("e", "after")
        frames = await carrier.wait_for(2, timeout=10)
        assert [f["payload"]["id"] for f in frames] == [before.id, after.id]
        assert (channel.stats()["gaps"], channel.stats()["reconnects"]) == (0, 1)
        assert cli(target, "XLEN", channel.key) == "2"
    finally:
        await channel.close(forget=True)


# -- the demo's URLs --------------------------------------------------------------------------


async def test_the_demo_sentinel_url(sentinels: SentinelSetup) -> None:
    hosts = ",".join(f"{host}:{port}" for host, port in sentinels.sentinel_addresses)
    channel = make_channel(f"redis+sentinel://{hosts}/{SERVICE}/0", name="demo-sentinel")
    assert isinstance(channel, RedisChannel)
    client = channel._client
    assert isinstance(client, aioredis.Redis)
    try:
        await round_trip(channel)
    finally:
        await channel.close(forget=True)
        await client.aclose()
        for sentinel in client.connection_pool.sentinel_manager.sentinels:
            await sentinel.aclose()


async def test_the_demo_cluster_url(cluster: ClusterSetup) -> None:
    hosts = ",".join(f"127.0.0.1:{port}" for port in cluster.ports[:2])  # any of them will do
    channel = make_channel(f"redis+cluster://{hosts}", name="demo-cluster")
    assert isinstance(channel, RedisChannel)
    client = channel._client
    assert isinstance(client, RedisCluster)
    try:
        await round_trip(channel)
    finally:
        await channel.close(forget=True)
        await client.aclose()


def test_the_demo_urls_name_what_they_need() -> None:
    sentinel = make_channel("redis+sentinel://u:p%40ss@h1:1,[::1]:2,h3/svc/3", name="demo-s")
    assert isinstance(sentinel, RedisChannel)
    pool = sentinel._client.connection_pool
    settings = pool.connection_kwargs
    assert (settings["db"], settings["username"], settings["password"]) == (3, "u", "p@ss")
    assert pool.service_name == "svc"
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2, 26379]
    cluster = make_channel("redis+cluster://h1:7000,h2", name="demo-c")
    assert isinstance(cluster._client, RedisCluster)
    for bad, reason in [
        ("redis+sentinel://h1:26379", "name the service"),
        ("redis+sentinel://h1:26379/svc/zero", "name the service"),
        ("redis+sentinel://h1:port/svc", "not host:port"),
        ("redis+cluster://h1:7000/0", "no path"),
    ]:
        with pytest.raises(ValueError, match=reason):
            make_channel(bad, name="demo-bad")
