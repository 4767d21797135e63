"""The reachability engine: who gets an ICMP echo reply from whom, and why (not).

It follows one packet hop by hop the way a Linux kernel would, then its reply back:
- IPv4 and IPv6 alike, one Engine per family (topoc.model.family), over that family's
  topology and firewall table; a node name means every address of both families.
- L2: a node sends straight to an address only when a connected route covers it, and
  then only a node plugged into that segment can answer ARP (IPv6: NDP) for it. Any
  node answers ARP for any of its addresses on any interface (arp_ignore=0, the kernel
  default); NDP's neighbour solicitation is answered only on the interface that holds
  the address (ndisc_recv_ns looks the target up on the receiving device, RFC 4861 7.2.3).
- Routing: connected routes, `route`s, the default route (topoc.model.topology.effective_routes);
  longest prefix wins. A node delivers a packet for any of its addresses whatever the
  interface it came in on (weak host model; rp_filter=0 on a stock Debian host) and
  forwards others only with ip_forward on (topoc.model.topology.forwards).
- The firewall of every host, as topoc.model.firewall's table holds it (the one the host
  backend renders to topoc.nft): libvirt 9's rules exactly as libvirt installs them
  (https://libvirt.org/firewall.html; libvirt's src/network/network_iptables.c):
  FORWARD runs LIBVIRT_FWX, then LIBVIRT_FWI, then LIBVIRT_FWO; whatever no rule accepts
  into or out of an isolated, nat or routed network's bridge is rejected. NAT networks
  masquerade what leaves them (LIBVIRT_PRT), and so do routed and open networks that
  say `masquerade` (the lab's rule); conntrack de-NATs the replies, and into a NAT
  network only ESTABLISHED,RELATED traffic is let in. A reply through a host that never
  saw the request is INVALID. Each packet is matched against the table's rules in
  order (firewall.decide); the first final verdict wins.
- `forward` rules, from the same table: the DNAT in prerouting for connections to one of
  the host's own addresses (not from the VM's own bridge), and its accept ahead of
  libvirt's rejects; the VM's answer is de-DNATed on the way back.

`predict` enumerates all ordered pairs (only `topoc reach` does that); checks ask single
questions (`reach_address`), so a lab of 10,000 VMs is checked without enumerating.
The questions take the compilation's topoc.model.analysis.Analysis, which builds the
Engine once (a bare Lab gets a fresh Analysis: fine for one question, not for many).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, ip_network
from typing import TypeVar

from topoc.model import firewall as fw
from topoc.model.analysis import Analysis, analysis_of
from topoc.model.family import IPV4, IPV6, Family, IPAddress, IPNetwork, family_of, parse_address
from topoc.model.ir import External, Forward, Host, Lab, Mode, Network, Route, Vm
from topoc.model.topology import Interface, Topology, dnat_target, macvtap_links, node_addresses


@dataclass(frozen=True, slots=True)
class PairResult:
    src: str
    dst: str
    reachable: bool
    path: tuple[str, ...]  # the request's path (up to where it broke), then the reply's
    reason: str


@dataclass(frozen=True, slots=True)
class Packet:
    src: IPAddress
    dst: IPAddress


@dataclass(frozen=True, slots=True)
class RouteChoice:
    destination: IPNetwork
    iface: Interface
    gateway: IPAddress | None  # None: connected, the destination itself is the next hop
    why: str  # "connected", "route 10.0.0.0/8 via ...", "default route via ..."

    def next_hop(self, dst: IPAddress) -> IPAddress:
        return self.gateway if self.gateway is not None else dst


@dataclass
class Leg:
    """One packet's journey: the lines that explain it, the nodes it crossed and, when
    it broke, why and how to fix it."""

    steps: list[tuple[str, str]] = field(default_factory=list)  # (node, what happened)
    path: list[str] = field(default_factory=list)
    ok: bool = False
    failure: str = ""
    fix: str = ""
    packet: Packet | None = None  # as delivered
    node: str = ""  # where it ended

    def note(self, node: str, text: str) -> None:
        self.steps.append((node, text))

    def fail(self, node: str, failure: str, fix: str = "") -> Leg:
        self.ok, self.failure, self.fix, self.node = False, failure, fix, node
        self.note(node, f"BROKEN: {failure}")
        return self


@dataclass
class Flow:
    """Conntrack's view of one flow, across every host it crosses."""

    forward: Forward | None = None
    reply: bool = False
    seen: set[str] = field(default_factory=set)  # hosts that forwarded the request
    snat: dict[str, tuple[IPAddress, IPAddress]] = field(default_factory=dict)  # host -> (to, from)
    dnat: dict[str, tuple[IPAddress, IPAddress]] = field(default_factory=dict)  # host -> (vm ip, target)
    dnat_port: int | None = None  # the destination port a DNAT rewrote the connection to


