"""Address checks, in each address family (topoc.model.family) the lab uses: conflicts,
addresses outside their subnet (or on a network with no subnet of their family),
reserved in it (IPv4's network and broadcast addresses, IPv6's subnet-router and
reserved subnet anycast addresses, link-local and multicast ones), overlapping subnets,
DHCP ranges, gateways off the node's subnets, IPv6 networks whose SLAAC cannot work,
and VM nics with no address.

Each finding points at the value at fault (the second of two, naming the first) and
its hint says how to fix it, with a free address where one is wanted. A lab with IPv4
only meets IPv4 alone, and gets the findings it always got.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv6Address, IPv6Network
from typing import NamedTuple

from topoc.checks.common import at, nic_where, suggest_free, usable
from topoc.checks.registry import Finding, check
from topoc.codes import (
    ADDRESS_CONFLICT,
    ADDRESS_OUTSIDE_SUBNET,
    ADDRESS_RESERVED,
    DHCP_RANGE,
    GATEWAY_UNREACHABLE,
    NO_ADDRESS,
    RESERVED_ANYCAST,
    SLAAC_PREFIX,
    SUBNET_OVERLAP,
)
from topoc.diagnostics import Severity
from topoc.front.span import Span
from topoc.model.analysis import Analysis
from topoc.model.family import FAMILIES, IPV4, IPV6, Family, IPAddress, IPInterface, IPNetwork, family_of
from topoc.model.ir import DhcpRange, Host, Lab, Mode, Network, Nic, Node, Vm

# Segments behind NAT or cut off (isolated) are address domains of their own: the same
# address may be reused in two of them. Everything routed shares one domain. A nat
# network's IPv6 is routed unless it has `nat6` (Network.masquerades).
PRIVATE_MODES = (Mode.NAT, Mode.ISOLATED)

# Where an IPv6 address cannot be a lab's static one: link-local addresses (RFC 4291
# section 2.5.6) are the kernel's, one per interface, and never routed off their link
# (an RA's prefix in fe80::/64 is ignored, RFC 4862 section 5.5.3 b); Linux refuses a
# multicast address (section 2.7) on an interface: `ip -6 addr add ff02::5/64 dev X` says
# "ipv6: Cannot assign multicast address without "IFA_F_MCAUTOJOIN" flag" (measured).
# (IPv4's 169.254/16 and 224/4 are not checked: IPv4 labs keep the findings they had.)
SCOPED: dict[Family, tuple[tuple[IPNetwork, str], ...]] = {
    IPV4: (),
    IPV6: ((IPv6Network("fe80::/10"), "link_local"), (IPv6Network("ff00::/8"), "multicast")),
}

# libvirt's dnsmasq takes a DHCPv6 range only on a prefix of at least /64: dnsmasq's
# option.c refuses a shorter one ("prefix length must be at least 64"; dnsmasq(8): "The
# minimum size of the prefix length is 64"), and the network does not start.
DHCP_MIN_PREFIX = {IPV4: 0, IPV6: 64}

# libvirt refuses to start a network whose IPv4 subnet a host route already covers
# (networkCheckRouteCollision in src/network/bridge_driver_linux.c reads /proc/net/route,
# IPv4's only): an IPv6 overlap starts, with two routes to one prefix on the host.
LIBVIRT_REFUSES_OVERLAP = {IPV4: True, IPV6: False}

# libvirt's DHCP range holds at most 65,535 addresses: all but the last 16 bits of start
# and end are equal (virSocketAddrGetRange in src/util/virsocketaddr.c: an IPv4 range's
# first two bytes, an IPv6 range's first seven groups; "range %s - %s is too large").
DHCP_RANGE_BITS = 16

# RFC 2526 section 2 reserves the highest 128 interface ids of each subnet for subnet
# anycast: with 64-bit interface ids (every prefix of /64 or shorter, RFC 4291 section
# 2.5.1), fdff:ffff:ffff:ff80 - fdff:ffff:ffff:ffff (the universal/local bit is 0; RFC 5453
# section 3 lists them); with a longer prefix, the subnet's top 128 addresses. A /121 or
# longer would be reserved whole: it is not checked.
ANYCAST_IDS = 128
ANYCAST_EUI64_FIRST = 0xFDFF_FFFF_FFFF_FF80


def network_subnet(an: Analysis, net: Network, family: Family = IPV4) -> IPNetwork | None:
    """A network's subnet in `family`; a bridged network's is the LAN's it joins."""
    own = net.subnet_in(family)
    if own is not None:
        return own
    segment = _segment(an, net)
    return segment.subnet_in(family) if segment is not None else None


