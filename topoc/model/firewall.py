"""libvirt's firewall on one host, as ordered data: one table, read two ways.

The rules libvirt 9 installs for a lab's networks (per network mode and `via`), and the
lab's own rules that sit beside them (a `forward`'s DNAT and its accept, a routed or
open network's `masquerade`), are built here once, as frozen `Rule` values in the
order the kernel meets them. The host backend renders them to nft text
(topoc.backends.host), the reachability engine evaluates a packet against them
(topoc.model.reach, with `decide`), and `iptables` writes one the way `iptables -S`
shows libvirt's, for explanations. A libvirt rule lives here and nowhere else.

IPv6 (ip6tables, one table per family: `host_firewall(..., family)`): the same chains;
the general rules only for a network with an IPv6 address (DNS, DHCPv6 on udp 547/546);
a nat network's IPv6 is routed (the route accepts) unless `nat6` (<nat ipv6='yes'/>),
which masquerades it like IPv4 but with ff02::/16 as the only exception (no broadcast).
Source: libvirt 9.0's bridge_driver_linux.c networkAddGeneralIPv6FirewallRules and
networkAddIPSpecificFirewallRules, and tests/networkxml2firewalldata/nat-ipv6-linux.args,
nat-ipv6-masquerade-linux.args.

Primary sources (libvirt 9.x, the iptables backend; libvirt 10.4 added an nftables
backend with the same rules): https://libvirt.org/firewall.html ("The default
network", the LIBVIRT_* chains), https://libvirt.org/formatnetwork.html#connectivity,
and libvirt's src/network/network_iptables.c (in 9.x the same code sat in
src/network/bridge_driver_linux.c and src/util/viriptables.c),
whose test data tests/networkxml2firewalldata/{nat-default,route-default,isolated}-linux
lists the exact rules. Per network, libvirt installs:

- isolated (no <forward>), nat, route: the general rules (iptablesAddGeneralIPv4FirewallRules)
    LIBVIRT_INP  -i BR -p {tcp,udp} --dport {67,53} -j ACCEPT     DHCP and DNS to dnsmasq
    LIBVIRT_OUT  -o BR -p {tcp,udp} --dport {68,53} -j ACCEPT     and their answers
    LIBVIRT_FWO  -i BR -j REJECT                                  the catch-alls
    LIBVIRT_FWI  -o BR -j REJECT
    LIBVIRT_FWX  -i BR -o BR -j ACCEPT                            guests of one bridge
- nat (iptablesAddMasqueradingFirewallRules), inserted ahead of the catch-alls:
    LIBVIRT_FWO  -s NET -i BR [-o DEV] -j ACCEPT
    LIBVIRT_FWI  -d NET [-i DEV] -o BR -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    LIBVIRT_PRT  -s NET -d 224.0.0.0/24 [-o DEV] -j RETURN        (nat table, in this order)
    LIBVIRT_PRT  -s NET -d 255.255.255.255/32 [-o DEV] -j RETURN
    LIBVIRT_PRT  -s NET ! -d NET -p tcp [-o DEV] -j MASQUERADE --to-ports 1024-65535
    LIBVIRT_PRT  -s NET ! -d NET -p udp [-o DEV] -j MASQUERADE --to-ports 1024-65535
    LIBVIRT_PRT  -s NET ! -d NET [-o DEV] -j MASQUERADE
- route (iptablesAddRoutingFirewallRules): the FWO accept above, and
    LIBVIRT_FWI  -d NET [-i DEV] -o BR -j ACCEPT
- open, bridge: nothing ("libvirt will not add any firewall rules", formatnetwork.html).

FORWARD jumps to LIBVIRT_FWX, then LIBVIRT_FWI, then LIBVIRT_FWO (the chains are
inserted in reverse, iptablesSetupPrivateChains); every rule of one network is
--insert-ed, so its accepts end up ahead of its reject. Rules of different networks
never match the same packet (each names its own bridge, and subnets do not overlap),
so their relative order does not change a verdict. The INPUT/OUTPUT rules only accept,
and the hooks' policy is accept, so they decide nothing for the packets topoc models;
they are kept here for completeness and not rendered.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from ipaddress import IPv4Network, IPv6Network

from topoc.model.family import IPV4, IPV6, Family, IPAddress, IPNetwork
from topoc.model.ir import Forward, Lab, Mode, Network, Vm
from topoc.model.platform import DEFAULT_PROFILE, Profile
from topoc.model.topology import dnat_target

LOCAL_MULTICAST = IPv4Network("224.0.0.0/24")
LOCAL_BROADCAST = IPv4Network("255.255.255.255/32")
# IPv6 has no broadcast; its link-local multicast scope is ff02::/16 (RFC 4291 2.7).
LOCAL_MULTICAST6 = IPv6Network("ff02::/16")


class Hook(enum.StrEnum):
    """Where the kernel runs a chain (netfilter's hooks, in nft's words)."""

    INPUT = "input"
    OUTPUT = "output"
    FORWARD = "forward"
    PREROUTING = "prerouting"
    POSTROUTING = "postrouting"


class Chain(enum.Enum):
    """A chain of rules: libvirt's own, or the lab's beside them. `title` is the name
    explanations give it, `hook` where the kernel runs it, `short` libvirt's short name
    in the rules' comments."""

    INP = ("LIBVIRT_INP", Hook.INPUT, "INP")
    OUT = ("LIBVIRT_OUT", Hook.OUTPUT, "OUT")
    # The lab's accept of a connection its `forward` DNATed: ahead of libvirt's rejects.
    FORWARD_ACCEPT = ("forward", Hook.FORWARD, "")
    FWX = ("LIBVIRT_FWX", Hook.FORWARD, "FWX")
    FWI = ("LIBVIRT_FWI", Hook.FORWARD, "FWI")
    FWO = ("LIBVIRT_FWO", Hook.FORWARD, "FWO")
    PRT = ("LIBVIRT_PRT", Hook.POSTROUTING, "PRT")
    # A routed or open network's `masquerade`: the lab's, libvirt has none for them.
    MASQUERADE = ("masquerade (topoc.nft)", Hook.POSTROUTING, "")
    DNAT = ("forward DNAT", Hook.PREROUTING, "")

    def __init__(self, title: str, hook: Hook, short: str) -> None:
        self.title, self.hook, self.short = title, hook, short

    @property
    def libvirt(self) -> bool:
        """Whether libvirt installs this chain's rules itself (else only the lab's
        table has them: deploy must load it)."""
        return self.title.startswith("LIBVIRT_")