@dataclass
class Probe:
    """A request and its reply: the whole story of one ping (or one forwarded connection)."""

    src: str
    target: IPAddress
    request: Leg
    reply: Leg | None = None
    ok: bool = False
    # What it ran on, so a fix can be tried on a copy of the lab (confirmed_fix).
    lab: Lab | None = field(default=None, repr=False, compare=False)
    forward: Forward | None = None

    @property
    def failure(self) -> str:
        if self.reply is not None and not self.reply.ok:
            return f"the reply is lost: {self.reply.failure}"
        return self.request.failure

    @property
    def fix(self) -> str:
        leg = self.reply if self.reply is not None and not self.reply.ok else self.request
        return leg.fix

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.request.path) + (tuple(self.reply.path[1:]) if self.reply else ())


class Engine:
    """Routing tables, neighbour (ARP/NDP) owners and firewalls of one lab in one
    address family, and the packet walk."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.lab = topo.lab
        self.family = topo.family
        self.neighbour = topo.family.facts.neighbour  # "ARP" or "NDP", for explanations
        self.owners: dict[IPAddress, list[str]] = {}
        for name, addresses in topo.addresses.items():
            for ip in addresses:
                self.owners.setdefault(ip, []).append(name)
        self.local: dict[str, frozenset[IPAddress]] = {
            name: frozenset(a) for name, a in topo.addresses.items()}
        self._tables: dict[str, list[RouteChoice]] = {}
        self._firewalls: dict[str, fw.HostFirewall] = {}
        self._rules_on: dict[tuple[str, fw.Hook, str | None, str | None], tuple[fw.Rule, ...]] = {}
        # Host and macvtap guest pairs that cannot hear each other on a segment.
        self.deaf: frozenset[tuple[str, str, str]] = frozenset(
            pair for host, vm, segment in macvtap_links(self.lab)
            for pair in ((host, vm, segment), (vm, host, segment)))

    # -- routing --

    def table(self, node: str) -> list[RouteChoice]:
        table = self._tables.get(node)
        if table is None:
            table = self._build_table(node)
            self._tables[node] = table
        return table

    def _build_table(self, node: str) -> list[RouteChoice]:
        ifaces = [i for i in self.topo.interfaces[node] if i.address is not None]
        connected = [RouteChoice(i.address.network, i, None, "connected")  # type: ignore[union-attr]
                     for i in ifaces]
        static = []
        for route in self.topo.routes[node]:
            # The kernel takes a gateway only on a connected subnet ("Nexthop has invalid
            # gateway" otherwise); the gateway-unreachable check reports the others.
            iface = next((c.iface for c in connected if route.via in c.destination), None)
            if iface is None:
                continue
            why = (f"default route via {route.via}" if route.is_default
                   else f"route {route.destination} via {route.via}")
            if route.is_default and node in self.topo.advertised:
                why += ", from the router advertisement"
            static.append(RouteChoice(route.destination, iface, route.via, why))
        # Longest prefix first; on a tie the connected route (metric 0, proto kernel) wins.
        return sorted(connected + static, key=lambda c: -c.destination.prefixlen)

    def lookup(self, node: str, dst: IPAddress) -> RouteChoice | None:
        for choice in self.table(node):
            if dst in choice.destination:
                return choice
        return None

    def arp(self, segment: str, ip: IPAddress, sender: str) -> Interface | None:
        """The interface that answers ARP (IPv6: NDP) for `ip` on `segment`: its owner's
        interface there (arp_ignore=0: the owner answers even when `ip` sits on another of
        its interfaces; NDP only on the interface that holds `ip`); the owner whose
        interface carries `ip` itself wins."""
        strict = self.family is IPV6
        best = None
        for owner in self.owners.get(ip, ()):
            if owner == sender or (sender, owner, segment) in self.deaf:
                continue
            for iface in self.topo.interfaces[owner]:
                if iface.segment != segment:
                    continue
                if iface.ip == ip:
                    return iface
                if not strict:
                    best = best or iface
        return best

    # -- the firewall: topoc.model.firewall's table of each host, evaluated --

    def rules(self, host: str) -> fw.HostFirewall:
        """The host's firewall table: libvirt's rules and the lab's own, in order."""
        table = self._firewalls.get(host)
        if table is None:
            table = fw.host_firewall(self.lab, host, family=self.family)
            self._firewalls[host] = table
        return table

    def _on(self, host: str, hook: fw.Hook, iif: str | None, oif: str | None) -> tuple[fw.Rule, ...]:
        """The host's rules of `hook` that can match between these interfaces (cached)."""
        key = (host, hook, iif, oif)
        rules = self._rules_on.get(key)
        if rules is None:
            rules = fw.on_interfaces(self.rules(host).hook(hook), iif, oif)
            self._rules_on[key] = rules
        return rules

    def _fw_packet(self, host: str, inbound: str | None, outbound: str | None, packet: Packet,
                   state: str, flow: Flow) -> fw.Packet:
        """The packet as the host's rules see it: a ping is ICMP; a `forward`'s
        connection is its protocol, to the VM's port once this host has DNATed it."""
        fwd = flow.forward
        proto, dport = self.family.facts.icmp, None
        if fwd is not None:
            proto = fwd.protocol
            if not flow.reply:
                dport = flow.dnat_port if host in flow.dnat else fwd.port
        # No forward or postrouting rule asks whether the destination is local (only
        # the prerouting DNAT does, and _prerouting models that one).
        return fw.Packet(packet.src, packet.dst, inbound, outbound, proto, dport, state,
                         dnat=host in flow.dnat)

    def firewall(self, host: str, inbound: str, outbound: str, packet: Packet,
                 state: str, flow: Flow) -> tuple[bool, str, str]:
        """The FORWARD verdict: (accepted, the rule that decided, fix when rejected)."""
        rules = self._on(host, fw.Hook.FORWARD, inbound, outbound)
        rule = fw.decide(rules, self._fw_packet(host, inbound, outbound, packet, state, flow)
                         ) if rules else None
        if rule is None:
            return True, "no libvirt rule applies (FORWARD policy ACCEPT)", ""
        if rule.chain is fw.Chain.FORWARD_ACCEPT:
            return True, "topoc's forward rule accepts the DNAT-ed connection", ""
        if rule.verdict is fw.Verdict.ACCEPT:
            return True, fw.explain(rule), ""
        net = self.lab.network(rule.network)
        assert net is not None  # every rule serves one of the lab's networks
        fix = (_fwi_fix(net, inbound, packet, state) if rule.chain is fw.Chain.FWI
               else _fwo_fix(net, outbound, packet))
        return False, fw.explain(rule), fix

    def masquerade(self, host: str, out: Interface, packet: Packet,
                   flow: Flow | None = None) -> tuple[IPAddress, str] | None:
        """POSTROUTING: whether a masquerade rule (libvirt's LIBVIRT_PRT for a nat
        network, the lab's `masquerade` for a routed or open one) rewrites the source to
        the address of the interface the packet leaves through."""
        if out.ip is None:
            return None
        rules = self._on(host, fw.Hook.POSTROUTING, None, out.name)
        if not rules:
            return None
        rule = fw.decide(rules, self._fw_packet(host, None, out.name, packet, "NEW", flow or Flow()))
        if rule is None or rule.verdict is not fw.Verdict.MASQUERADE:
            return None
        return out.ip, fw.explain(rule)

    # -- the walk --

    def walk(self, start: str, packet: Packet, flow: Flow) -> Leg:
        leg = Leg()
        node, inbound, originated = start, None, True
        visited: set[tuple[str, Packet]] = set()
        while True:
            if (node, packet) in visited or len(leg.path) > 64:
                return leg.fail(node, f"routing loop: the packet for {packet.dst} comes back to {node}",
                                "fix the `route`s so that they lead somewhere")
            visited.add((node, packet))
            leg.path.append(node)
            if not originated:
                packet = self._prerouting(node, inbound, packet, flow, leg)  # type: ignore[arg-type]
                if packet.dst in self.local[node]:
                    if flow.forward is not None and not flow.reply and not flow.dnat:
                        return leg.fail(node, self._closed(node, inbound, flow.forward),  # type: ignore[arg-type]
                                        f"connect from outside `{flow.forward.vm}`'s network, or to "
                                        f"{flow.forward.vm}'s own address")
                    leg.note(node, f"in {inbound}: {packet.dst} is its own address: delivered")
                    leg.ok, leg.packet, leg.node = True, packet, node
                    return leg
                if not self.topo.forwarding[node]:
                    return leg.fail(node, f"{node} got a packet for {packet.dst} but does not forward "
                                    f"({_FORWARDING[self.family]} is off)",
                                    _no_forward_fix(self.lab, node, self.family))
            choice = self.lookup(node, packet.dst)
            if choice is None:
                return leg.fail(node, f"{node} has no route to {packet.dst}",
                                self._route_fix(node, packet.dst))
            out = choice.iface
            hop = choice.next_hop(packet.dst)
            where = f"out {out.name} to {hop} ({choice.why})"
            if originated:
                leg.note(node, f"sends {packet.src} -> {packet.dst} {where}")
            else:
                forwarded = self._forward(node, f"in {inbound}, {where}", inbound, out, packet, flow, leg)  # type: ignore[arg-type]
                if forwarded is None:
                    return leg
                packet = forwarded
            answer = self.arp(out.segment, hop, node)
            if answer is None:
                deaf = any((node, owner, out.segment) in self.deaf for owner in self.owners.get(hop, ()))
                fix = ("put the VM on a `mode bridged` network instead of the LAN itself: a host "
                       "bridge lets the host and its guests talk" if deaf
                       else self._arp_fix(node, hop, out.segment, packet.dst))
                return leg.fail(node, f"nobody on {_segment_label(out.segment)} answers {self.neighbour} "
                                f"for {hop}{self._lives_elsewhere(hop, out.segment, node)}", fix)
            node, inbound, originated = answer.node, answer.name, False

    def _forward(self, node: str, text: str, inbound: str, out: Interface, packet: Packet,
                 flow: Flow, leg: Leg) -> Packet | None:
        """FORWARD and POSTROUTING on a host: libvirt's verdict, then the masquerade (on
        the request) or the undoing of a DNAT (on the reply). None: rejected (leg failed)."""
        if not isinstance(self.lab.node(node), Host):
            leg.note(node, text)  # an external router: no firewall modelled
            return packet
        state = "NEW" if not flow.reply else ("ESTABLISHED" if node in flow.seen else "INVALID")
        accepted, rule, fix = self.firewall(node, inbound, out.name, packet, state, flow)
        if not accepted:
            leg.note(node, text)
            leg.fail(node, f"{node} rejects it: {rule}", fix)
            return None
        text += f"; {rule}"
        if not flow.reply:
            flow.seen.add(node)
            masq = self.masquerade(node, out, packet, flow)
            if masq is not None:
                flow.snat[node] = (masq[0], packet.src)
                text += f"; {masq[1]}: source {packet.src} becomes {masq[0]}"
                packet = replace(packet, src=masq[0])
        elif node in flow.dnat and packet.src == flow.dnat[node][0]:
            target = flow.dnat[node][1]
            text += f"; conntrack undoes the DNAT: source {packet.src} becomes {target}"
            packet = replace(packet, src=target)
        leg.note(node, text)
        return packet

    def _prerouting(self, node: str, inbound: str, packet: Packet, flow: Flow, leg: Leg) -> Packet:
        """conntrack reverses a masquerade on the reply; the host's prerouting rules (a
        `forward`'s DNAT, from the firewall table) rewrite the request."""
        if flow.reply and node in flow.snat and packet.dst == flow.snat[node][0]:
            original = flow.snat[node][1]
            leg.note(node, f"conntrack reverses the masquerade: destination {packet.dst} becomes {original}")
            return replace(packet, dst=original)
        fwd = flow.forward
        if fwd is None or flow.reply or node in flow.dnat:
            return packet
        rules = self._on(node, fw.Hook.PREROUTING, inbound, None)
        if not rules:
            return packet
        seen = fw.Packet(packet.src, packet.dst, inbound, None, fwd.protocol, fwd.port,
                         local_dst=packet.dst in self.local[node])
        rule = fw.decide(rules, seen)
        if rule is None or rule.verdict is not fw.Verdict.DNAT or rule.to_addr is None:
            return packet
        flow.dnat[node] = (rule.to_addr, packet.dst)
        flow.dnat_port = rule.to_port
        leg.note(node, f"{fwd.protocol} port {fwd.port} on {packet.dst}: `forward` DNATs it "
                 f"to {fwd.vm} {rule.to_addr}:{rule.to_port}")
        return replace(packet, dst=rule.to_addr)

    def _closed(self, node: str, inbound: str, fwd: Forward) -> str:
        """Why a `forward`'s connection reached `node` itself, where nothing listens."""
        target = f"{fwd.protocol} port {fwd.port} on {node} is closed"
        bridges = {r.not_iif for r in self.rules(node).prerouting if r.dport == fwd.port}
        if inbound in bridges:
            return (f"{target}: the connection comes in on {inbound}, the bridge of "
                    f"{fwd.vm}'s own network, which the DNAT rule leaves out (its answer would "
                    "bypass the un-DNAT)")
        return f"{target}: no `forward` rule DNATs it here"

    # -- fixes --

    def _route_fix(self, node: str, dst: IPAddress) -> str:
        net = self._network_of(dst)
        routed = net is not None and (net.mode in (Mode.ROUTED, Mode.OPEN)
                                      or (net.mode is Mode.NAT and not net.masquerades(self.family)))
        if net is not None and routed and net.host is not None:
            gateway = self._host_address_near(net.host, node)
            if gateway is not None:
                return (f"add `route {net.subnet_in(self.family)} via {gateway}` to "
                        f"{_kind(self.lab, node)} `{node}`")
        if net is not None and net.mode is Mode.NAT:
            return (f"{net.subnet_in(self.family)} is NAT network `{net.name}` on {net.host}: nothing "
                    "outside reaches it except through a `forward`")
        return f"give `{node}` a `route` (or a nic `gateway`) towards {dst}"

    def _host_address_near(self, host: str, node: str) -> IPAddress | None:
        """The host's address on a subnet `node` is directly connected to."""
        mine = [c.destination for c in self.table(node) if c.gateway is None]
        for iface in self.topo.interfaces[host]:
            if iface.ip is not None and any(iface.ip in subnet for subnet in mine):
                return iface.ip
        return None

    def _network_of(self, ip: IPAddress) -> Network | None:
        """The managed network whose subnet holds `ip` (the first one, in source order)."""
        for owner in self.owners.get(ip, ()):
            for iface in self.topo.interfaces[owner]:
                if iface.ip == ip:
                    net = self.lab.network(iface.network)
                    if net is not None and net.mode is not Mode.EXTERNAL:
                        return net
        for net in self.lab.networks:
            subnet = net.subnet_in(self.family)
            if net.managed and subnet is not None and ip in subnet:
                return net
        return None

    def _lives_elsewhere(self, ip: IPAddress, segment: str, sender: str | None = None) -> str:
        for owner in self.owners.get(ip, ()):
            if (sender, owner, segment) in self.deaf:
                guest, host = (owner, sender) if isinstance(self.lab.node(owner), Vm) else (sender, owner)
                return (f" ({guest} is a macvtap guest on {host}'s NIC there: a host and its "
                        "macvtap guests cannot hear each other through that NIC)")
            for iface in self.topo.interfaces[owner]:
                if iface.ip == ip and iface.segment != segment:
                    return (f" ({ip} is {owner}'s address on "
                            f"{_segment_label(iface.segment)}, another L2 segment)")
        return ""

    def _arp_fix(self, node: str, ip: IPAddress, segment: str, dst: IPAddress) -> str:
        if ip != dst:  # the gateway is missing: a route straight to a routed network helps
            fix = self._route_fix(node, dst)
            if fix.startswith("add `route"):
                return f"{ip} is nobody's address; {fix}"
            return f"{ip}, {node}'s gateway towards {dst}, is nobody's address: fix the gateway or route"
        net = self._network_of(ip)
        if net is not None and net.mode is Mode.ISOLATED and net.address_in(self.family) is None:
            which = "IPv6 address" if self.family is IPV6 else "address"
            return (f"isolated network `{net.name}` has no {which}, so its host is not on it: give it an "
                    "`address` (host-only) or reach its VMs from another VM on it")
        if self.family is IPV6 and ip in self.owners and any(
                i.segment == segment for o in self.owners[ip] for i in self.topo.interfaces[o]):
            return (f"{ip} is on another interface of its node than the one on {_segment_label(segment)}, "
                    "and NDP answers only on the interface that holds the address: route it through "
                    "that node's address on this segment")
        if ip in self.owners:
            return (f"{ip} is on another segment than {node}'s {_segment_label(segment)}: "
                    "route it through a node on both")
        return f"no node has {ip}: check the address, or the `route`/`gateway` that leads to it"


