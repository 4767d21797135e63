"""The model's topology: the lab as L2 segments, nodes and the interfaces joining them.

A pure function of the IR and an address family: one Topology per family, with the
interfaces carrying that family's addresses and that family's routes, so the
reachability engine walks IPv4 and IPv6 alike (topoc.model.family). It answers the
questions every later stage asks about the wiring: which L2 segment a network is (a
bridged network joins the segment of the host NIC it enslaves), which interfaces a
node has (a host also has one bridge per managed network, carrying the network's
address), which addresses a node answers on, which routes it has (including the
default route DHCP, or an IPv6 router advertisement, would give a VM), and whether it
forwards packets (ip_forward, or IPv6 forwarding).

The facts are computed once per lab (a Topology, held by the compilation's
topoc.model.analysis.Analysis), so the checks and the reachability engine stay linear
on labs of 10,000 VMs. The functions below take the Analysis (or a bare Lab, which gets
a fresh one).
"""

from __future__ import annotations

from dataclasses import dataclass

from topoc.front.span import Span
from topoc.model.analysis import Analysis, analysis_of
from topoc.model.family import FAMILIES, IPV4, IPV6, Family, IPAddress, IPInterface
from topoc.model.ir import Forward, Host, Lab, Mode, Network, Node, Route, Vm
from topoc.model.platform import DEFAULT_PROFILE

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
    address: IPInterface | None  # of the topology's family
    kind: str  # "nic" or "bridge"
    span: Span

    @property
    def ip(self) -> IPAddress | None:
        return self.address.ip if self.address is not None else None


class Topology:
    """Every wiring fact of one lab in one address family, computed once."""

    def __init__(self, lab: Lab, family: Family = IPV4) -> None:
        self.lab = lab
        self.family = family
        self.segment_of: dict[str, str] = {n.name: _segment(lab, n) for n in lab.networks}
        # The nodes whose (IPv6) default route comes from a router advertisement.
        self.advertised: set[str] = set()
        self.interfaces: dict[str, tuple[Interface, ...]] = {
            node.name: self._interfaces(node) for node in lab.nodes}
        self.routes: dict[str, tuple[Route, ...]] = {
            node.name: self._effective_routes(node) for node in lab.nodes}
        self.addresses: dict[str, tuple[IPAddress, ...]] = {
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
                                    nic.network, nic.address_in(self.family), "nic", nic.span))
        if isinstance(node, Host):
            uplinks = {nic.name for nic in node.nics}
            for net in lab.networks_on(node.name):
                if net.mode is Mode.BRIDGED and net.via in uplinks:
                    continue
                if net.bridge is None:
                    continue
                result.append(Interface(node.name, net.bridge, self.segment_of[net.name],
                                        net.name, net.address_in(self.family), "bridge", net.span))
        return tuple(result)

    def _effective_routes(self, node: Node) -> tuple[Route, ...]:
        routes = [r for r in node.routes if r.family is self.family]
        if any(r.is_default for r in routes):
            return tuple(routes)
        gateway = _default_gateway(self.lab, node, self.family)
        if gateway is not None:
            via, span = gateway
            routes.append(Route(self.family.default_route, via, span))
            if self.family is IPV6 and not any(nic.gateway6 for nic in node.nics):
                self.advertised.add(node.name)
        return tuple(routes)

    def _forwards(self, node: Node, via_addresses: set[IPAddress]) -> bool:
        if isinstance(node, Host):
            return host_forwarding(self.lab, node.name, self.family)
        if isinstance(node, Vm):
            return False  # a guest's kernel keeps ip_forward off unless told otherwise
        return any(ip in via_addresses for nic in node.nics
                   if (ip := _ip(nic.address_in(self.family))) is not None)


def host_forwarding(lab: Lab, host: str, family: Family) -> bool:
    """Whether libvirt turns forwarding on for a host in `family`: for a nat, routed or
    open network of it; IPv6's only for one with an IPv6 address (networkEnableIPForwarding,
    bridge_driver.c). One host's networks only: the host backend asks it without building
    the lab's topology."""
    return any(n.mode in FORWARDING_MODES and (family is IPV4 or n.address6 is not None)
               for n in lab.networks_on(host))


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