class Verdict(enum.StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"  # iptables' REJECT: ICMP port unreachable
    RETURN = "return"  # leave the chain undecided (in a nat chain: no NAT)
    MASQUERADE = "masquerade"
    DNAT = "dnat"


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: where it sits, what it matches (None: anything), what it does."""

    chain: Chain
    verdict: Verdict
    network: str  # the network it serves
    note: str  # which network and model, and what it is for (the nft comment)
    iif: str | None = None
    oif: str | None = None
    not_iif: str | None = None  # iifname != ...
    saddr: IPNetwork | None = None
    daddr: IPNetwork | None = None
    not_daddr: bool = False  # match a daddr outside `daddr`
    local_daddr: bool = False  # the destination is one of this host's addresses
    proto: str | None = None  # "tcp", "udp"
    dport: int | None = None
    ct_state: tuple[str, ...] = ()  # ("established", "related"): conntrack states accepted
    ct_dnat: bool = False  # only connections that a DNAT rewrote
    to_ports: tuple[int, int] | None = None  # masquerade: source port range
    to_addr: IPAddress | None = None  # dnat: new destination
    to_port: int | None = None
    family: Family = IPV4  # iptables' rule or ip6tables'


@dataclass(frozen=True, slots=True)
class Packet:
    """What a rule can look at: a packet on its way through a host, and its conntrack
    entry. `state` is conntrack's: NEW, ESTABLISHED (a reply, or a later packet of a
    connection) or INVALID (a reply whose request this host never saw)."""

    src: IPAddress  # both of the table's family
    dst: IPAddress
    iif: str | None = None  # None: the host itself sent it
    oif: str | None = None  # None: not routed yet (prerouting)
    proto: str = "icmp"
    dport: int | None = None
    state: str = "NEW"
    dnat: bool = False  # conntrack: a DNAT rewrote this connection
    local_dst: bool = False  # dst is one of the host's addresses


def matches(rule: Rule, p: Packet) -> bool:
    """Whether every match of `rule` holds for `p`."""
    if rule.iif is not None and rule.iif != p.iif:
        return False
    if rule.oif is not None and rule.oif != p.oif:
        return False
    if rule.not_iif is not None and rule.not_iif == p.iif:
        return False
    if rule.saddr is not None and p.src not in rule.saddr:
        return False
    if rule.daddr is not None and (p.dst in rule.daddr) == rule.not_daddr:
        return False
    if rule.local_daddr and not p.local_dst:
        return False
    if rule.proto is not None and rule.proto != p.proto:
        return False
    if rule.dport is not None and rule.dport != p.dport:
        return False
    if rule.ct_state and p.state.lower() not in rule.ct_state:
        return False
    return p.dnat or not rule.ct_dnat


def decide(rules: Iterable[Rule], p: Packet) -> Rule | None:
    """The rule that decides `p` in one hook: the first that matches with a final
    verdict (a RETURN ends its chain undecided; for LIBVIRT_PRT that means no NAT, and
    no later rule of the same chain may NAT it). None: the hook's policy (accept)."""
    returned: set[Chain] = set()
    for rule in rules:
        if rule.chain in returned or not matches(rule, p):
            continue
        if rule.verdict is Verdict.RETURN:
            returned.add(rule.chain)
            continue
        return rule
    return None