# --- why libvirt's FORWARD rules reject a packet, one network at a time --------------


def _fwi_fix(net: Network, inbound: str, packet: Packet, state: str) -> str:
    if net.mode is Mode.ISOLATED:
        return (f"`{net.name}` is isolated: libvirt forwards nothing into it; its VMs reach only "
                "each other and the host (use mode nat or routed to connect it)")
    subnet = net.subnet_in(family_of(packet.dst))
    if subnet is not None and packet.dst not in subnet:
        return f"{packet.dst} is not in {net.name}'s subnet {subnet}"
    if net.via not in (None, inbound):
        return (f"`{net.name}` accepts forwarded traffic only from `{net.via}` (its `via`), and this "
                f"comes in on {inbound}: drop `via {net.via}` from its mode to accept every interface")
    if state == "INVALID":
        return ("the reply crosses a host that never saw the request (conntrack state INVALID): make "
                "the path back go through the same host")
    if family_of(packet.dst) is IPV6:
        return (f"`{net.name}` masquerades IPv6 (`nat6 on`): from outside, only replies to its VMs' own "
                "connections get in; drop `nat6` to route its IPv6 (libvirt's default)")
    return (f"`{net.name}` is NAT: from outside, only replies to its VMs' own connections get in; "
            f"declare a `forward` for a service, or use `mode routed` with a route back")


