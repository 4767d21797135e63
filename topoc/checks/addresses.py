"""Address checks: conflicts, addresses outside or reserved in their subnet, overlapping
subnets, DHCP ranges, gateways off the node's subnets and VM nics with no address.

Each finding points at the value at fault (the second of two, naming the first) and
its hint says how to fix it, with a free address where one is wanted.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
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
    SUBNET_OVERLAP,
)
from topoc.diagnostics import Severity
from topoc.front.span import Span
from topoc.model.analysis import Analysis
from topoc.model.family import IPNetwork
from topoc.model.ir import Host, Lab, Mode, Network, Nic, Node, Vm

# Segments behind NAT or cut off (isolated) are address domains of their own: the same
# address may be reused in two of them. Everything routed shares one domain.
PRIVATE_MODES = (Mode.NAT, Mode.ISOLATED)


def network_subnet(an: Analysis, net: Network) -> IPv4Network | None:
    """A network's subnet; a bridged network's is the LAN's it joins."""
    lab = an.lab
    if net.subnet is not None:
        return net.subnet
    segment = lab.network(an.topology.segment_of.get(net.name, net.name))
    return segment.subnet if segment is not None else None


class _Claim(NamedTuple):
    """An address someone claims: a nic's, or a network's own (the host on its bridge)."""

    address: IPv4Address
    owner: str  # "vm0", or "the gateway of network natnet" for a bridge address
    network: str
    span: Span
    is_gateway: bool


def _claims(an: Analysis) -> list[_Claim]:
    """Every claimed address in source order, computed once per analysis."""
    return an.memo("address-claims", lambda: _all_claims(an.lab))


def _all_claims(lab: Lab) -> list[_Claim]:
    claims = []
    for net in lab.networks:
        if net.address is not None:
            claims.append(_Claim(net.address.ip, f"the gateway of network {net.name}", net.name,
                                 at(net.address_span, net.span), True))
    for node in lab.nodes:
        for nic in node.nics:
            if nic.address is not None:
                claims.append(_Claim(nic.address.ip, node.name, nic.network,
                                     at(nic.address_span, nic.span), False))
    claims.sort(key=lambda c: (c.span.line, c.span.column))
    return claims


def _domains(an: Analysis) -> dict[str, str]:
    """Network -> its address domain: its own segment when private, else "" (routed)."""
    lab = an.lab
    topo = an.topology
    domains = {}
    for net in lab.networks:
        segment = topo.segment_of.get(net.name, net.name)
        seg_net = lab.network(segment)
        domains[net.name] = segment if seg_net is not None and seg_net.mode in PRIVATE_MODES else ""
    return domains


