"""A private Redis Cluster for tests: 3 masters + 3 replicas on free ports below 55536.

Each node is a ``redis-server --cluster-enabled yes`` in a directory of its own (its
``nodes.conf`` survives a restart, so a restarted node rejoins the cluster as it was, or as a
replica if it was failed over meanwhile); nothing else is persisted. The nodes are joined by
``redis-cli --cluster create … --cluster-replicas 1``. A cluster bus port is the node's port +
10000, hence ports below 55536.

``RedisClusterNodes`` starts and stops nodes, fails a master over (``CLUSTER FAILOVER`` on its
replica, or by killing it), and waits until the cluster is healthy again (``wait_healthy``: every
slot served, every node agreeing, every replica's link to its master up) — after which the next
test may fail any master over again. The fixture ``redis_cluster`` is one cluster per test
module (starting one takes a few seconds). Blocking calls: from async code, call them with
``asyncio.to_thread``.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.support.redis_server import ping

#: Cluster bus ports are port + 10000; both must be below 65536.
MAX_PORT = 55535
MIN_PORT = 20000
#: How long a master may be unreachable before its replica takes over (ms). Short: tests wait
#: for failovers; production keeps Redis's 15000 (docs/operations.md).
NODE_TIMEOUT_MS = 1000
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A port below 55536 that is free now, as is port + 10000 (its cluster bus)."""
    for _ in range(1000):
        port = random.randint(MIN_PORT, MAX_PORT)
        if {port, port + 10000} & taken:
            continue
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def command(port: int, *args: str, timeout: float = 2.0) -> str:
    """``redis-cli -p port args…``'s output (raises if it fails)."""
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    ).stdout


def info(port: int, section: str) -> dict[str, str]:
    """``INFO section`` (or ``CLUSTER INFO`` for "cluster") of the node on ``port``."""
    args = ("cluster", "info") if section == "cluster" else ("info", section)
    out = command(port, *args)
    pairs = (line.split(":", 1) for line in out.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


@dataclass
class Node:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class RedisClusterNodes:
    """Six nodes: 3 masters with a replica each (which is which changes with failovers)."""

    def __init__(self, directory: Path, size: int = 6) -> None:
        self.directory = directory
        taken: set[int] = set()
        self.nodes: list[Node] = []
        for n in range(size):
            port = cluster_port(taken)
            taken |= {port, port + 10000}
            node_dir = directory / f"node{n}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(Node(port, node_dir))

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def seed_url(self) -> str:
        """``redis+cluster://`` naming one node only: the others are discovered."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    # Processes

    def start_node(self, node: Node) -> None:
        if node.running:
            return
        log = (node.directory / "redis.log").open("ab")
        try:
            node.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port", str(node.port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    # A replica may always take over, however long its link was down.
                    "--cluster-replica-validity-factor", "0",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(node.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while not ping(node.port):
            if node.process.poll() is not None or time.monotonic() > deadline:
                tail = (node.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"cluster node on {node.port} did not start:\n{tail}")
            time.sleep(0.01)

    def stop_node(self, node: Node, *, kill: bool = False) -> None:
        process, node.process = node.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def start(self) -> None:
        """Start every node, join them into a cluster (the first time), wait until healthy."""
        for node in self.nodes:
            self.start_node(node)
        if info(self.nodes[0].port, "cluster").get("cluster_known_nodes") == "1":
            subprocess.run(
                [
                    "redis-cli", "--cluster", "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas", "1", "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )  # fmt: skip
        self.wait_healthy()

    def stop(self) -> None:
        for node in self.nodes:
            self.stop_node(node)

    def restart(self) -> None:
        """Every node stopped, then started again: the cluster comes back as it was (each
        ``nodes.conf`` kept) but empty, as a single Redis restarted without persistence."""
        self.stop()
        self.start()

    def running_ports(self) -> list[int]:
        return [n.port for n in self.nodes if n.running]

    # Roles

    def role(self, node: Node) -> str:
        return info(node.port, "replication").get("role", "?")

    def masters(self) -> list[Node]:
        return [n for n in self.nodes if n.running and self.role(n) == "master"]

    def replica_of(self, master: Node) -> Node:
        """A running replica of ``master`` whose link to it is up."""
        for node in self.nodes:
            if not node.running or node is master:
                continue
            replication = info(node.port, "replication")
            if (
                replication.get("role") == "slave"
                and replication.get("master_port") == str(master.port)
                and replication.get("master_link_status") == "up"
            ):
                return node
        raise RuntimeError(f"master {master.port} has no replica with its link up")

    def master_of_slot(self, slot: int) -> Node:
        """The node serving ``slot`` now (as the first running master sees it)."""
        with redis.Redis(port=self.masters()[0].port) as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        ports = {n.port: n for n in self.nodes}
        for start, end, master, *_replicas in ranges:
            if int(start) <= slot <= int(end):
                return ports[int(master[1])]
        raise RuntimeError(f"slot {slot} has no master")

    # Failovers

    def failover(self, master: Node) -> Node:
        """``CLUSTER FAILOVER`` on a replica of ``master``; returns the new master once it is."""
        replica = self.replica_of(master)
        command(replica.port, "cluster", "failover")
        self.wait_until(lambda: self.role(replica) == "master", f"{replica.port} promoted")
        return replica

    def kill(self, node: Node) -> None:
        """SIGKILL ``node`` (its replica takes over after ``NODE_TIMEOUT_MS``)."""
        self.stop_node(node, kill=True)

    def wait_healthy(self) -> None:
        """Until every running node says ``cluster_state:ok`` with every slot assigned and ok,
        every running node is known to the others, and every replica's link is up."""

        def healthy() -> bool:
            running = [n for n in self.nodes if n.running]
            try:
                for node in running:
                    cluster = info(node.port, "cluster")
                    if cluster.get("cluster_state") != "ok":
                        return False
                    if cluster.get("cluster_slots_ok") != "16384":
                        return False
                    replication = info(node.port, "replication")
                    if replication.get("role") == "slave" and (
                        replication.get("master_link_status") != "up"
                    ):
                        return False
                    nodes = command(node.port, "cluster", "nodes")
                    if "fail" in nodes.replace("fail?", "fail"):
                        # Some node still thought failed (a restarted one not yet cleared).
                        alive = {str(n.port) for n in running}
                        for line in nodes.splitlines():
                            parts = line.split()
                            port = parts[1].split("@")[0].rsplit(":", 1)[1]
                            if "fail" in parts[2] and port in alive:
                                return False
            except (subprocess.SubprocessError, IndexError):
                return False
            return True

        self.wait_until(healthy, "cluster healthy")

    def restart_stopped(self) -> None:
        """Start the nodes that are not running (they rejoin) and wait until healthy."""
        for node in self.nodes:
            self.start_node(node)
        self.wait_healthy()

    def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        """Poll ``predicate`` until true; raise after ``READY_TIMEOUT``."""
        deadline = time.monotonic() + READY_TIMEOUT
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster: not {what} within {READY_TIMEOUT} s")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """One private Redis Cluster for the test session (per xdist worker). A test that fails a
    node over or stops nodes leaves it healthy again (``restart_stopped``) in a ``finally``."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli must be on PATH (a test prerequisite)")
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