def _fwo_fix(net: Network, outbound: str, packet: Packet) -> str:
    if net.mode is Mode.ISOLATED:
        return (f"`{net.name}` is isolated: libvirt forwards nothing out of it (use mode nat or "
                "routed to let its VMs out)")
    subnet = net.subnet_in(family_of(packet.src))
    if subnet is not None and packet.src not in subnet:
        return f"the source {packet.src} is not in {net.name}'s subnet {subnet}"
    return (f"`{net.name}` forwards out only through `{net.via}` (its `via`), and this leaves "
            f"through {outbound}: drop `via {net.via}` to allow every interface")


# --- helpers --------------------------------------------------------------------------


def _segment_label(segment: str) -> str:
    return f"segment `{segment}`"


def _kind(lab: Lab, name: str) -> str:
    node = lab.node(name)
    return node.kind.value if node is not None else "node"


_FORWARDING = {IPV4: "ip_forward", IPV6: "IPv6 forwarding"}


def _no_forward_fix(lab: Lab, node: str, family: Family = IPV4) -> str:
    n = lab.node(node)
    if isinstance(n, Host):
        if family is IPV6 and any(net.mode in (Mode.NAT, Mode.ROUTED, Mode.OPEN) for net in lab.networks_on(node)):
            return (f"{node}'s nat, routed and open networks have no IPv6 address, so libvirt leaves IPv6 "
                    "forwarding off: give one of them an IPv6 `address`")
        return (f"{node} has no nat or routed network, so libvirt leaves ip_forward off; "
                "packets cannot cross it")
    if isinstance(n, Vm):
        return f"VM {node} does not route; reach the destination through its host instead"
    return f"external {node} forwards only when another node routes through it"