def _ip(address: IPInterface | None) -> IPAddress | None:
    return address.ip if address is not None else None


def _default_gateway(lab: Lab, node: Node, family: Family) -> tuple[IPAddress, Span] | None:
    """A nic's `gateway` of the family (the first one written), else for a VM the address
    of the first network that offers itself as the router: IPv4, its DHCP server; IPv6,
    libvirt's dnsmasq router advertisements. A VM with an IPv6 address on a nat, routed or
    open network with one takes its default route from the RA (the kernel's accept_ra,
    https://docs.kernel.org/networking/ip-sysctl.html); an isolated network's RA has a
    router lifetime of 0 (libvirt writes `ra-param=*,0,0` for it), so it gives none; and
    only a network libvirt runs dnsmasq for sends RAs at all (Profile.advertises_router).
    The RA's route is via the router's link-local address: the model names the
    network's own address, which is the same router on the same link."""
    for nic in node.nics:
        gateway = nic.gateway_in(family)
        if gateway is not None:
            return gateway, nic.span
    if isinstance(node, Vm):
        for nic in node.nics:
            net = lab.network(nic.network)
            if net is None or nic.address_in(family) is None:
                continue
            offered = (net.mode in DHCP_ROUTER_MODES if family is IPV4
                       else DEFAULT_PROFILE.advertises_router(net))
            router = net.gateway_in(family)
            if offered and router is not None:
                return router, nic.span
    return None


def interfaces(lab: Lab | Analysis, name: str, family: Family = IPV4) -> tuple[Interface, ...]:
    return analysis_of(lab).topology_in(family).interfaces.get(name, ())


def node_addresses(lab: Lab | Analysis, name: str, family: Family | None = None) -> tuple[IPAddress, ...]:
    """Every address the node answers on (of `family`, or of both: IPv4 first): a host's
    nic addresses and the address of each of its managed networks; a VM's or external's
    nic addresses. Source order."""
    an = analysis_of(lab)
    families = FAMILIES if family is None else (family,)
    found: tuple[IPAddress, ...] = ()
    for fam in families:
        if fam is IPV6 and IPV6 not in an.families:
            continue  # an IPv4-only lab: no IPv6 topology to build
        found += an.topology_in(fam).addresses.get(name, ())
    return found


def effective_routes(lab: Lab | Analysis, name: str, family: Family = IPV4) -> tuple[Route, ...]:
    """The node's `route`s of the family plus its default route: a nic `gateway`, or for
    a VM on a nat/routed/open network without one, the network's address, as libvirt's
    dnsmasq hands it out (IPv4: DHCP's router option; IPv6: its router advertisement).
    Connected routes (a nic's own subnet) are implied."""
    return analysis_of(lab).topology_in(family).routes.get(name, ())


def forwards(lab: Lab | Analysis, name: str, family: Family = IPV4) -> bool:
    """Forwarding (ip_forward; IPv6: net.ipv6.conf.all.forwarding): on for a host with a
    nat, routed or open network (libvirt turns it on), for an external that some other
    node routes through; never for a VM."""
    return analysis_of(lab).topology_in(family).forwarding.get(name, False)


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


def dnat_target(lab: Lab, fwd: Forward, family: Family = IPV4) -> tuple[IPAddress, Network] | None:
    """Where a `forward` DNATs to in `family`: the VM's first static address of that
    family (in nic order) on a nat, routed or open network of its host. None when it has
    none: an isolated or host-only network must stay closed, a bridged one is the LAN's,
    and a DHCP address is not known in advance. The host backend writes its rule from
    this, reach predicts from it."""
    vm = lab.node(fwd.vm)
    if not isinstance(vm, Vm):
        return None
    for nic in vm.nics:
        net = lab.network(nic.network)
        address = nic.address_in(family)
        if address is not None and net is not None and net.host == vm.host and net.mode in DNAT_MODES:
            return address.ip, net
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
