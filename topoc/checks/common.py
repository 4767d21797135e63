"""Small helpers the check modules share: where to point, what to suggest.

No checks live here; every check is one function in its family's module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from topoc.front.span import UNKNOWN, Span
from topoc.model.family import IPAddress, IPNetwork, family_of
from topoc.model.ir import Lab, Network, Nic


def at(specific: Span, whole: Span) -> Span:
    """The value's own span when the front end recorded one, else the statement's."""
    return whole if specific == UNKNOWN else specific


def nic_where(nic: Nic, lab: Lab) -> str:
    node = lab.node(nic.owner)
    kind = node.kind.value if node is not None else "node"
    return f"{kind} {nic.owner} ({nic.name})"


def usable(subnet: IPNetwork, address: IPAddress) -> bool:
    """Not the network (in IPv6: the subnet-router anycast) or broadcast address of
    `subnet`; a /31 or /32 has neither (RFC 3021), nor an IPv6 /127 or /128 (RFC 6164)."""
    facts = family_of(subnet).facts
    if subnet.prefixlen >= facts.all_usable_prefix:
        return True
    if address == subnet.network_address:
        return False
    return not (facts.broadcast and address == subnet.broadcast_address)


def first_free(subnet: IPNetwork, taken: set[IPAddress], network: Network | None = None,
               limit: int = 4096) -> IPAddress | None:
    """The lowest usable address of `subnet` that is not taken, not the gateway and not in
    the DHCP range (looked at lazily, so a /8 or an IPv6 /64 costs no more than a /24;
    `hosts()` leaves out IPv6's subnet-router anycast address)."""
    family = family_of(subnet)
    gateway = network.gateway_in(family) if network is not None else None
    dhcp = network.dhcp_in(family) if network is not None else None
    hosts: Iterator[IPAddress] = iter(subnet.hosts())
    for i, address in enumerate(hosts):
        if i >= limit:
            return None
        if address in taken or address == gateway or (dhcp is not None and address in dhcp):
            continue
        return address
    return None


def suggest_free(subnet: IPNetwork | None, taken: set[IPAddress],
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