def _forward_host(lab: Lab, fwd: Forward) -> str | None:
    vm = lab.node(fwd.vm)
    return vm.host if isinstance(vm, Vm) else None


def forward_vm_address(lab: Lab, fwd: Forward, family: Family = IPV4) -> IPAddress | None:
    """Where a `forward` DNATs to in `family` (topoc.model.topology.dnat_target); None: no
    rule, port closed."""
    target = dnat_target(lab, fwd, family)
    return target[0] if target is not None else None

def forward_target(lab: Lab, fwd: Forward, src: str, family: Family = IPV4) -> IPAddress | None:
    """The host address (of `family`) a client connects to for `fwd`: the host's address
    on a network the client has a nic on, else the host's first nic address (as `topoc
    verify` does)."""
    host = lab.node(_forward_host(lab, fwd) or "")
    source = lab.node(src)
    if not isinstance(host, Host) or source is None:
        return None
    networks = {nic.network for nic in source.nics}
    addresses = [(nic.network, a.ip) for nic in host.nics if (a := nic.address_in(family)) is not None]
    for network, ip in addresses:
        if network in networks:
            return ip
    return addresses[0][1] if addresses else None


# --- probes ---------------------------------------------------------------------------


def probe(lab: Lab | Analysis, src: str, target: IPAddress, forward: Forward | None = None) -> Probe:
    """Send one echo request (or a forwarded connection) from `src` to `target`, then
    its reply back, in the target's family."""
    return _probe_on(analysis_of(lab).engine_in(family_of(target)), src, target, forward)


