"""Small helpers the check modules share: where to point, what to suggest.

No checks live here; every check is one function in its family's module.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from topoc.front.span import UNKNOWN, Span
from topoc.model.ir import Lab, Network, Nic


def at(specific: Span, whole: Span) -> Span:
    """The value's own span when the front end recorded one, else the statement's."""
    return whole if specific == UNKNOWN else specific


def nic_where(nic: Nic, lab: Lab) -> str:
    node = lab.node(nic.owner)
    kind = node.kind.value if node is not None else "node"
    return f"{kind} {nic.owner} ({nic.name})"


def usable(subnet: IPv4Network, address: IPv4Address) -> bool:
    """Not the network or broadcast address (/31 and /32 have neither: RFC 3021)."""
    if subnet.prefixlen >= 31:
        return True
    return address not in (subnet.network_address, subnet.broadcast_address)


def first_free(subnet: IPv4Network, taken: set[IPv4Address], network: Network | None = None,
               limit: int = 4096) -> IPv4Address | None:
    """The lowest usable address of `subnet` that is not taken, not the gateway and not in
    the DHCP range (looked at lazily, so a /8 costs no more than a /24)."""
    for i, address in enumerate(subnet.hosts()):
        if i >= limit:
            return None
        if address in taken:
            continue
        if network is not None and (address == network.gateway
                                    or (network.dhcp is not None and address in network.dhcp)):
            continue
        return address
    return None


def suggest_free(subnet: IPv4Network | None, taken: set[IPv4Address],
                 network: Network | None = None) -> str:
    if subnet is None:
        return "pick another address"
    free = first_free(subnet, taken, network)
    if free is None:
        return f"pick a free address in {subnet}"
    return f"pick a free address in {subnet}, e.g. {free}"


def plural(items: Iterable[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
