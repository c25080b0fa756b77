"""A cuttable link between one instance and its broker, on each kind of broker.

``await Partition.start(cluster)`` puts ``tests.support.tcp_proxy.TcpProxy`` proxies between the
instance started with ``partition.env`` (``cluster.start(1, env=partition.env)``) and the
broker; the other instances connect directly. ``pause``, ``cut`` and ``resume`` act on every
proxy at once (see ``TcpProxy`` for what each does to the connections):

* ``redis``: one proxy in front of the one Redis, the instance's ``LIVEBOARD_REDIS_URL``.
* ``redis-cluster``: one proxy in front of each node (6: masters and replicas, so a failover
  stays behind them), and ``LIVEBOARD_REDIS_ADDRESS_MAP`` mapping each node's announced address
  to its proxy. The instance keeps the cluster's URL: its nodes are mapped too, so every
  connection it makes (publisher, presence, each shard's subscriber, the slots map reads) goes
  through a proxy. ``check_used`` asserts that each master's proxy carried connections (a
  replica's has none unless it is promoted).
* ``postgres``: one proxy in front of the PostgreSQL server, in the instance's
  ``LIVEBOARD_DATABASE_URL``: the broker's link is the instance's database link too, so a
  partition takes the instance's store away as well (what a test can expect of it differs:
  see each test's docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support.cluster import Cluster
from tests.support.redis_cluster import RedisClusterNodes, command
from tests.support.tcp_proxy import TcpProxy


class Partition:
    """Proxies between one instance and ``cluster``'s broker; see the module docstring."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        #: target port → the proxy in front of it
        self.proxies: dict[int, TcpProxy] = {}
        #: The environment of the instance behind the proxies.
        self.env: dict[str, str] = {}

    @classmethod
    async def start(cls, cluster: Cluster) -> Partition:
        partition = cls(cluster)
        try:
            await partition._start()
        except BaseException:
            await partition.aclose()
            raise
        return partition

    async def _start(self) -> None:
        kind = self.cluster.kind
        if kind == "postgres":
            url = urlsplit(self.cluster.database_url)
            assert url.hostname is not None
            proxy = await self._proxy(url.hostname, url.port or 5432)
            netloc = url.netloc.rpartition("@")
            userinfo = netloc[0] + netloc[1]
            proxied = url._replace(netloc=f"{userinfo}127.0.0.1:{proxy.port}")
            self.env = {"LIVEBOARD_DATABASE_URL": urlunsplit(proxied)}
            return
        redis = self.cluster.redis
        if isinstance(redis, RedisClusterNodes):
            items = []
            for node in redis.nodes:
                proxy = await self._proxy("127.0.0.1", node.port)
                items.append(f"127.0.0.1:{node.port}=127.0.0.1:{proxy.port}")
            self.env = {"LIVEBOARD_REDIS_ADDRESS_MAP": ",".join(items)}
            return
        proxy = await self._proxy("127.0.0.1", redis.port)
        self.env = {"LIVEBOARD_REDIS_URL": proxy.url()}

    async def _proxy(self, host: str, port: int) -> TcpProxy:
        proxy = await TcpProxy(host, port).start()
        self.proxies[port] = proxy
        return proxy

    def pause(self) -> None:
        for proxy in self.proxies.values():
            proxy.pause()

    def cut(self) -> None:
        for proxy in self.proxies.values():
            proxy.cut()

    def resume(self) -> None:
        for proxy in self.proxies.values():
            proxy.resume()

    @property
    def connections(self) -> dict[int, int]:
        """Connections each proxy accepted so far, by the port it forwards to."""
        return {port: proxy.connections for port, proxy in self.proxies.items()}

    async def check_used(self, pid: int) -> None:
        """The instance (process ``pid``) went through the proxies and only through them: every
        proxy it must use carried connections (on a cluster, each current master's: the
        instance subscribes on every master), and it has no TCP connection open to a port the
        proxies forward to (none bypasses them)."""
        if self.cluster.kind == "redis-cluster":
            nodes = self.cluster.redis
            assert isinstance(nodes, RedisClusterNodes)
            ports = [node.port for node in await asyncio.to_thread(nodes.masters)]
            assert len(ports) == 3, ports
        else:
            ports = list(self.proxies)
        unused = [port for port in ports if self.proxies[port].connections == 0]
        assert not unused, f"no connection went through the proxies of {unused}: {self.connections}"
        direct = tcp_peer_ports(pid) & set(self.proxies)
        seen: list[str] = []
        if direct and self.cluster.kind != "postgres":  # which client it is, for the message
            mine = {f"addr=127.0.0.1:{local} " for local, _ in tcp_connections(pid)}
            for port in sorted(direct):
                listed = await asyncio.to_thread(command, port, "client", "list")
                seen += [line for line in listed.splitlines() if any(a in line for a in mine)]
        assert not direct, f"process {pid} is connected to {sorted(direct)} directly: {seen}"

    async def aclose(self) -> None:
        for proxy in self.proxies.values():
            await proxy.aclose()


def tcp_peer_ports(pid: int) -> set[int]:
    """The remote ports of process ``pid``'s TCP connections to 127.0.0.1."""
    return {remote for _local, remote in tcp_connections(pid)}


def tcp_connections(pid: int) -> set[tuple[int, int]]:
    """(local port, remote port) of process ``pid``'s TCP sockets connected to 127.0.0.1
    (Linux: its socket inodes in ``/proc/PID/fd`` matched in ``/proc/PID/net/tcp``)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].partition(":")[2], 16)
        remote_host, _, remote_port = fields[2].partition(":")
        if fields[9] in inodes and remote_host == LOOPBACK_HEX:
            found.add((local_port, int(remote_port, 16)))
    return found


#: 127.0.0.1 as /proc/net/tcp writes it (little-endian hex).
LOOPBACK_HEX = "0100007F"