def on_interfaces(rules: Iterable[Rule], iif: str | None, oif: str | None) -> tuple[Rule, ...]:
    """The rules whose interface matches can hold for a packet from `iif` to `oif`, in
    order: `decide` over them gives the same rule as over all (a host's rules each name
    their bridge, so this is a short list; callers cache it per interface pair)."""
    return tuple(r for r in rules if (r.iif is None or r.iif == iif)
                 and (r.oif is None or r.oif == oif) and (r.not_iif is None or r.not_iif != iif))


# --- libvirt's rules for one network --------------------------------------------------


def _label(net: Network) -> str:
    return f"{net.name} ({net.model})"


def general_rules(net: Network, family: Family = IPV4) -> tuple[Rule, ...]:
    """The general rules of a firewalled network: DHCP and DNS to the host, the
    catch-all rejects and the hairpin accept. IPv4: iptablesAddGeneralIPv4FirewallRules,
    for every firewalled network. IPv6: networkAddGeneralIPv6FirewallRules, only for a
    network with an IPv6 address (without one libvirt adds no ip6tables rule for it, so
    its bridge forwards IPv6 freely), with DHCPv6's ports 547 in and 546 out."""
    bridge, label = net.bridge, _label(net)
    if family is IPV6 and net.address6 is None:
        return ()
    # libvirt's insertion order: IPv4 DHCP then DNS, both over tcp and udp; IPv6 DNS,
    # then DHCPv6 over udp only (tests/networkxml2firewalldata/nat-ipv6-linux.args).
    inbound: tuple[tuple[int, str, tuple[str, ...]], ...] = (
        (67, "DHCP", ("tcp", "udp")), (53, "DNS", ("tcp", "udp")))
    outbound: tuple[tuple[int, str, tuple[str, ...]], ...] = (
        (68, "DHCP", ("tcp", "udp")), (53, "DNS", ("tcp", "udp")))
    if family is IPV6:
        inbound = ((53, "DNS", ("tcp", "udp")), (547, "DHCPv6", ("udp",)))
        outbound = ((53, "DNS", ("tcp", "udp")), (546, "DHCPv6", ("udp",)))
    rules = [Rule(Chain.INP, Verdict.ACCEPT, net.name, f"{label}: INP {what}", iif=bridge,
                  proto=proto, dport=port)
             for port, what, protos in inbound for proto in protos]
    rules += [Rule(Chain.OUT, Verdict.ACCEPT, net.name, f"{label}: OUT {what}", oif=bridge,
                   proto=proto, dport=port)
              for port, what, protos in outbound for proto in protos]
    return (*rules,
            Rule(Chain.FWX, Verdict.ACCEPT, net.name, f"{label}: FWX within the bridge",
                 iif=bridge, oif=bridge),
            Rule(Chain.FWI, Verdict.REJECT, net.name, f"{label}: FWI reject the rest in", oif=bridge),
            Rule(Chain.FWO, Verdict.REJECT, net.name, f"{label}: FWO reject the rest out", iif=bridge))