def _segment(an: Analysis, net: Network) -> Network | None:
    """The network whose subnets a network's nics take: itself, or a bridged network's LAN."""
    return an.lab.network(an.topology.segment_of.get(net.name, net.name))


class _Claim(NamedTuple):
    """An address someone claims: a nic's, or a network's own (the host on its bridge)."""

    address: IPAddress
    owner: str  # "vm0", or "the gateway of network natnet" for a bridge address
    network: str
    span: Span
    is_gateway: bool


def _claims(an: Analysis, family: Family) -> list[_Claim]:
    """Every claimed address of the family in source order, computed once per analysis."""
    return an.memo(f"address-claims-{family.title}", lambda: _all_claims(an.lab, family))


def _all_claims(lab: Lab, family: Family) -> list[_Claim]:
    claims = []
    for net in lab.networks:
        address = net.address_in(family)
        if address is not None:
            claims.append(_Claim(address.ip, f"the gateway of network {net.name}", net.name,
                                 at(net.address_span_in(family), net.span), True))
    for node in lab.nodes:
        for nic in node.nics:
            address = nic.address_in(family)
            if address is not None:
                claims.append(_Claim(address.ip, node.name, nic.network,
                                     at(nic.address_span_in(family), nic.span), False))
    claims.sort(key=lambda c: (c.span.line, c.span.column))
    return claims


def _domains(an: Analysis, family: Family) -> dict[str, str]:
    """Network -> its address domain in the family: its own segment when private (isolated,
    or nat where the family is masqueraded), else "" (routed)."""
    lab = an.lab
    topo = an.topology
    domains = {}
    for net in lab.networks:
        segment = topo.segment_of.get(net.name, net.name)
        seg_net = lab.network(segment)
        private = seg_net is not None and seg_net.mode in PRIVATE_MODES \
            and (seg_net.mode is Mode.ISOLATED or seg_net.masquerades(family))
        domains[net.name] = segment if private else ""
    return domains