def _probe_on(eng: Engine, src: str, target: IPAddress, forward: Forward | None) -> Probe:
    result = Probe(src, target, Leg(), lab=eng.lab, forward=forward)
    if target in eng.local.get(src, ()):
        result.request.note(src, f"{target} is its own address")
        result.request.ok = True
        result.request.path.append(src)
        result.ok = True
        return result
    choice = eng.lookup(src, target)
    if choice is None:
        result.request.path.append(src)
        result.request.fail(src, f"{src} has no route to {target}", eng._route_fix(src, target))
        return result
    assert choice.iface.ip is not None  # a route's interface always has an address
    flow = Flow(forward=forward)
    request = eng.walk(src, Packet(choice.iface.ip, target), flow)
    result.request = request
    if not request.ok or request.packet is None:
        return result
    delivered = request.packet
    responder = request.node
    flow.reply = True
    reply = eng.walk(responder, Packet(delivered.dst, delivered.src), flow)
    result.reply = reply
    if not reply.ok or reply.packet is None:
        return result
    if reply.node != src or reply.packet.dst != choice.iface.ip:
        reply.fail(reply.node, f"the reply is delivered to {reply.node} ({reply.packet.dst}), not to "
                   f"{src}", "two nodes share an address, or NAT rewrote it: check the addresses")
        return result
    if reply.packet.src != target:
        reply.fail(src, f"the reply comes from {reply.packet.src}, not from {target}, so {src} "
                   "drops it", "the client shares a subnet with the server, so the answer skips "
                   "the host's DNAT: connect from outside, or to the VM's own address")
        return result
    result.ok = True
    return result


def reach_address(lab: Lab | Analysis, src: str, ip: IPAddress | str) -> PairResult:
    """Whether `src` gets an echo reply from the single address `ip` (in its family)."""
    address = parse_address(ip) if isinstance(ip, str) else ip
    if address is None:
        raise ValueError(f"{ip!r} is not an IP address")
    p = probe(lab, src, address)
    return PairResult(src, str(address), p.ok, p.path, _reason(p))


def pair(lab: Lab | Analysis, src: str, dst: str, family: Family | None = None
         ) -> tuple[PairResult, list[Probe]]:
    """`src` reaches node `dst` when every address of `dst` answers: of both families,
    or of `family` alone."""
    an = analysis_of(lab)
    addresses = node_addresses(an, dst, family)
    if not addresses:
        return PairResult(src, dst, False, (src,), f"{dst} has no {_title(family)}address to reach"), []
    probes = []
    for ip in addresses:
        p = probe(an, src, ip)
        if p.ok and ip in an.engine_in(family_of(ip)).local.get(src, ()):
            # The source holds the address too (on a segment of its own, which the checks
            # allow): the echo never leaves it, so it is no reply from `dst`.
            p.ok = False
            p.request.failure = f"{ip} is also {src}'s own address: {src} answers itself, not {dst}"
            p.request.fix = (f"{src} and {dst} hold {ip} on separate segments; reach {dst} at "
                             "an address only it holds (or give one of them another)")
        elif p.ok and p.request.node != dst:
            p.ok = False
            p.request.failure = f"{ip} answers from {p.request.node}, not from {dst}"
            p.request.fix = (f"{p.request.node} and {dst} both hold {ip}; the one on "
                             f"{src}'s side answers (give one of them another if {src} "
                             f"must reach {dst})")
        probes.append(p)
    failed = next((p for p in probes if not p.ok), None)
    shown = failed or probes[0]
    return PairResult(src, dst, failed is None, shown.path, _reason(shown)), probes


def _reason(p: Probe) -> str:
    if not p.ok:
        return f"{p.target}: {p.failure}"
    events = [text for _, text in p.request.steps if "MASQUERADE" in text]
    via = list(p.request.path[1:-1])
    how = f"via {', '.join(via)}" if via else "directly"
    if events:
        how += " (masqueraded)"
    return f"{p.target}: replies {how}"


def _title(family: Family | None) -> str:
    return f"{family.title} " if family is not None else ""