def forward_rules(net: Network, family: Family = IPV4) -> tuple[Rule, ...]:
    """The accepts that a nat or routed network adds ahead of its catch-alls (FWI's,
    then FWO's). A nat network's IPv6 is routed (networkAddRoutingFirewallRules) unless
    it has `nat6` (<nat ipv6='yes'/>), when it is masqueraded like IPv4
    (networkAddIPSpecificFirewallRules)."""
    subnet, label = net.subnet_in(family), _label(net)
    if subnet is None:
        return ()
    masqueraded = net.mode is Mode.NAT and net.masquerades(family)
    routed = net.mode is Mode.ROUTED or (net.mode is Mode.NAT and not masqueraded)
    rules = []
    if masqueraded:  # iptablesForwardAllowRelatedIn
        rules.append(Rule(Chain.FWI, Verdict.ACCEPT, net.name, f"{label}: FWI replies back in",
                          daddr=subnet, iif=net.via, oif=net.bridge,
                          ct_state=("established", "related")))
    elif routed:  # iptablesForwardAllowIn
        rules.append(Rule(Chain.FWI, Verdict.ACCEPT, net.name, f"{label}: FWI routed in",
                          daddr=subnet, iif=net.via, oif=net.bridge))
    if net.mode in (Mode.NAT, Mode.ROUTED):  # iptablesForwardAllowOut
        rules.append(Rule(Chain.FWO, Verdict.ACCEPT, net.name, f"{label}: FWO out of the subnet",
                          saddr=subnet, iif=net.bridge, oif=net.via))
    return tuple(rules)


def masquerade_rules(net: Network, chain: Chain, profile: Profile = DEFAULT_PROFILE,
                     family: Family = IPV4) -> tuple[Rule, ...]:
    """iptablesAddMasqueradingFirewallRules: never NAT local multicast or broadcast
    (strict DHCP clients refuse a reply from a changed port; IPv6 has no broadcast, so
    only ff02::/16); TCP and UDP get a source port of 1024 or above (NFS trusts ports
    below); then everything else leaving the subnet through `via` (any device without
    one). A routed or open network's `masquerade` (Chain.MASQUERADE) gets the same rules
    as libvirt's for a nat one."""
    s, out = net.subnet_in(family), net.via
    label = f"{_label(net)}: {chain.short} " if chain.short else f"{_label(net)}: "
    if s is None:
        return ()

    base = Rule(chain, Verdict.MASQUERADE, net.name, "", saddr=s, oif=out)
    ports = profile.masquerade_ports
    masq = replace(base, daddr=s, not_daddr=True)
    exceptions = ((replace(base, verdict=Verdict.RETURN, note=f"{label}no NAT for multicast",
                           daddr=LOCAL_MULTICAST),
                   replace(base, verdict=Verdict.RETURN, note=f"{label}no NAT for broadcast",
                           daddr=LOCAL_BROADCAST))
                  if family is IPV4 else
                  (replace(base, verdict=Verdict.RETURN, note=f"{label}no NAT for multicast",
                           daddr=LOCAL_MULTICAST6),))
    return (
        *exceptions,
        replace(masq, note=f"{label}masquerade tcp", proto="tcp", to_ports=ports),
        replace(masq, note=f"{label}masquerade udp", proto="udp", to_ports=ports),
        replace(masq, note=f"{label}masquerade"),
    )


