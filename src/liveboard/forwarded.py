"""The client's address behind reverse proxies (``LIVEBOARD_TRUSTED_PROXIES``). Pure: no I/O.

A request's peer is whoever opened the TCP connection. When that peer is a proxy the operator
trusts, the client's address is read from the proxy's ``Forwarded`` (RFC 7239, its ``for=``
parameters) or, when there is no ``Forwarded`` header, ``X-Forwarded-For``. Guarantees:

* From a peer that is not trusted, both headers are ignored: the client is the peer. Nobody can
  put an address in the log by sending a header.
* The chain is read from the right (the hop nearest to this server) and every address that is
  itself a trusted proxy is skipped: the client is the first address that is not, so a value
  a client wrote in its own ``X-Forwarded-For`` (the left of the chain) is never taken while a
  trusted proxy appended the real one after it.
* An entry that is not an IP address (``unknown``, an obfuscated ``_name``, garbage) ends the
  walk: the client is the last address a trusted hop vouched for (the one that wrote that
  entry). When every hop is trusted, it is the leftmost.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_trusted_proxies(raw: str) -> tuple[Network, ...]:
    """A comma list of IP addresses and CIDR networks (``10.0.0.0/8, ::1``).

    Raises ``ValueError`` naming the item that is neither (a network with host bits set, such
    as ``10.0.0.1/8``, is one: it is almost certainly a typo).
    """
    networks: list[Network] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or a CIDR network") from None
    return tuple(networks)


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address, trusted: Sequence[Network]) -> bool:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    candidate = mapped or address
    return any(candidate.version == net.version and candidate in net for net in trusted)


def _node_address(node: str) -> str:
    """A ``for=`` node (RFC 7239 §6) or an ``X-Forwarded-For`` item without quotes, brackets or
    port: ``"[2001:db8::1]:4711"`` → ``2001:db8::1``, ``192.0.2.1:80`` → ``192.0.2.1``."""
    node = node.strip().strip('"').strip()
    if node.startswith("["):
        end = node.find("]")
        return node[1:end] if end > 0 else node
    if node.count(":") == 1:  # IPv4 with a port (a bare IPv6 address has several colons)
        return node.split(":", 1)[0]
    return node


def forwarded_for(header: str) -> list[str]:
    """The ``for=`` nodes of a ``Forwarded`` header's elements, left to right."""
    nodes: list[str] = []
    for element in header.split(","):
        for pair in element.split(";"):
            name, sep, value = pair.partition("=")
            if sep and name.strip().lower() == "for":
                nodes.append(_node_address(value))
    return nodes


def x_forwarded_for(header: str) -> list[str]:
    """The addresses of an ``X-Forwarded-For`` header, left to right."""
    return [_node_address(item) for item in header.split(",") if item.strip()]


def client_address(
    peer: str | None,
    trusted: Sequence[Network],
    *,
    forwarded: Iterable[str] = (),
    x_forwarded: Iterable[str] = (),
) -> str | None:
    """The client's address for a request from ``peer`` with these header values (each
    repeated header once, in order); see the module's guarantees."""
    if peer is None or not trusted:
        return peer
    address = _address(peer)
    if address is None or not _trusted(address, trusted):
        return peer
    forwarded = list(forwarded)
    if forwarded:
        chain = [node for value in forwarded for node in forwarded_for(value)]
    else:
        chain = [item for value in x_forwarded for item in x_forwarded_for(value)]
    client = peer
    for node in reversed(chain):
        hop = _address(node)
        if hop is None:
            return client
        client = str(hop)
        if not _trusted(hop, trusted):
            return client
    return client