@dataclass(frozen=True)
class Matrix:
    names: tuple[str, ...]
    results: dict[tuple[str, str], PairResult]
    family: Family | None = None  # None: every address of both families

    def get(self, src: str, dst: str) -> PairResult:
        return self.results[(src, dst)]

    def __iter__(self) -> Iterator[PairResult]:
        for src in self.names:
            for dst in self.names:
                if src != dst:
                    yield self.results[(src, dst)]

    def __len__(self) -> int:
        return len(self.results)


def predict(lab: Lab | Analysis, family: Family | None = None) -> Matrix:
    """Every ordered pair of distinct nodes (hosts, VMs, externals, in lab.nodes order):
    over every address of both families, or of `family` alone."""
    an = analysis_of(lab)
    names = tuple(node.name for node in an.lab.nodes)
    results = {}
    for src in names:
        for dst in names:
            if src != dst:
                results[(src, dst)] = pair(an, src, dst, family)[0]
    return Matrix(names, results, family)


def predict_by_family(lab: Lab | Analysis) -> list[Matrix]:
    """One matrix per family the lab uses (IPv4 first): what `topoc reach` shows and
    `topoc verify` compares for a dual-stack lab."""
    an = analysis_of(lab)
    return [predict(an, family) for family in an.families or (IPV4,)]


def forward_reach(lab: Lab | Analysis, family: Family = IPV4) -> list[tuple[Forward, str, bool]]:
    """For every `forward` and every node but its VM: whether a connection from that node
    to the host's address (forward_target) and the forwarded port gets its answer. In
    IPv6, from the nodes that have an IPv6 address."""
    an = analysis_of(lab)
    results = []
    for fwd in an.lab.forwards:
        for node in an.lab.nodes:
            if node.name == fwd.vm:
                continue
            if family is not IPV4 and not node_addresses(an, node.name, family):
                continue
            results.append((fwd, node.name, forward_probe(an, fwd, node.name, family).ok))
    return results


def forward_probe(subject: Lab | Analysis, fwd: Forward, src: str, family: Family = IPV4) -> Probe:
    an = analysis_of(subject)
    lab = an.lab
    target = forward_target(lab, fwd, src, family)
    if target is None:
        p = Probe(src, IPv4Address(0), Leg())  # no target: the request fails before one
        p.request.fail(src, f"host of {fwd.vm} has no address")
        return p
    if forward_vm_address(lab, fwd, family) is None:
        p = Probe(src, target, Leg())
        p.request.path.append(src)
        p.request.fail(src, f"no DNAT rule: {fwd.vm} has no static address on a nat, routed or "
                       "open network of its host, so the port stays closed",
                       f"give {fwd.vm} a static `address` on such a network")
        return p
    if _forward_host(lab, fwd) == src:
        p = Probe(src, target, Leg())
        p.request.path.append(src)
        p.request.fail(src, f"{src}'s own connections to {target} skip PREROUTING, where the DNAT is",
                       f"connect to {fwd.vm}'s address directly from the host")
        return p
    return probe(an, src, target, forward=fwd)


# --- fixes that are confirmed -----------------------------------------------------------

# Fixes that name one concrete edit of the lab, and that edit on the IR. A fix is offered
# only when the edit, applied to a copy of the lab, makes the probe succeed; free advice
# ("route it through a node on both") names no edit and is passed on as it is.
_DROP_VIA = re.compile(r"`(?P<net>[^`]+)` (?:accepts forwarded traffic only from|forwards out only "
                       r"through) `(?P<via>[^`]+)`.*drop `via (?P=via)`")
_ADD_ROUTE = re.compile(r"add `route (?P<dst>\S+) via (?P<gw>[0-9A-Fa-f.:]+)` to \w+ `(?P<node>[^`]+)`")


def _remedy(lab: Lab, fix: str) -> tuple[str, Lab] | None:
    """(what the edit is, the lab with it) for a fix that names one edit, else None."""
    if m := _DROP_VIA.search(fix):
        net = lab.network(m["net"])
        if net is None:
            return None
        networks = tuple(replace(n, via=None) if n.name == net.name else n for n in lab.networks)
        return f"dropping `via {m['via']}` from `{net.name}`", replace(lab, networks=networks)
    if m := _ADD_ROUTE.search(fix):
        node = lab.node(m["node"])
        if node is None:
            return None
        try:
            gateway = parse_address(m["gw"])
            if gateway is None:
                return None
            route = Route(ip_network(m["dst"]), gateway)
        except ValueError:
            return None
        with_route = replace(lab, hosts=tuple(_routed(h, node.name, route) for h in lab.hosts),
                             vms=tuple(_routed(v, node.name, route) for v in lab.vms),
                             externals=tuple(_routed(e, node.name, route) for e in lab.externals))
        return f"adding `route {m['dst']} via {m['gw']}` to `{node.name}`", with_route
    return None


_N = TypeVar("_N", Host, Vm, External)


def _routed(node: _N, name: str, route: Route) -> _N:
    return replace(node, routes=node.routes + (route,)) if node.name == name else node


