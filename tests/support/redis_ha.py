"""Redis as it runs in production, privately for tests: Sentinel (failover) and Cluster.

``SentinelSetup(root)``: a master, a replica and three Sentinels watching them (quorum 2), all
on free 127.0.0.1 ports, each a :class:`~tests.support.redis_server.RedisServer`::

    with SentinelSetup(tmp_path) as ha:          # started, Sentinels agree on the topology
        ha.sentinel_addresses                     # [("127.0.0.1", port), ...]
        old = ha.master_port()
        ha.failover()                             # SENTINEL FAILOVER
        new = ha.wait_switched(old)               # every Sentinel names the new master

``ClusterSetup(root)``: three masters without replicas (``redis-cli --cluster create``), each
with an fsynced AOF and ``cluster-require-full-coverage no``, so a killed master takes down
its own slots only and comes back with its data on :meth:`ClusterSetup.restart`.

Both talk to the servers through ``redis-cli`` (installed with redis-server), which keeps
these helpers free of the client library under test. Every wait is for a condition, checked
every 50 ms, bounded by a deadline. The helpers block: async tests call the waits through
``asyncio.to_thread``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.redis_server import RedisServer, free_port, require_redis_server

__all__ = ["ClusterSetup", "SentinelSetup", "cli", "wait_for"]

T = TypeVar("T")

SERVICE = "mymaster"
WAIT = 30.0  # seconds any topology change may take on a loaded machine


def _redis_cli() -> str:
    require_redis_server()  # same package, same message when it is missing
    path = shutil.which("redis-cli")
    if path is None:  # pragma: no cover - installed together with redis-server
        pytest.fail("redis-cli is not installed: apt-get install redis-tools")
    return path


def cli(port: int, *args: str, timeout: float = 5.0) -> str:
    """``redis-cli -p <port> <args>``'s output (raw, stripped); '' when it fails to connect."""
    try:
        done = subprocess.run(
            [_redis_cli(), "-h", "127.0.0.1", "-p", str(port), "--raw", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def info(port: int, *section: str) -> dict[str, str]:
    """``INFO <section>`` (or ``CLUSTER INFO``) as a dict ({} when the server does not answer)."""
    pairs = (line.split(":", 1) for line in cli(port, *section).splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


def wait_for(
    check: Callable[[], T | None], what: str, timeout: float = WAIT, interval: float = 0.05
) -> T:
    """Return the first truthy ``check()``; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout}s: {what}")
        time.sleep(interval)


S = TypeVar("S", bound="_Setup")


class _Setup:
    """Several redis-server processes started together: ``with`` starts them (all or none
    left running) and stops every one of them."""

    def start(self) -> None:
        raise NotImplementedError

    def processes(self) -> list[RedisServer]:
        raise NotImplementedError

    def stop(self) -> None:
        for server in self.processes():
            server.__exit__(None, None, None)

    def __enter__(self: S) -> S:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class SentinelSetup(_Setup):
    """A master, one replica and three Sentinels (see the module docstring)."""

    def __init__(self, root: Path, *, down_after_ms: int = 1000) -> None:
        self.root = root
        self.down_after_ms = down_after_ms
        # A full sync starts at once (Redis waits 5 s for more replicas to join by default).
        sync_now = ["--repl-diskless-sync-delay", "0"]
        master = RedisServer(root / "master", args=sync_now)
        replica = RedisServer(
            root / "replica", args=[*sync_now, "--replicaof", "127.0.0.1", str(master.port)]
        )
        self.servers = {server.port: server for server in (master, replica)}
        self._first_master = master.port
        self.sentinels: list[RedisServer] = []
        for number in range(3):
            data_dir = root / f"sentinel{number}"
            data_dir.mkdir(parents=True, exist_ok=True)
            config = data_dir / "sentinel.conf"
            self.sentinels.append(RedisServer(data_dir, args=["--sentinel"], config=config))

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def start(self) -> None:
        """Start every process and wait until each Sentinel knows the replica and its peers."""
        for server in self.servers.values():
            server.start()
        replica = next(p for p in self.servers if p != self._first_master)
        wait_for(
            lambda: info(replica, "INFO", "replication").get("master_link_status") == "up",
            "the replica is in sync with the master",
        )
        ids = [f"{number + 1:040x}" for number in range(len(self.sentinels))]
        for sentinel, myid in zip(self.sentinels, ids, strict=True):
            assert sentinel.config is not None
            # Short timeouts: a dead master is found in down_after_ms, and a failover that
            # stalls is given up (and may be tried again) after a few seconds, not minutes.
            # The replica and the other Sentinels are written in, as Sentinel itself records
            # them once it found them: otherwise finding them takes seconds of hello messages.
            lines = [
                f"sentinel myid {myid}",
                f"sentinel monitor {SERVICE} 127.0.0.1 {self._first_master} 2",
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
                f"sentinel failover-timeout {SERVICE} 4000",
                f"sentinel parallel-syncs {SERVICE} 1",
                f"sentinel known-replica {SERVICE} 127.0.0.1 {replica}",
                *(
                    f"sentinel known-sentinel {SERVICE} 127.0.0.1 {other.port} {other_id}"
                    for other, other_id in zip(self.sentinels, ids, strict=True)
                    if other is not sentinel
                ),
            ]
            sentinel.config.write_text("\n".join(lines) + "\n")
            sentinel.start()
        for sentinel in self.sentinels:
            wait_for(
                lambda port=sentinel.port: self._sentinel_sees_all(port),
                f"sentinel {sentinel.port} knows the replica and the two other sentinels",
            )

    def _sentinel_sees_all(self, port: int) -> bool:
        fields = _pairs(cli(port, "SENTINEL", "MASTER", SERVICE))
        return (
            fields.get("num-slaves") == "1"
            and fields.get("num-other-sentinels") == "2"
            and fields.get("flags") == "master"
        )

    def master_port(self, sentinel: int = 0) -> int:
        """The master's port as Sentinel number ``sentinel`` names it."""
        answer = cli(self.sentinels[sentinel].port, "SENTINEL", "get-master-addr-by-name", SERVICE)
        return int(answer.split()[1])

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: promote the replica now, without asking the other Sentinels."""
        answer = cli(self.sentinels[0].port, "SENTINEL", "FAILOVER", SERVICE)
        assert answer == "OK", answer

    def cut_replication(self) -> None:
        """The master stops feeding its replica: the replica falls behind, as a slow link
        would leave it, and every write from now on reaches the master only.

        The replica's link is closed and its reconnections refused (the default user may no
        longer PSYNC), in one MULTI; other clients and the Sentinels are not affected.
        """
        master = str(self.master_port())
        done = subprocess.run(
            [_redis_cli(), "-h", "127.0.0.1", "-p", master],
            input="MULTI\nACL SETUSER default -psync -sync -replconf\n"
            "CLIENT KILL TYPE replica\nEXEC\n",
            capture_output=True,
            text=True,
            timeout=5.0,
            check=True,
        )
        # EXEC's answers: OK for the ACL change, then how many replica links were closed.
        assert done.stdout.split()[-2:] == ["OK", "1"], done.stdout

    def kill_master(self) -> int:
        """SIGKILL the master (no shutdown, no last write to its replica); its port."""
        port = self.master_port()
        self.servers[port].kill()
        return port

    def wait_switched(self, old: int, timeout: float = WAIT) -> int:
        """Wait until every Sentinel names a master other than ``old``, and it is one."""

        def switched() -> int | None:
            ports = {self.master_port(n) for n in range(len(self.sentinels))}
            if len(ports) != 1 or old in ports:
                return None
            [new] = ports
            return new if info(new, "INFO", "replication").get("role") == "master" else None

        return wait_for(switched, f"the Sentinels moved the master away from {old}", timeout)

    def wait_demoted(self, port: int, timeout: float = WAIT) -> None:
        """Wait until the old master at ``port`` was turned into a replica (it refuses writes)."""
        wait_for(
            lambda: info(port, "INFO", "replication").get("role") == "slave",
            f"the old master {port} is a replica",
            timeout,
        )

    def processes(self) -> list[RedisServer]:
        return [*self.sentinels, *self.servers.values()]


class ClusterSetup(_Setup):
    """Three cluster masters, no replicas (see the module docstring)."""

    def __init__(self, root: Path, *, masters: int = 3, node_timeout_ms: int = 1000) -> None:
        common = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",  # in the node's data dir: a restart keeps its identity and slots
            "--cluster-node-timeout",
            str(node_timeout_ms),
            # One master down takes down its own slots, not the whole cluster.
            "--cluster-require-full-coverage",
            "no",
        ]
        # The bus port is given (Redis >= 7): the default, port + 10000, may be taken.
        self.nodes = [
            RedisServer(
                root / f"node{n}",
                persist=True,
                args=[*common, "--cluster-port", str(free_port())],
            )
            for n in range(masters)
        ]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self) -> None:
        """Start the nodes, join them into one cluster and wait until every slot is served."""
        for node in self.nodes:
            node.start()
        done = subprocess.run(
            [
                _redis_cli(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        self.wait_ok()

    def wait_ok(self, timeout: float = WAIT) -> None:
        """Wait until every node says the cluster is ok, with all slots and all nodes known."""
        count = str(len(self.nodes))

        def ok(port: int) -> bool:
            state = info(port, "CLUSTER", "INFO")
            return (
                state.get("cluster_state") == "ok"
                and state.get("cluster_slots_ok") == "16384"
                and state.get("cluster_known_nodes") == count
            )

        wait_for(lambda: all(ok(port) for port in self.ports), "the cluster is ok", timeout)

    def port_of_key(self, key: str) -> int:
        """The port of the master that serves ``key``'s slot."""
        asked = next(n.port for n in self.nodes if n.process and n.process.poll() is None)
        slot = int(cli(asked, "CLUSTER", "KEYSLOT", key))
        for line in cli(asked, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2]:
                continue
            for served in fields[8:]:
                low, _, high = served.partition("-")
                if int(low) <= slot <= int(high or low):
                    return int(fields[1].split(":")[1].split("@")[0])
        raise AssertionError(f"no master serves slot {slot} of {key!r}")

    def move_slot_of(self, key: str, port: int) -> None:
        """Move the slot of ``key``, with its keys, to the master at ``port`` (a resharding
        step, as ``redis-cli --cluster reshard`` does it for each slot)."""
        source = self.port_of_key(key)
        slot = cli(source, "CLUSTER", "KEYSLOT", key)
        ids = {p: cli(p, "CLUSTER", "MYID") for p in (source, port)}
        assert cli(port, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source]) == "OK"
        assert cli(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[port]) == "OK"
        while keys := cli(source, "CLUSTER", "GETKEYSINSLOT", slot, "100").split():
            moved = cli(source, "MIGRATE", "127.0.0.1", str(port), "", "0", "5000", "KEYS", *keys)
            assert moved == "OK", moved
        # The new owner first, then the old one, then the others (as redis-cli does).
        for other in sorted(self.ports, key=lambda p: (p != port, p != source)):
            assert cli(other, "CLUSTER", "SETSLOT", slot, "NODE", ids[port]) == "OK"
        self.wait_ok()

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def processes(self) -> list[RedisServer]:
        return self.nodes


def _pairs(raw: str) -> dict[str, str]:
    # --raw prints a flat reply one element a line: name, value, name, value...
    lines = raw.splitlines()
    return dict(zip(lines[::2], lines[1::2], strict=False))