# --- the lab's rules beside them ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortForward:
    """A `forward` of a VM on this host, with where it DNATs to."""

    forward: Forward
    address: IPAddress
    network: Network

    @property
    def note(self) -> str:
        f = self.forward
        return f"forward {f.protocol} {f.port} to {f.vm}:{f.vm_port} on {_label(self.network)}"


def dnat_rules(forwards: Iterable[PortForward]) -> tuple[Rule, ...]:
    """Prerouting: traffic to one of the host's own addresses (fib daddr type local),
    and not from the VM's own bridge (a VM there would get its answer straight from the
    target, bypassing the un-DNAT: it uses the VM's address instead)."""
    return tuple(Rule(Chain.DNAT, Verdict.DNAT, pf.network.name, pf.note,
                      not_iif=pf.network.bridge, local_daddr=True, proto=pf.forward.protocol,
                      dport=pf.forward.port, to_addr=pf.address, to_port=pf.forward.vm_port)
                 for pf in forwards)


def dnat_accept_rules(forwards: Iterable[PortForward]) -> tuple[Rule, ...]:
    """Forward, ahead of libvirt's FWI, so a NAT network's reject does not drop the
    DNATed connection; `ct status dnat` admits only what the prerouting rule rewrote."""
    return tuple(Rule(Chain.FORWARD_ACCEPT, Verdict.ACCEPT, pf.network.name, pf.note,
                      daddr=IPv4Network(pf.address) if pf.address.version == 4 else IPv6Network(pf.address),
                      oif=pf.network.bridge,
                      proto=pf.forward.protocol, dport=pf.forward.vm_port, ct_dnat=True)
                 for pf in forwards)


# --- one host's table ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostFirewall:
    """Every rule on one host, each hook's rules in the order the kernel meets them."""

    forward: tuple[Rule, ...]
    postrouting: tuple[Rule, ...]
    prerouting: tuple[Rule, ...]
    input: tuple[Rule, ...]
    output: tuple[Rule, ...]
    forwards: tuple[PortForward, ...]
    skipped_forwards: tuple[Forward, ...]  # no DNAT target: no rule

    @property
    def lab_rules(self) -> tuple[Rule, ...]:
        """The rules libvirt does not install (forwards, `masquerade`): what only the
        lab's own table brings to a libvirt host."""
        return tuple(r for r in (*self.prerouting, *self.forward, *self.postrouting)
                     if not r.chain.libvirt)

    def hook(self, hook: Hook) -> tuple[Rule, ...]:
        return {Hook.FORWARD: self.forward, Hook.POSTROUTING: self.postrouting,
                Hook.PREROUTING: self.prerouting, Hook.INPUT: self.input,
                Hook.OUTPUT: self.output}[hook]


def host_forwards(lab: Lab, host: str, family: Family = IPV4) -> tuple[list[PortForward], list[Forward]]:
    """Each `forward` of a VM on `host` with its DNAT target in `family` (in protocol,
    port order), and the forwards without one."""
    found, skipped = [], []
    for fwd in sorted(lab.forwards, key=lambda f: (f.protocol, f.port, f.vm, f.vm_port)):
        vm = lab.node(fwd.vm)
        if not isinstance(vm, Vm) or vm.host != host:
            continue
        target = dnat_target(lab, fwd, family)
        if target is None:
            skipped.append(fwd)
        else:
            found.append(PortForward(fwd, target[0], target[1]))
    return found, skipped


