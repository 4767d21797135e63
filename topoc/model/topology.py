"""The model's topology: the lab as L2 segments, nodes and the interfaces joining them.

A pure function of the IR. It answers the questions every later stage asks about the
wiring: which L2 segment a network is (a bridged network joins the segment of the host
NIC it enslaves), which interfaces a node has (a host also has one bridge per managed
network, carrying the network's address), which addresses a node answers on, which
routes it has (including the default route DHCP would give a VM), and whether it
forwards packets (ip_forward).

The facts are computed once per lab (a Topology, held by the compilation's
topoc.model.analysis.Analysis), so the checks and the reachability engine stay linear
on labs of 10,000 VMs. The functions below take the Analysis (or a bare Lab, which gets
a fresh one).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from topoc.front.span import Span
from topoc.model.analysis import Analysis, analysis_of
from topoc.model.ir import Forward, Host, Lab, Mode, Network, Node, Route, Vm
from topoc.model.platform import DEFAULT_PROFILE

DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")

# libvirt's facts about network modes are the platform profile's (topoc.model.platform):
# which get its firewall, which turn on ip_forward, whose DHCP offers a router.
FIREWALLED_MODES = DEFAULT_PROFILE.firewalled_modes
FORWARDING_MODES = DEFAULT_PROFILE.forwarding_modes
DHCP_ROUTER_MODES = DEFAULT_PROFILE.dhcp_router_modes


@dataclass(frozen=True, slots=True)
class Interface:
    """One of a node's interfaces as the kernel sees it."""

    node: str
    name: str  # the Linux name: a nic's, or a bridge's on a host
    segment: str  # the L2 segment it is plugged into (a network name)
    network: str  # the network it belongs to
    address: IPv4Interface | None
    kind: str  # "nic" or "bridge"
    span: Span

    @property
    def ip(self) -> IPv4Address | None:
        return self.address.ip if self.address is not None else None