def confirmed_fix(p: Probe) -> tuple[str, str]:
    """(the fix to offer, a note): the probe's fix when it names no concrete edit, or
    when the engine confirms that its edit makes this very probe succeed; otherwise no
    fix, and a note saying what the edit would not solve."""
    if p.ok or not p.fix or p.lab is None:
        return p.fix, ""
    remedy = _remedy(p.lab, p.fix)
    if remedy is None:
        return p.fix, ""
    what, fixed = remedy
    # A fresh engine, outside the caches: the lab being explained keeps its own.
    again = _probe_on(Engine(Topology(fixed, family_of(p.target))), p.src, p.target, p.forward)
    if again.ok:
        return p.fix, ""
    return "", f"{what} alone would not make it reachable (it would then fail: {again.failure})"


# --- explanations ---------------------------------------------------------------------


def _render_leg(lines: list[str], title: str, leg: Leg, width: int) -> None:
    lines.append(f"  {title}:")
    for node, text in leg.steps:
        lines.append(f"    {node:<{width}}  {text}")


def _render_probe(lines: list[str], p: Probe) -> None:
    status = "replies" if p.ok else "no reply"
    lines.append(f"to {p.target}: {status}")
    legs = [p.request] + ([p.reply] if p.reply is not None else [])
    width = max((len(node) for leg in legs for node, _ in leg.steps), default=0)
    _render_leg(lines, "request", p.request, width)
    if p.reply is not None:
        _render_leg(lines, "reply", p.reply, width)
    if not p.ok:
        lines.append(f"  why: {p.failure}")
        fix, note = confirmed_fix(p)
        if fix:
            lines.append(f"  fix: {fix}")
        if note:
            lines.append(f"  note: {note}")


def explain(lab: Lab | Analysis, src: str, dst: str) -> str:
    """Hop by hop, for every address of `dst` (or the single address `dst`): each node
    crossed, the route and libvirt rule used, or where it breaks, why, and the fix."""
    an = analysis_of(lab)
    ip = parse_address(dst)
    if ip is not None:
        p = probe(an, src, ip)
        lines = [f"{src} -> {ip}: {'reachable' if p.ok else 'unreachable'}"]
        _render_probe(lines, p)
        return "\n".join(lines) + "\n"
    result, probes = pair(an, src, dst)
    lines = [f"{src} -> {dst}: {'reachable' if result.reachable else 'unreachable'}"]
    if not probes:
        lines.append(f"  why: {result.reason}")
    for p in probes:
        _render_probe(lines, p)
    return "\n".join(lines) + "\n"


def explain_probe(p: Probe) -> str:
    lines: list[str] = []
    _render_probe(lines, p)
    return "\n".join(lines)


# --- the matrix as text and JSON ------------------------------------------------------

YES, NO, SELF = "✓", "✗", "·"
# `topoc reach FILE` refuses beyond this (about 500 nodes, some 10 s at ~45 us a pair):
# a matrix nobody can read, computed pair by pair.
MAX_MATRIX_PAIRS = 250_000


def render_matrix(matrix: Matrix) -> str:
    """Sources down, destinations across, then a legend and the unreachable pairs' reasons."""
    names = matrix.names
    width = max((len(n) for n in names), default=0)
    header = " " * width + " | " + " ".join(f"{n:^{max(len(n), 1)}}" for n in names)
    lines = [header, "-" * width + "-+-" + "-" * (len(header) - width - 3)]
    for src in names:
        cells = []
        for dst in names:
            mark = SELF if src == dst else (YES if matrix.get(src, dst).reachable else NO)
            cells.append(f"{mark:^{max(len(dst), 1)}}")
        lines.append((f"{src:>{width}} | " + " ".join(cells)).rstrip())
    lines += ["", f"rows are sources, columns destinations.  {YES} gets an echo reply from every "
              f"address of the destination   {NO} does not   {SELF} itself", ""]
    failures = [r for r in matrix if not r.reachable]
    if failures:
        lines.append("unreachable:")
        lines += [f"  {r.src} -> {r.dst}: {r.reason}" for r in failures]
        lines += ["", "run `topoc reach FILE SRC DST` to follow a pair hop by hop"]
    return "\n".join(lines) + "\n"


def render_matrices(matrices: list[Matrix]) -> str:
    """One matrix as render_matrix draws it; a dual-stack lab's, one per family, each
    under its family's name."""
    if len(matrices) == 1:
        return render_matrix(matrices[0])
    return "\n".join(f"{_title(m.family).strip() or 'every address'}:\n{render_matrix(m)}" for m in matrices)


def pair_json(result: PairResult) -> dict:
    return {"src": result.src, "dst": result.dst, "reachable": result.reachable,
            "path": list(result.path), "reason": result.reason}


def matrix_json(matrix: Matrix, by_family: list[Matrix] | None = None) -> dict:
    """{"pairs": [...]}; for a dual-stack lab also each family's pairs, under
    "families": {"IPv4": {"pairs": [...]}, "IPv6": {...}}."""
    result: dict = {"pairs": [pair_json(r) for r in matrix]}
    if by_family and len(by_family) > 1:
        result["families"] = {m.family.title: {"pairs": [pair_json(r) for r in m]}
                              for m in by_family if m.family is not None}
    return result


def is_address(text: str) -> bool:
    """Whether `text` is an IP address of either family (else it names a node)."""
    return parse_address(text) is not None
