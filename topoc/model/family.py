"""The two address families as one table: what differs between IPv4 and IPv6.

Every stage that handles addresses asks this table instead of testing a version:
the ipaddress types, the default route, the longest prefix, the neighbour protocol
(ARP or NDP), the flags of `ip`, `nft`, `sysctl` and `fping`, libvirt's `family`
attribute. A stage that works on one family takes a `Family` and reads its row; an
IPv4-only lab only ever meets `IPV4`, so its outputs do not change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
IPInterface = IPv4Interface | IPv6Interface


@dataclass(frozen=True, slots=True)
class FamilyFacts:
    version: int
    title: str  # "IPv4", as messages name it
    address: type[IPv4Address] | type[IPv6Address]
    network: type[IPv4Network] | type[IPv6Network]
    interface: type[IPv4Interface] | type[IPv6Interface]
    max_prefix: int
    neighbour: str  # how a node finds the link-layer address of a next hop
    # libvirt: <ip family='ipv4|ipv6'> (https://libvirt.org/formatnetwork.html#addressing)
    libvirt: str
    nft: str  # the nft table family (https://wiki.nftables.org/wiki-nftables/index.php/Nftables_families)
    ip_flag: str  # `ip -4 ...` / `ip -6 ...` (ip(8))
    icmp: str  # the echo's protocol, as nft names it
    # The sysctl a router turns on (https://docs.kernel.org/networking/ip-sysctl.html)
    forwarding_sysctl: str
    iptables: str  # the command libvirt 9 installs this family's rules with
    example: str  # an address for hints
    # Whether a subnet's highest address is its broadcast address. IPv6 has none ("There
    # are no broadcast addresses in IPv6", RFC 4291 section 2); the all-zero interface id
    # is the subnet-router anycast address instead (RFC 4291 section 2.6.1), which every
    # router on the link answers, as the network address is reserved in IPv4.
    broadcast: bool
    # The shortest prefix whose every address is usable: /31 (RFC 3021), /127 (RFC 6164).
    all_usable_prefix: int


class Family(enum.Enum):
    """IPv4 or IPv6; `.facts` is the family's row of the table."""

    V4 = FamilyFacts(
        version=4, title="IPv4", address=IPv4Address, network=IPv4Network, interface=IPv4Interface,
        max_prefix=32, neighbour="ARP", libvirt="ipv4", nft="ip", ip_flag="-4", icmp="icmp",
        forwarding_sysctl="net.ipv4.ip_forward", iptables="iptables", example="10.0.0.1",
        broadcast=True, all_usable_prefix=31)
    V6 = FamilyFacts(
        version=6, title="IPv6", address=IPv6Address, network=IPv6Network, interface=IPv6Interface,
        max_prefix=128, neighbour="NDP", libvirt="ipv6", nft="ip6", ip_flag="-6", icmp="icmpv6",
        forwarding_sysctl="net.ipv6.conf.all.forwarding", iptables="ip6tables", example="fd00::1",
        broadcast=False, all_usable_prefix=127)

    @property
    def facts(self) -> FamilyFacts:
        return self.value

    @property
    def title(self) -> str:
        return self.value.title

    @property
    def default_route(self) -> IPNetwork:
        """0.0.0.0/0 or ::/0: what `route default` means in this family (made once: every
        node's default route asks for it, and building an IPv6Network is not cheap)."""
        return _DEFAULT_ROUTES[self]

    def __repr__(self) -> str:
        return f"Family.{self.name}"


IPV4, IPV6 = Family.V4, Family.V6
_DEFAULT_ROUTES: dict[Family, IPNetwork] = {f: f.value.network((0, 0)) for f in Family}
FAMILIES = (IPV4, IPV6)  # in the order outputs list them: IPv4 first


def family_of(value: IPAddress | IPNetwork | IPInterface) -> Family:
    return IPV4 if value.version == 4 else IPV6


def family_of_text(text: str) -> Family:
    """The family a written address (or CIDR, or range) is meant to be in: IPv6 when it
    holds a colon. Only for choosing which slot a statement fills; the value's own parser
    says whether it is a valid address."""
    return IPV6 if ":" in text else IPV4


def parse_address(text: str) -> IPAddress | None:
    """An address of either family, or None (ipaddress's rules; no IPv6 zone: `%eth0`)."""
    if "%" in text:
        return None
    try:
        # The family from the text, not by trial: ip_address() tries IPv4 first and pays
        # for a raised error on every IPv6 address.
        return IPv6Address(text) if ":" in text else IPv4Address(text)
    except ValueError:
        return None
