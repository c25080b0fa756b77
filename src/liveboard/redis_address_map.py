"""``LIVEBOARD_REDIS_ADDRESS_MAP``: where to reach Redis Cluster nodes whose announced addresses
this host cannot reach. Pure: no I/O.

A Redis Cluster tells its clients where its nodes are (``CLUSTER SLOTS``, ``MOVED``), with the
addresses the nodes announce: their own view of the network. Behind NAT, in Docker or
Kubernetes, or behind a proxy, those addresses may not be reachable from liveboard. The map
names, for each announced ``host:port``, the ``host:port`` to connect to instead::

    LIVEBOARD_REDIS_ADDRESS_MAP=10.0.0.6:6379=203.0.113.6:16379,10.0.0.7:6379=203.0.113.7:16379

Guarantees:

* ``parse_address_map`` is strict: every item is ``HOST:PORT=HOST:PORT`` (an IPv6 host in
  brackets, ``[::1]:6379``), ports 1-65535, no empty item, no announced address twice. Anything
  else raises ``ValueError`` naming the item by its position and text.
* ``address_remap``'s function sends an address the map names to its target and leaves every
  other one as it is, once (a target is not looked up again). liveboard applies it where it
  dials a cluster node (``brokers.redis_pools.mapped_connection_class``), whatever named the
  node: the ``redis+cluster://`` URL, ``CLUSTER SLOTS``, or a ``MOVED``/``ASK`` reply.
* ``str`` of a mapping is its item as written (normalised), so ``check-config`` shows the map
  the way it is set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

Address = tuple[str, int]

__all__ = ["Address", "AddressMapping", "address_remap", "parse_address_map"]


class AddressMapping(NamedTuple):
    """One item of the map: connect to ``host:port`` where a node announces ``announced``."""

    announced_host: str
    announced_port: int
    host: str
    port: int

    def __str__(self) -> str:
        announced = _format(self.announced_host, self.announced_port)
        return f"{announced}={_format(self.host, self.port)}"


def _format(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_address(text: str) -> Address:
    """``host:port`` or ``[ipv6]:port``; raises ``ValueError`` without context (the caller adds
    the item's)."""
    host, colon, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host or "[" in host or "]" in host:
            raise ValueError
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError  # an IPv6 host must be in brackets: its port would be ambiguous
    if not colon or not host or any(c.isspace() for c in host):
        raise ValueError
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError
    return host, int(port)


def parse_address_map(raw: str) -> tuple[AddressMapping, ...]:
    """``HOST:PORT=HOST:PORT[,HOST:PORT=HOST:PORT…]`` (blanks around items and around ``=``
    ignored); raises ``ValueError`` for anything else (see the module docstring)."""
    mappings: list[AddressMapping] = []
    seen: set[Address] = set()
    for position, item in enumerate(raw.split(","), start=1):
        item = item.strip()
        if not item:
            raise ValueError(f"item {position} is empty (a stray comma?)")
        announced, equals, target = item.partition("=")
        try:
            if not equals or "=" in target:
                raise ValueError
            source = _parse_address(announced)
            destination = _parse_address(target)
        except ValueError:
            raise ValueError(
                f"item {position} ({item!r}) must be HOST:PORT=HOST:PORT"
                " (an IPv6 host in brackets, ports 1-65535)"
            ) from None
        if source in seen:
            raise ValueError(f"{_format(*source)} is mapped twice (item {position})")
        seen.add(source)
        mappings.append(AddressMapping(*source, *destination))
    return tuple(mappings)


def address_remap(mappings: Sequence[AddressMapping]) -> Callable[[Address], Address]:
    """Where to connect for an address: its target in ``mappings``, else the address itself
    (the shape of redis-py's ``address_remap``)."""
    table = {(m.announced_host, m.announced_port): (m.host, m.port) for m in mappings}

    def remap(address: Address) -> Address:
        host, port = address[0], int(address[1])
        return table.get((host, port), (host, port))

    return remap