class Topology:
    """Every wiring fact of one lab, computed once."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.segment_of: dict[str, str] = {n.name: _segment(lab, n) for n in lab.networks}
        self.interfaces: dict[str, tuple[Interface, ...]] = {
            node.name: self._interfaces(node) for node in lab.nodes}
        self.routes: dict[str, tuple[Route, ...]] = {
            node.name: self._effective_routes(node) for node in lab.nodes}
        self.addresses: dict[str, tuple[IPv4Address, ...]] = {
            name: tuple(dict.fromkeys(i.ip for i in ifaces if i.ip is not None))
            for name, ifaces in self.interfaces.items()}
        # Which nodes others route through: externals used as a gateway forward.
        via_addresses = {r.via for routes in self.routes.values() for r in routes}
        self.forwarding: dict[str, bool] = {
            node.name: self._forwards(node, via_addresses) for node in lab.nodes}
        # Segment -> the interfaces plugged into it, in node order.
        self.members: dict[str, list[Interface]] = {}
        for ifaces in self.interfaces.values():
            for iface in ifaces:
                self.members.setdefault(iface.segment, []).append(iface)

    def _interfaces(self, node: Node) -> tuple[Interface, ...]:
        lab = self.lab
        result = []
        enslaved = {}  # host nic name -> the bridged network that takes it over
        if isinstance(node, Host):
            enslaved = {n.via: n for n in lab.networks_on(node.name)
                        if n.mode is Mode.BRIDGED and n.via is not None}
        for nic in node.nics:
            name = nic.name
            if nic.name in enslaved and enslaved[nic.name].bridge:
                # The host's address moves from the NIC to the bridge that enslaves it.
                name = enslaved[nic.name].bridge  # type: ignore[assignment]
            result.append(Interface(node.name, name, self.segment_of.get(nic.network, nic.network),
                                    nic.network, nic.address, "nic", nic.span))
        if isinstance(node, Host):
            uplinks = {nic.name for nic in node.nics}
            for net in lab.networks_on(node.name):
                if net.mode is Mode.BRIDGED and net.via in uplinks:
                    continue
                if net.bridge is None:
                    continue
                result.append(Interface(node.name, net.bridge, self.segment_of[net.name],
                                        net.name, net.address, "bridge", net.span))
        return tuple(result)

    def _effective_routes(self, node: Node) -> tuple[Route, ...]:
        routes = list(node.routes)
        if any(r.is_default for r in routes):
            return tuple(routes)
        gateway = _default_gateway(self.lab, node)
        if gateway is not None:
            via, span = gateway
            routes.append(Route(DEFAULT_ROUTE, via, span))
        return tuple(routes)

    def _forwards(self, node: Node, via_addresses: set[IPv4Address]) -> bool:
        if isinstance(node, Host):
            return any(n.mode in FORWARDING_MODES for n in self.lab.networks_on(node.name))
        if isinstance(node, Vm):
            return False  # a guest's kernel keeps ip_forward off unless told otherwise
        return any(nic.ip in via_addresses for nic in node.nics if nic.ip is not None)


def _segment(lab: Lab, network: Network) -> str:
    """The L2 segment a network is: its own, except that a bridged network is the
    segment of the host NIC its bridge enslaves (VMs become peers on that LAN)."""
    if network.mode is Mode.BRIDGED and network.host is not None:
        host = lab.node(network.host)
        for nic in getattr(host, "nics", ()):
            if nic.name == network.via:
                uplink = lab.network(nic.network)
                if uplink is not None and uplink.name != network.name:
                    return _segment(lab, uplink)
    return network.name


def _default_gateway(lab: Lab, node: Node) -> tuple[IPv4Address, Span] | None:
    """A nic's `gateway` (the first one written), else for a VM the address of the first
    network whose DHCP server offers itself as the router."""
    for nic in node.nics:
        if nic.gateway is not None:
            return nic.gateway, nic.span
    if isinstance(node, Vm):
        for nic in node.nics:
            net = lab.network(nic.network)
            if net is not None and net.mode in DHCP_ROUTER_MODES and net.address is not None:
                return net.address.ip, nic.span
    return None


def interfaces(lab: Lab | Analysis, name: str) -> tuple[Interface, ...]:
    return analysis_of(lab).topology.interfaces.get(name, ())


def node_addresses(lab: Lab | Analysis, name: str) -> tuple[IPv4Address, ...]:
    """Every address the node answers on: a host's nic addresses and the address of each
    of its managed networks; a VM's or external's nic addresses. Source order."""
    return analysis_of(lab).topology.addresses.get(name, ())


def effective_routes(lab: Lab | Analysis, name: str) -> tuple[Route, ...]:
    """The node's `route`s plus its default route: a nic `gateway`, or for a VM on a
    nat/routed/open network without one, the network's address, as libvirt's
    dnsmasq hands it out. Connected routes (a nic's own subnet) are implied."""
    return analysis_of(lab).topology.routes.get(name, ())


def forwards(lab: Lab | Analysis, name: str) -> bool:
    """ip_forward: on for a host with a nat, routed or open network (libvirt turns it
    on), for an external that some other node routes through; never for a VM."""
    return analysis_of(lab).topology.forwarding.get(name, False)


def macvtap_links(lab: Lab) -> frozenset[tuple[str, str, str]]:
    """(host, VM, segment) for every VM nic placed on an external network directly: libvirt
    gives it a macvtap on the host's NIC there (bridge mode), and a macvtap guest and its
    own host cannot exchange frames through that NIC; the guest's peers are the LAN's
    other machines. https://libvirt.org/formatdomain.html#direct-attachment-to-physical-interface"""
    links = set()
    for vm in lab.vms:
        for nic in vm.nics:
            network = lab.network(nic.network)
            if network is not None and network.mode is Mode.EXTERNAL:
                links.add((vm.host, vm.name, _segment(lab, network)))
    return frozenset(links)


# Networks a `forward` may DNAT into: those the host routes into (ip_forward on).
DNAT_MODES = DEFAULT_PROFILE.forwarding_modes


def dnat_target(lab: Lab, fwd: Forward) -> tuple[IPv4Address, Network] | None:
    """Where a `forward` DNATs to: the VM's first static address (in nic order) on a nat,
    routed or open network of its host. None when it has none: an isolated or host-only
    network must stay closed, a bridged one is the LAN's, and a DHCP address is not known
    in advance. The host backend writes its rule from this, reach predicts from it."""
    vm = lab.node(fwd.vm)
    if not isinstance(vm, Vm):
        return None
    for nic in vm.nics:
        net = lab.network(nic.network)
        if nic.ip is not None and net is not None and net.host == vm.host and net.mode in DNAT_MODES:
            return nic.ip, net
    return None


def underlay(lab: Lab, network: Network) -> tuple[str, dict[str, str]] | None:
    """The underlay of a network on several hosts: the external network its hosts all
    have an address on (the first in file order) and each host's address there, which
    its VXLAN links run between; None when there is none (topoc.checks.spanning)."""
    hosts = [node for node in map(lab.node, network.hosts) if node is not None]
    for candidate in lab.networks:
        if candidate.managed:
            continue
        addresses = {}
        for host in hosts:
            ip = next((n.ip for n in host.nics if n.network == candidate.name and n.ip is not None), None)
            if ip is None:
                break
            addresses[host.name] = str(ip)
        else:
            return candidate.name, addresses
    return None