def host_firewall(lab: Lab, host: str, profile: Profile = DEFAULT_PROFILE,
                  family: Family = IPV4) -> HostFirewall:
    """The table of one host in one address family (iptables' or ip6tables'): libvirt's
    rules for its firewalled networks and the lab's forwards and masquerades, networks
    in name order. A `forward` DNATs in each family the VM has an address in (nft's
    `ip6` nat hooks take dnat like `ip`'s, nft(8) NAT STATEMENTS)."""
    networks = sorted((n for n in lab.networks_on(host) if n.managed and n.bridge),
                      key=lambda n: n.name)
    firewalled = [n for n in networks if n.mode in profile.firewalled_modes]
    general = {n.name: general_rules(n, family) for n in firewalled}
    accepts = {n.name: forward_rules(n, family) for n in firewalled}

    def of(chain: Chain) -> list[Rule]:
        # Per network its accepts, then its reject (libvirt --insert-s the accepts last).
        return [r for n in firewalled for r in (*accepts[n.name], *general[n.name])
                if r.chain is chain]

    forwards, skipped = host_forwards(lab, host, family)
    postrouting = [r for n in firewalled if n.mode in profile.masqueraded_modes and n.masquerades(family)
                   for r in masquerade_rules(n, Chain.PRT, profile, family)]
    # The lab's own: a routed or open network's `masquerade`, beside libvirt's (which has
    # no rule for them), in the lab's table. Its nat hook runs as libvirt's does.
    postrouting += [r for n in networks if n.masquerade and n.mode not in profile.masqueraded_modes
                    for r in masquerade_rules(n, Chain.MASQUERADE, profile, family)]
    def tagged(rules: Iterable[Rule]) -> tuple[Rule, ...]:
        return tuple(rules) if family is IPV4 else tuple(replace(r, family=family) for r in rules)

    return HostFirewall(
        forward=tagged((*dnat_accept_rules(forwards), *of(Chain.FWX), *of(Chain.FWI), *of(Chain.FWO))),
        postrouting=tagged(postrouting),
        prerouting=tagged(dnat_rules(forwards)),
        input=tagged(of(Chain.INP)),
        output=tagged(of(Chain.OUT)),
        forwards=tuple(forwards),
        skipped_forwards=tuple(skipped),
    )


# --- libvirt's dialect: a rule as `iptables -S` shows it -------------------------------


def _addr(net: IPNetwork) -> str:
    return str(net) if net.prefixlen < net.max_prefixlen else f"{net.network_address}/{net.max_prefixlen}"


def iptables(rule: Rule) -> str:
    """`-s NET -d NET -i IF -o IF -p P ... -j VERDICT`, the order `iptables -S` prints
    its matches in. The conntrack states keep libvirt's own argument order
    (ESTABLISHED,RELATED, as its test data writes them; `-S` shows RELATED,ESTABLISHED)."""
    parts = []
    if rule.saddr is not None:
        parts.append(f"-s {_addr(rule.saddr)}")
    if rule.daddr is not None:
        parts.append(f"{'! ' if rule.not_daddr else ''}-d {_addr(rule.daddr)}")
    if rule.iif is not None:
        parts.append(f"-i {rule.iif}")
    if rule.not_iif is not None:
        parts.append(f"! -i {rule.not_iif}")
    if rule.oif is not None:
        parts.append(f"-o {rule.oif}")
    if rule.proto is not None:
        parts.append(f"-p {rule.proto}")
    if rule.local_daddr:
        parts.append("-m addrtype --dst-type LOCAL")
    if rule.dport is not None:
        parts.append(f"-m {rule.proto} --dport {rule.dport}")
    if rule.ct_state:
        parts.append(f"-m conntrack --ctstate {','.join(s.upper() for s in rule.ct_state)}")
    if rule.ct_dnat:
        parts.append("-m conntrack --ctstate DNAT")
    if rule.verdict is Verdict.REJECT:
        # iptables' and ip6tables' default reject (iptables-extensions(8), REJECT)
        parts.append(f"-j REJECT --reject-with {'icmp6' if rule.family is IPV6 else 'icmp'}-port-unreachable")
    elif rule.verdict is Verdict.DNAT:
        parts.append(f"-j DNAT --to-destination {rule.to_addr}:{rule.to_port}")
    else:
        parts.append(f"-j {rule.verdict.value.upper()}")
        if rule.to_ports is not None:
            parts.append(f"--to-ports {rule.to_ports[0]}-{rule.to_ports[1]}")
    return " ".join(parts)


def explain(rule: Rule) -> str:
    """The rule for an explanation: `LIBVIRT_FWI: -o br0 -j REJECT ...` (`ip6tables
    LIBVIRT_FWI: ...` for an IPv6 rule)."""
    command = "ip6tables " if rule.family is IPV6 else ""
    return f"{command}{rule.chain.title}: {iptables(rule)}"