@check(ADDRESS_CONFLICT)
def address_conflict(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    seen: dict[tuple[str, int], _Claim] = {}
    domains = _domains(an)
    for claim in _claims(an):
        first = seen.setdefault((domains.get(claim.network, ""), int(claim.address)), claim)
        if first is claim or first.owner == claim.owner:
            continue
        if first.is_gateway and first.network == claim.network:
            continue  # a VM on its network's gateway address: address-reserved says so
        net = lab.network(claim.network)
        subnet = network_subnet(an, net) if net is not None else None
        yield Finding(claim.span,
                      ADDRESS_CONFLICT.message("taken", address=claim.address, owner=first.owner,
                                               line=first.span.line),
                      suggest_free(subnet, _taken(an), net))


class _Subnet(NamedTuple):
    """A network's subnet as integers, so 10,000 nics are checked without ipaddress objects."""

    network: Network
    subnet: IPv4Network
    first: int  # the network address
    last: int  # the broadcast address
    gateway: int | None


def _subnets(an: Analysis) -> dict[str, _Subnet]:
    lab = an.lab
    found = {}
    for net in lab.networks:
        subnet = network_subnet(an, net)
        if subnet is not None:
            found[net.name] = _Subnet(net, subnet, int(subnet.network_address),
                                      int(subnet.broadcast_address),
                                      int(net.address) if net.address is not None else None)
    return found


def _addressed_nics(an: Analysis) -> Iterator[tuple[Node, Nic, int, _Subnet]]:
    """(node, nic, the nic's address as an int, its network's subnet) for every nic with
    an address on a network with a subnet."""
    lab = an.lab
    subnets = _subnets(an)
    for node in lab.nodes:
        for nic in node.nics:
            if nic.address is not None and nic.network in subnets:
                # IPv4Interface is an IPv4Address: int() is its address, no new object.
                yield node, nic, int(nic.address), subnets[nic.network]


@check(ADDRESS_OUTSIDE_SUBNET)
def address_outside_subnet(an: Analysis) -> Iterator[Finding]:
    for _, nic, ip, sub in _addressed_nics(an):
        assert nic.address is not None
        subnet, net = sub.subnet, sub.network
        span = at(nic.address_span, nic.span)
        if not sub.first <= ip <= sub.last:
            yield Finding(span, ADDRESS_OUTSIDE_SUBNET.message("outside", address=nic.address.ip,
                                                               network=net.name, subnet=subnet),
                          suggest_free(subnet, _taken(an), net))
        elif nic.address.network.prefixlen != subnet.prefixlen:
            yield Finding(span, ADDRESS_OUTSIDE_SUBNET.message(
                              "prefix", address=nic.address, prefix=nic.address.network.prefixlen,
                              network=net.name, subnet=subnet),
                          ADDRESS_OUTSIDE_SUBNET.message("prefix_hint", subnet_prefix=subnet.prefixlen))


def _taken(an: Analysis) -> set[IPv4Address]:
    """Every claimed address, computed once per analysis (hints ask for it many times)."""

    def build() -> set[IPv4Address]:
        taken = {c.address for c in _claims(an)}
        for node in an.lab.nodes:  # a gateway nobody models is still some router's address
            taken.update(nic.gateway for nic in node.nics if nic.gateway is not None)
            taken.update(route.via for route in node.routes)
        return taken

    return an.memo("address-taken", build)


@check(ADDRESS_RESERVED)
def address_reserved(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for net in lab.networks:
        if net.address is not None and not usable(net.address.network, net.address.ip):
            yield Finding(at(net.address_span, net.span),
                          ADDRESS_RESERVED.message("gateway", address=net.address.ip,
                                                   which=_which(net.address.network, net.address.ip),
                                                   subnet=net.address.network),
                          ADDRESS_RESERVED.message("gateway_hint", example=next(net.address.network.hosts(), ""),
                                                   prefix=net.address.network.prefixlen))
    for node, nic, ip, sub in _addressed_nics(an):
        assert nic.address is not None
        subnet, net = sub.subnet, sub.network
        span = at(nic.address_span, nic.span)
        if ip in (sub.first, sub.last) and subnet.prefixlen < 31:
            yield Finding(span, ADDRESS_RESERVED.message("nic", address=nic.address.ip,
                                                         which=_which(subnet, nic.address.ip), subnet=subnet),
                          suggest_free(subnet, _taken(an), net))
        elif ip == sub.gateway and isinstance(node, Vm):
            yield Finding(span, ADDRESS_RESERVED.message("vm_on_gateway", address=nic.address.ip,
                                                         network=net.name, line=net.address_span.line),
                          suggest_free(subnet, _taken(an), net))


def _which(subnet: IPv4Network, address: IPv4Address) -> str:
    return "network" if address == subnet.network_address else "broadcast"


@check(SUBNET_OVERLAP)
def subnet_overlap(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for host in lab.hosts:
        yield from _overlaps_on_host(an, host)


def _overlaps_on_host(an: Analysis, host: Host) -> Iterator[Finding]:
    """The host's LAN subnets, then its managed networks in source order: each overlapping
    an earlier one is reported. libvirt refuses to start a network whose subnet is in use
    ("Network is already in use by interface ..."); an isolated network with no address
    gives the host no route, so it only confuses (a warning)."""
    lab = an.lab
    earlier: list[tuple[IPv4Network, str, bool, bool]] = []  # (subnet, what, a LAN, has no address)
    for nic in host.nics:
        net = lab.network(nic.network)
        if nic.address is not None and net is not None and not net.managed:
            earlier.append((nic.address.network, f"the LAN `{net.name}` of {host.name} ({nic.name})",
                            True, False))
    for net in sorted(lab.networks_on(host.name), key=lambda n: n.span.line):
        subnet = net.subnet
        if subnet is None or net.mode is Mode.BRIDGED:
            continue
        span = at(net.address_span if net.address is not None else net.subnet_span, net.span)
        clashes = [e for e in earlier if subnet.overlaps(e[0])]
        # A clash between two addressed subnets stops libvirt; one with an address-less
        # isolated segment only separates its VMs from the other side.
        hard = [e for e in clashes if not e[3]] if net.address is not None else []
        if hard:
            other, what = hard[0][0], hard[0][1]
            yield Finding(span, SUBNET_OVERLAP.message("refused", subnet=subnet, network=net.name,
                                                       other=other, what=what),
                          SUBNET_OVERLAP.message("refused_hint"))
        elif clashes:
            other, what, is_lan, _ = clashes[0]
            side = "LAN" if is_lan else "network"
            key = "isolated_reuses" if net.address is None else "overlaps_isolated"
            message = SUBNET_OVERLAP.message(key, network=net.name, subnet=subnet, other=other,
                                             what=what, side=side)
            yield Finding(span, message, SUBNET_OVERLAP.message("separated_hint"), Severity.WARNING)
        earlier.append((subnet, f"network `{net.name}` (line {net.span.line})", False, net.address is None))


@check(DHCP_RANGE)
def dhcp_range(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for net in lab.networks:
        dhcp, subnet = net.dhcp, net.subnet
        if dhcp is None or subnet is None:
            continue
        key = None
        if dhcp.start > dhcp.end:
            key = "reversed"
        elif dhcp.start not in subnet or dhcp.end not in subnet:
            key = "outside"
        elif not usable(subnet, dhcp.start) or not usable(subnet, dhcp.end):
            key = "reserved"
        elif net.gateway is not None and net.gateway in dhcp:
            key = "gateway"
        if key is not None:
            values = dict(start=dhcp.start, end=dhcp.end, network=net.name, subnet=subnet,
                          gateway=net.gateway, address=dhcp.start if dhcp.start not in subnet else dhcp.end)
            yield Finding(dhcp.span, DHCP_RANGE.message(key, **values),
                          DHCP_RANGE.message(f"{key}_hint", **values))
    yield from _static_in_range(an)


def _static_in_range(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    ranges = {n.name: (int(n.dhcp.start), int(n.dhcp.end)) for n in lab.networks if n.dhcp is not None}
    for vm in lab.vms:
        for nic in vm.nics:
            bounds = ranges.get(nic.network)
            if bounds is None or nic.address is None or not bounds[0] <= int(nic.address) <= bounds[1]:
                continue
            net = lab.network(nic.network)
            assert net is not None and net.dhcp is not None
            yield Finding(at(nic.address_span, nic.span),
                          DHCP_RANGE.message("static_inside", address=nic.ip, network=net.name,
                                             start=net.dhcp.start, end=net.dhcp.end, line=net.dhcp.span.line),
                          DHCP_RANGE.message("static_inside_hint"), Severity.WARNING)


def _connected(an: Analysis, name: str) -> list[IPNetwork]:
    """The subnets a node sits on, in every family the lab uses: its interfaces' (a DHCP
    nic takes its network's)."""
    lab = an.lab
    node = lab.node(name)
    subnets: list[IPNetwork] = []
    for family in an.families:
        subnets += [i.address.network for i in an.topology_in(family).interfaces[name]
                    if i.address is not None]
        for nic in getattr(node, "nics", ()):
            net = lab.network(nic.network)
            subnet = net.subnet_in(family) if net is not None else None
            if nic.address_in(family) is None and net is not None and net.dhcp_in(family) is not None and subnet:
                subnets.append(subnet)
    return subnets


@check(GATEWAY_UNREACHABLE)
def gateway_unreachable(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for node in lab.nodes:
        if not an.sound(node.name):
            continue  # a nic left out may hold the subnet
        subnets = _connected(an, node.name)
        if all(any(gw in s for s in subnets) for gw in _gateways(node)):
            continue
        mine = ", ".join(str(s) for s in subnets) or "none"
        for nic in node.nics:
            gw = nic.gateway
            if gw is not None and not any(gw in s for s in subnets):
                yield Finding(at(nic.gateway_span, nic.span),
                              GATEWAY_UNREACHABLE.message("gateway", gateway=gw, where=nic_where(nic, lab),
                                                          subnets=mine),
                              _gateway_hint(nic, an))
        for route in node.routes:
            if not any(route.via in s for s in subnets):
                yield Finding(route.span, GATEWAY_UNREACHABLE.message("route", via=route.via, node=node.name,
                                                                      subnets=mine),
                              GATEWAY_UNREACHABLE.message("route_hint"))


def _gateways(node: Node) -> Iterator[IPv4Address]:
    yield from (nic.gateway for nic in node.nics if nic.gateway is not None)
    yield from (route.via for route in node.routes)


def _gateway_hint(nic: Nic, an: Analysis) -> str:
    net = an.lab.network(nic.network)
    subnet = network_subnet(an, net) if net is not None else None
    if net is not None and net.gateway is not None:
        return GATEWAY_UNREACHABLE.message("gateway_hint_network", gateway=net.gateway, network=net.name)
    if subnet is not None:
        return GATEWAY_UNREACHABLE.message("gateway_hint_subnet", subnet=subnet)
    return GATEWAY_UNREACHABLE.message("gateway_hint")


@check(NO_ADDRESS)
def no_address(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for vm in lab.vms:
        for nic in vm.nics:
            net = lab.network(nic.network)
            if nic.address is not None or net is None or net.dhcp is not None \
                    or not an.sound(vm.name, net.name):
                continue
            subnet = network_subnet(an, net)
            free = suggest_free(subnet, _taken(an), net) if subnet is not None else "add one"
            dhcp = (f", or a `dhcp` range to {net.name}" if net.mode not in (Mode.BRIDGED, Mode.EXTERNAL)
                    else "; topoc does not model the LAN's own DHCP server")
            yield Finding(nic.span, NO_ADDRESS.message("cut_off", nic=nic.name, vm=vm.name, network=net.name),
                          NO_ADDRESS.message("cut_off_hint", free=free, dhcp=dhcp))