@check(ADDRESS_CONFLICT)
def address_conflict(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for family in an.families:
        seen: dict[tuple[str, int], _Claim] = {}
        domains = _domains(an, family)
        for claim in _claims(an, family):
            first = seen.setdefault((domains.get(claim.network, ""), int(claim.address)), claim)
            if first is claim or first.owner == claim.owner:
                continue
            if first.is_gateway and first.network == claim.network:
                continue  # a VM on its network's gateway address: address-reserved says so
            net = lab.network(claim.network)
            subnet = network_subnet(an, net, family) if net is not None else None
            yield Finding(claim.span,
                          ADDRESS_CONFLICT.message("taken", address=claim.address, owner=first.owner,
                                                   line=first.span.line),
                          suggest_free(subnet, _taken(an), net))


class _Subnet(NamedTuple):
    """A network's subnet as integers, so 10,000 nics are checked without ipaddress objects."""

    network: Network
    subnet: IPNetwork
    first: int  # the network address
    last: int  # the broadcast address (IPv6: the subnet's last address)
    gateway: int | None


def _subnets(an: Analysis, family: Family) -> dict[str, _Subnet]:
    lab = an.lab
    found = {}
    for net in lab.networks:
        subnet = network_subnet(an, net, family)
        if subnet is not None:
            gateway = net.gateway_in(family)
            found[net.name] = _Subnet(net, subnet, int(subnet.network_address),
                                      int(subnet.broadcast_address),
                                      int(gateway) if gateway is not None else None)
    return found


def _addressed_nics(an: Analysis, family: Family) -> Iterator[tuple[Node, Nic, IPInterface, int, _Subnet]]:
    """(node, nic, its address, that address as an int, its network's subnet) for every
    nic with an address of the family on a network with a subnet of the family, leaving
    out the addresses no lab may use (SCOPED: address-reserved reports them)."""
    lab = an.lab
    subnets = _subnets(an, family)
    scoped = SCOPED[family]
    for node in lab.nodes:
        for nic in node.nics:
            address = nic.address_in(family)
            if address is not None and nic.network in subnets \
                    and not (scoped and _scope(address.ip, family) is not None):
                # An IPv4Interface is an IPv4Address: int() is its address, no new object.
                yield node, nic, address, int(address), subnets[nic.network]


def _scope(address: IPAddress, family: Family) -> str | None:
    """The key of the SCOPED prefix holding the address, if any."""
    return next((key for prefix, key in SCOPED[family] if address in prefix), None)


@check(ADDRESS_OUTSIDE_SUBNET)
def address_outside_subnet(an: Analysis) -> Iterator[Finding]:
    for family in an.families:
        for _, nic, address, ip, sub in _addressed_nics(an, family):
            subnet, net = sub.subnet, sub.network
            span = at(nic.address_span_in(family), nic.span)
            if not sub.first <= ip <= sub.last:
                yield Finding(span, ADDRESS_OUTSIDE_SUBNET.message("outside", address=address.ip,
                                                                   network=net.name, subnet=subnet),
                              suggest_free(subnet, _taken(an), net))
            elif address.network.prefixlen != subnet.prefixlen:
                yield Finding(span, ADDRESS_OUTSIDE_SUBNET.message(
                                  "prefix", address=address, prefix=address.network.prefixlen,
                                  network=net.name, subnet=subnet),
                              ADDRESS_OUTSIDE_SUBNET.message("prefix_hint", subnet_prefix=subnet.prefixlen))
        yield from _without_subnet(an, family)


def _without_subnet(an: Analysis, family: Family) -> Iterator[Finding]:
    """A nic address of a family its network has no subnet in, while it has one in the
    other: the network says how it is addressed, and not in this family (a network with
    no subnet at all, an isolated segment, takes whatever its VMs bring)."""
    lab = an.lab
    for node in lab.nodes:
        for nic in node.nics:
            address = nic.address_in(family)
            net = lab.network(nic.network)
            if address is None or net is None or not an.sound(node.name, net.name):
                continue
            segment = _segment(an, net) or net
            if segment.subnet_in(family) is not None or not segment.families:
                continue
            # A network with an address takes its subnets from its addresses; one without
            # (an external LAN, an isolated segment) from `subnet`.
            keyword = "address" if segment.managed and any(segment.address_in(f) for f in FAMILIES) \
                else "subnet"
            # The subnet the address was written in, or a router's address in it.
            router = next((a for a in (address.network.network_address + 1, address.network.network_address + 2)
                           if a != address.ip), address.ip)
            example = str(address.network) if keyword == "subnet" else f"{router}/{address.network.prefixlen}"
            yield Finding(at(nic.address_span_in(family), nic.span),
                          ADDRESS_OUTSIDE_SUBNET.message("no_subnet", address=address.ip, family=family.title,
                                                         network=segment.name),
                          ADDRESS_OUTSIDE_SUBNET.message("no_subnet_hint", family=family.title,
                                                         network=segment.name, keyword=keyword,
                                                         example=example))


def _taken(an: Analysis) -> set[IPAddress]:
    """Every claimed address, computed once per analysis (hints ask for it many times)."""

    def build() -> set[IPAddress]:
        taken: set[IPAddress] = set()
        for family in an.families:
            taken.update(c.address for c in _claims(an, family))
        for node in an.lab.nodes:  # a gateway nobody models is still some router's address
            taken.update(gw for nic in node.nics for gw in (nic.gateway, nic.gateway6) if gw is not None)
            taken.update(route.via for route in node.routes)
        return taken

    return an.memo("address-taken", build)


@check(ADDRESS_RESERVED)
def address_reserved(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for family in an.families:
        for net in lab.networks:
            address = net.address_in(family)
            if address is None:
                continue
            span = at(net.address_span_in(family), net.span)
            scope = _scope(address.ip, family)
            if scope is not None:
                yield Finding(span, ADDRESS_RESERVED.message(scope, address=address.ip),
                              ADDRESS_RESERVED.message("scoped_hint", example=f"{family.facts.example}/64"))
            elif not usable(address.network, address.ip):
                yield Finding(span, ADDRESS_RESERVED.message("gateway", address=address.ip,
                                                             which=_which(address.network, address.ip),
                                                             subnet=address.network),
                              ADDRESS_RESERVED.message("gateway_hint", example=next(address.network.hosts(), ""),
                                                       prefix=address.network.prefixlen))
        yield from _scoped_nics(an, family)
        for node, nic, address, ip, sub in _addressed_nics(an, family):
            subnet, net = sub.subnet, sub.network
            span = at(nic.address_span_in(family), nic.span)
            if sub.first <= ip <= sub.last and not usable(subnet, address.ip):
                yield Finding(span, ADDRESS_RESERVED.message("nic", address=address.ip,
                                                             which=_which(subnet, address.ip), subnet=subnet),
                              suggest_free(subnet, _taken(an), net))
            elif ip == sub.gateway and isinstance(node, Vm):
                yield Finding(span, ADDRESS_RESERVED.message("vm_on_gateway", address=address.ip,
                                                             network=net.name,
                                                             line=net.address_span_in(family).line),
                              suggest_free(subnet, _taken(an), net))


def _scoped_nics(an: Analysis, family: Family) -> Iterator[Finding]:
    """Nic addresses no lab may use (SCOPED), whatever their network."""
    if not SCOPED[family]:
        return
    lab = an.lab
    for node in lab.nodes:
        for nic in node.nics:
            address = nic.address_in(family)
            scope = _scope(address.ip, family) if address is not None else None
            if address is None or scope is None:
                continue
            net = lab.network(nic.network)
            subnet = network_subnet(an, net, family) if net is not None else None
            yield Finding(at(nic.address_span_in(family), nic.span),
                          ADDRESS_RESERVED.message(scope, address=address.ip),
                          suggest_free(subnet, _taken(an), net) if subnet is not None and _scope(
                              subnet.network_address, family) is None
                          else ADDRESS_RESERVED.message("scoped_hint", example=family.facts.example))


def _which(subnet: IPNetwork, address: IPAddress) -> str:
    if address == subnet.network_address:
        return "network" if family_of(subnet).facts.broadcast else "subnet-router anycast"
    return "broadcast"


@check(RESERVED_ANYCAST)
def reserved_anycast(an: Analysis) -> Iterator[Finding]:
    """RFC 2526's reserved subnet anycast addresses (see ANYCAST_EUI64_FIRST), on a
    network's own address or a nic's; a warning: Linux assigns them, but a router or a
    home agent of the subnet may answer them too."""
    if IPV6 not in an.families:
        return
    lab = an.lab
    for net in lab.networks:
        if net.address6 is not None:
            yield from _anycast(an, net.address6.ip, net.address6.network, net,
                                at(net.address6_span, net.span))
    for _, nic, address, _, sub in _addressed_nics(an, IPV6):
        yield from _anycast(an, address.ip, sub.subnet, sub.network, at(nic.address6_span, nic.span))


def _anycast(an: Analysis, address: IPAddress, subnet: IPNetwork, net: Network, span: Span) -> Iterator[Finding]:
    bounds = _anycast_range(subnet)
    if bounds is None or address not in subnet or not bounds[0] <= int(address) <= bounds[1]:
        return
    first, last = IPv6Address(bounds[0]), IPv6Address(bounds[1])
    yield Finding(span, RESERVED_ANYCAST.message("reserved", address=address, subnet=subnet,
                                                 first=first, last=last),
                  RESERVED_ANYCAST.message("reserved_hint", free=suggest_free(subnet, _taken(an), net)))


def _anycast_range(subnet: IPNetwork) -> tuple[int, int] | None:
    """The first and last of the subnet's reserved subnet anycast addresses (RFC 2526)."""
    if subnet.version != 6 or subnet.prefixlen > 128 - 8:
        return None
    base = int(subnet.network_address)
    if subnet.prefixlen <= 64:
        return base | ANYCAST_EUI64_FIRST, base | (ANYCAST_EUI64_FIRST + ANYCAST_IDS - 1)
    last = int(subnet.broadcast_address)
    return last - ANYCAST_IDS + 1, last


@check(SUBNET_OVERLAP)
def subnet_overlap(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for host in lab.hosts:
        for family in an.families:
            yield from _overlaps_on_host(an, host, family)


def _overlaps_on_host(an: Analysis, host: Host, family: Family) -> Iterator[Finding]:
    """The host's LAN subnets, then its managed networks in source order: each overlapping
    an earlier one of its family is reported. libvirt refuses to start a network whose
    IPv4 subnet is in use ("Network is already in use by interface ..."); an IPv6 one
    starts, and the host has two routes to one prefix. An isolated network with no address
    gives the host no route, so it only confuses (a warning)."""
    lab = an.lab
    earlier: list[tuple[IPNetwork, str, bool, bool]] = []  # (subnet, what, a LAN, has no address)
    for nic in host.nics:
        net = lab.network(nic.network)
        address = nic.address_in(family)
        if address is not None and net is not None and not net.managed:
            earlier.append((address.network, f"the LAN `{net.name}` of {host.name} ({nic.name})",
                            True, False))
    for net in sorted(lab.networks_on(host.name), key=lambda n: n.span.line):
        subnet = net.subnet_in(family)
        if subnet is None or net.mode is Mode.BRIDGED:
            continue
        address = net.address_in(family)
        span = at(net.address_span_in(family) if address is not None else net.subnet_span_in(family), net.span)
        clashes = [e for e in earlier if subnet.overlaps(e[0])]
        # A clash between two addressed subnets stops libvirt (IPv4) or splits the host's
        # routes (IPv6); one with an address-less isolated segment only separates its VMs
        # from the other side.
        hard = [e for e in clashes if not e[3]] if address is not None else []
        if hard:
            other, what = hard[0][0], hard[0][1]
            key = "refused" if LIBVIRT_REFUSES_OVERLAP[family] else "ambiguous"
            yield Finding(span, SUBNET_OVERLAP.message(key, subnet=subnet, network=net.name,
                                                       other=other, what=what),
                          SUBNET_OVERLAP.message(f"{key}_hint"))
        elif clashes:
            other, what, is_lan, _ = clashes[0]
            side = "LAN" if is_lan else "network"
            key = "isolated_reuses" if address is None else "overlaps_isolated"
            message = SUBNET_OVERLAP.message(key, network=net.name, subnet=subnet, other=other,
                                             what=what, side=side)
            yield Finding(span, message, SUBNET_OVERLAP.message("separated_hint"), Severity.WARNING)
        earlier.append((subnet, f"network `{net.name}` (line {net.span.line})", False, address is None))


@check(DHCP_RANGE)
def dhcp_range(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for family in an.families:
        for net in lab.networks:
            dhcp, subnet = net.dhcp_in(family), net.subnet_in(family)
            if dhcp is None or subnet is None or dhcp.family is not family:
                continue
            finding = _range_problem(net, dhcp, subnet, family)
            if finding is not None:
                yield finding
        yield from _static_in_range(an, family)


def _range_problem(net: Network, dhcp: DhcpRange, subnet: IPNetwork, family: Family) -> Finding | None:
    start, end = dhcp.start, dhcp.end
    gateway = net.gateway_in(family)
    values: dict[str, object] = dict(start=start, end=end, network=net.name, subnet=subnet, gateway=gateway,
                                     address=start if start not in subnet else end)
    key = None
    if subnet.prefixlen < DHCP_MIN_PREFIX[family]:
        key = "short_prefix"
        values.update(prefix=subnet.prefixlen, example=f"{subnet.network_address + 1}/64")
    elif int(start) > int(end):
        key = "reversed"
    elif start not in subnet or end not in subnet:
        key = "outside"
    elif not family.facts.broadcast and not usable(subnet, start):  # IPv6: only its first address
        key = "anycast"
        after = start + 1
        values.update(after=gateway + 1 if gateway is not None and gateway in dhcp else after)
    elif not usable(subnet, start) or not usable(subnet, end):
        key = "reserved"
    elif int(start) >> DHCP_RANGE_BITS != int(end) >> DHCP_RANGE_BITS:
        key = "too_large"
        last = family.facts.address(int(start) | ((1 << DHCP_RANGE_BITS) - 1))
        values.update(limit=last if usable(subnet, last) else last - 1)
    elif gateway is not None and gateway in dhcp:
        key = "gateway"
    if key is None:
        return None
    return Finding(dhcp.span, DHCP_RANGE.message(key, **values), DHCP_RANGE.message(f"{key}_hint", **values))


def _static_in_range(an: Analysis, family: Family) -> Iterator[Finding]:
    lab = an.lab
    ranges = {n.name: (int(d.start), int(d.end), d) for n in lab.networks
              if (d := n.dhcp_in(family)) is not None and d.family is family}
    if not ranges:
        return
    key = "static_inside" if family is IPV4 else "static_inside6"
    for vm in lab.vms:
        for nic in vm.nics:
            bounds = ranges.get(nic.network)
            address = nic.address_in(family)
            if bounds is None or address is None or not bounds[0] <= int(address) <= bounds[1]:
                continue
            dhcp = bounds[2]
            yield Finding(at(nic.address_span_in(family), nic.span),
                          DHCP_RANGE.message(key, address=address.ip, network=nic.network,
                                             start=dhcp.start, end=dhcp.end, line=dhcp.span.line),
                          DHCP_RANGE.message(f"{key}_hint"), Severity.WARNING)


def _autoconfigures(net: Network, family: Family) -> bool:
    """Whether a nic without a static address of the family gets one on this network (a
    managed network's DHCP; in IPv6 also SLAAC: libvirt writes `dhcp-range=ADDR,ra-only`
    for an IPv6 address without DHCP, and its router advertisements give the prefix;
    bridge_driver.c networkDnsmasqConfContents)."""
    if not net.managed or net.mode is Mode.BRIDGED:
        return False
    if net.dhcp_in(family) is not None:
        return True
    return family is IPV6 and net.address6 is not None


def _connected(an: Analysis, name: str, family: Family) -> list[IPNetwork]:
    """The subnets of the family a node sits on: its interfaces' (a nic that gets its
    address from its network takes the network's subnet)."""
    lab = an.lab
    subnets = [i.address.network for i in an.topology_in(family).interfaces[name] if i.address is not None]
    node = lab.node(name)
    for nic in getattr(node, "nics", ()):
        net = lab.network(nic.network)
        if nic.address_in(family) is None and net is not None and _autoconfigures(net, family):
            subnet = net.subnet_in(family)
            if subnet is not None:
                subnets.append(subnet)
    return subnets


@check(GATEWAY_UNREACHABLE)
def gateway_unreachable(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for node in lab.nodes:
        if not an.sound(node.name):
            continue  # a nic left out may hold the subnet
        for family in FAMILIES:
            gateways = list(_gateways(node, family))
            if not gateways:
                continue
            subnets = _connected(an, node.name, family)
            if all(_on_link(gw, subnets) for gw in gateways):
                continue
            mine = ", ".join(str(s) for s in subnets) or "none"
            for nic in node.nics:
                gw = nic.gateway_in(family)
                if gw is not None and not _on_link(gw, subnets):
                    yield Finding(at(nic.gateway_span_in(family), nic.span),
                                  GATEWAY_UNREACHABLE.message("gateway", gateway=gw, where=nic_where(nic, lab),
                                                              subnets=mine),
                                  _gateway_hint(nic, an, family))
            for route in node.routes:
                if route.family is family and not _on_link(route.via, subnets):
                    yield Finding(route.span, GATEWAY_UNREACHABLE.message("route", via=route.via, node=node.name,
                                                                          subnets=mine),
                                  GATEWAY_UNREACHABLE.message("route_hint"))


def _on_link(gateway: IPAddress, subnets: list[IPNetwork]) -> bool:
    """In one of the subnets; an IPv6 link-local gateway is on every link (RFC 4291
    section 2.5.6), as routers' RAs name theirs."""
    if gateway.version == 6 and gateway.is_link_local:
        return True
    return any(gateway in s for s in subnets)


def _gateways(node: Node, family: Family) -> Iterator[IPAddress]:
    yield from (gw for nic in node.nics if (gw := nic.gateway_in(family)) is not None)
    yield from (route.via for route in node.routes if route.family is family)


def _gateway_hint(nic: Nic, an: Analysis, family: Family) -> str:
    net = an.lab.network(nic.network)
    subnet = network_subnet(an, net, family) if net is not None else None
    gateway = net.gateway_in(family) if net is not None else None
    if net is not None and gateway is not None:
        return GATEWAY_UNREACHABLE.message("gateway_hint_network", gateway=gateway, network=net.name)
    if subnet is not None:
        return GATEWAY_UNREACHABLE.message("gateway_hint_subnet", subnet=subnet)
    return GATEWAY_UNREACHABLE.message("gateway_hint")


@check(SLAAC_PREFIX)
def slaac_prefix(an: Analysis) -> Iterator[Finding]:
    """An IPv6 network without DHCPv6 offers SLAAC (see _autoconfigures), and SLAAC forms
    an address only from a /64: a prefix's length plus the interface id's must be 128
    (RFC 4862 section 5.5.3 d), and an Ethernet interface id is 64 bits (RFC 2464
    section 4). Reported when a VM nic on it has no static IPv6 address to fall back on."""
    if IPV6 not in an.families:
        return
    lab = an.lab
    waiting: dict[str, tuple[str, str]] = {}  # network -> the first VM nic waiting for SLAAC
    for guest in lab.vms:
        for own in guest.nics:
            if own.address6 is None:
                waiting.setdefault(own.network, (guest.name, own.name))
    for net in lab.networks:
        address = net.address6
        if address is None or net.dhcp6 is not None or not _autoconfigures(net, IPV6) \
                or address.network.prefixlen == 64 or net.name not in waiting or not an.sound(net.name):
            continue
        vm, nic = waiting[net.name]
        suggested = IPv6Network((int(address.ip) >> 64 << 64, 64))
        ip = address.ip if address.ip != suggested.network_address else suggested.network_address + 1
        yield Finding(at(net.address6_span, net.span),
                      SLAAC_PREFIX.message("not_64", network=net.name, address=address.ip,
                                           prefix=address.network.prefixlen, vm=vm, nic=nic),
                      SLAAC_PREFIX.message("not_64_hint", suggested=f"{ip}/64", vm=vm))


@check(NO_ADDRESS)
def no_address(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for vm in lab.vms:
        for nic in vm.nics:
            net = lab.network(nic.network)
            if nic.addresses or net is None or net.dhcp is not None \
                    or any(_autoconfigures(net, f) for f in net.families) \
                    or not an.sound(vm.name, net.name):
                continue
            subnet = next((s for f in FAMILIES if (s := network_subnet(an, net, f)) is not None), None)
            free = suggest_free(subnet, _taken(an), net) if subnet is not None else "add one"
            dhcp = (f", or a `dhcp` range to {net.name}" if net.mode not in (Mode.BRIDGED, Mode.EXTERNAL)
                    else "; topoc does not model the LAN's own DHCP server")
            yield Finding(nic.span, NO_ADDRESS.message("cut_off", nic=nic.name, vm=vm.name, network=net.name),
                          NO_ADDRESS.message("cut_off_hint", free=free, dhcp=dhcp))

