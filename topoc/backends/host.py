"""The host backend: the IR -> `up.sh`, `down.sh` and `topoc.nft` for each hypervisor.

The shell path of the four models, without libvirt: iproute2 for bridges, taps,
addresses and routes, and one nftables table of the lab's own that renders, rule for
rule, the host's firewall table of topoc.model.firewall: what libvirt 9 installs for
the same networks (FWX, then FWI, then FWO; masquerade for NAT) and the lab's own rules
(forwards, `masquerade`). The reachability engine (topoc.model.reach) evaluates that same
table, so the shell path, the libvirt path and the prediction agree. This module only
decides *what* the files say, as a plan of plain values; the jinja2 templates in
topoc/templates/host/ lay them out. It does no I/O and assumes a lab that checked clean.

Safety: every value that reaches a script passes through `shell_quote` (the `q` filter:
shlex.quote, and quotes around shell reserved words such as `done`);
only names that passed the grammar's identifier rules and `ipaddress`-formatted values
reach the nft file, and interface names are quoted there as strings anyway. Disk paths,
the only free strings of the language, never reach these files.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import PurePath

import jinja2

# The firewall (libvirt's rules and the lab's own) is topoc.model.firewall's table, and
# the platform's facts (which modes forward) the profile's, so the scripts and the
# reachability engine, which evaluates the same table, cannot disagree.
from topoc.model import firewall as fw
from topoc.model import naming
from topoc.model.analysis import Analysis
from topoc.model.family import IPV4, IPV6, Family, IPAddress, IPInterface, IPNetwork
from topoc.model.ir import Host, Lab, Mode, Network, Vm
from topoc.model.platform import DEFAULT_PROFILE
from topoc.model.topology import host_forwarding, underlay

SCRIPT_NAMES = ("up.sh", "down.sh", "topoc.nft")

# Words bash parses as syntax even as an argument or an assignment's value (`LAB=done`,
# shellcheck SC1010), which shlex.quote leaves bare: the bash(1) manual's RESERVED WORDS.
# A lab, host or bridge may be called `done` or `do`, so these are always quoted.
SHELL_RESERVED = frozenset({"!", "case", "coproc", "do", "done", "elif", "else", "esac", "fi",
                            "for", "function", "if", "in", "select", "then", "time", "until",
                            "while", "{", "}", "[[", "]]"})

# With STP on, the kernel refuses a forward delay under 2 s (BR_MIN_FORWARD_DELAY), so a
# network with `stp on` gets the smallest it accepts; in centiseconds, as ip-link(8) takes it.
FORWARD_DELAY_STP_CS = 200


# --- the plan: what the three files say, as plain values ----------------------------


@dataclass(frozen=True, slots=True)
class BridgePlan:
    name: str
    network: str
    model: str
    stp: bool
    mtu: int | None
    address: str | None  # CIDR the host takes on the bridge, or None (isolated, bridged)
    address6: str | None = None  # its IPv6 address (nodad), or None
    # libvirt's IPv6 sysctls on a virtual network's bridge: None leaves them alone (an
    # IPv4-only lab, whose output does not change; a bridged or carried network, which
    # libvirt starts without them); True: IPv6 on (disable_ipv6 0), False: off.
    ipv6: bool | None = None

    @property
    def forward_delay(self) -> int:
        return FORWARD_DELAY_STP_CS if self.stp else 0


@dataclass(frozen=True, slots=True)
class UplinkPlan:
    """A bridged network: the host NIC the bridge enslaves, and what moves to the bridge."""

    nic: str
    bridge: str
    network: str
    address: str | None  # the host's address on the NIC, moved to the bridge
    gateway: str | None  # the default route's gateway, moved to the bridge
    address6: str | None = None  # the same for IPv6 (::/0)
    gateway6: str | None = None


@dataclass(frozen=True, slots=True)
class TapPlan:
    name: str
    vm: str
    nic: str
    bridge: str
    network: str
    mtu: int | None


@dataclass(frozen=True, slots=True)
class VxlanPlan:
    """A network on several hosts: the VXLAN link that joins this host's bridge of it to
    the other hosts' (unicast, one all-zero forwarding entry per remote host)."""

    name: str
    vni: int
    network: str
    bridge: str
    local: str  # this host's address on the underlay
    remotes: tuple[str, ...]  # the other hosts' addresses there
    mtu: int | None


@dataclass(frozen=True, slots=True)
class RoutePlan:
    destination: str
    via: str
    v6: bool = False  # an IPv6 route (ip -6)


@dataclass(frozen=True, slots=True)
class Rule:
    text: str  # the nft rule, without its comment
    comment: str  # which network and model it serves, and what libvirt calls it


@dataclass(frozen=True, slots=True)
class Section:
    """A run of rules under one heading comment in a chain."""

    heading: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    hook: str  # the base chain declaration, e.g. "type filter hook forward priority filter"
    sections: tuple[Section, ...]


@dataclass(frozen=True, slots=True)
class HostPlan:
    lab: str
    host: str
    source: str  # the .topo file's name, for the header comments
    table: str
    state_dir: str
    bridges: tuple[BridgePlan, ...]
    uplinks: tuple[UplinkPlan, ...]
    taps: tuple[TapPlan, ...]
    routes: tuple[RoutePlan, ...]
    forwarding: bool
    chains: tuple[Chain, ...]
    skipped_forwards: tuple[str, ...] = field(default=())
    masquerades: tuple[str, ...] = field(default=())  # networks with the lab's `masquerade`
    vxlans: tuple[VxlanPlan, ...] = field(default=())
    # IPv6, only for a lab that has it (an IPv4-only lab's files do not change):
    ipv6: bool = False  # the lab has IPv6: the inet table's rules name their family
    chains6: tuple[Chain, ...] | None = None  # the `ip6` table, when the host has an IPv6 network
    forwarding6: bool = False  # net.ipv6.conf.all.forwarding (topology.forwards, IPv6)


# --- names -----------------------------------------------------------------------------


def table_name(lab: Lab) -> str:
    """The lab's own nftables table (family inet): `topoc_<lab>`."""
    return naming.nft_table(lab.name)


def state_dir(lab: Lab, host: Host) -> str:
    """Where up.sh remembers what it did, unless TOPOC_STATE_DIR says otherwise."""
    return naming.state_folder(lab.name, host.name)


def _comment_safe(text: str) -> str:
    """Text fit for a `#` comment line or an nft comment: no line breaks, no quotes,
    no control characters (a file name given on the command line may hold any of them)."""
    return "".join(c if c.isprintable() and c not in "\"\\" else "?" for c in text)


# --- iproute2 -------------------------------------------------------------------------


def _managed_networks(lab: Lab, host: Host) -> list[Network]:
    return sorted((n for n in lab.networks_on(host.name) if n.managed and n.bridge),
                  key=lambda n: n.name)


def _bridges(networks: list[Network], ipv6: bool) -> tuple[BridgePlan, ...]:
    plans = []
    for net in networks:
        # A bridged network's bridge takes the host NIC's address (see _uplinks), not its own.
        own = net.mode is not Mode.BRIDGED
        address = str(net.address) if net.address is not None and own else None
        address6 = str(net.address6) if net.address6 is not None and own else None
        # libvirt sets a virtual network's bridge's IPv6 sysctls (networkSetIPv6Sysctls,
        # bridge_driver.c, libvirt 9.0): disable_ipv6 0 only with an IPv6 address;
        # accept_ra 0 and autoconf 0 always. A bridged network's bridge is the host's.
        sysctls = (net.address6 is not None) if ipv6 and own else None
        plans.append(BridgePlan(net.bridge, net.name, net.model, net.stp, net.mtu, address,  # type: ignore[arg-type]
                                address6, sysctls))
    return tuple(plans)


def _carried_networks(lab: Lab, host: Host) -> list[Network]:
    """Networks on several hosts that this host carries at L2 (another holds the gateway)."""
    return sorted((n for n in lab.networks_carried_by(host.name) if n.bridge), key=lambda n: n.name)


def _l2_bridges(networks: list[Network]) -> tuple[BridgePlan, ...]:
    # No address: the gateway, DHCP, DNS and firewall are on the network's first host.
    return tuple(BridgePlan(n.bridge, n.name, f"{n.model}, at L2 only: its gateway is on {n.host}",  # type: ignore[arg-type]
                            n.stp, n.mtu, None) for n in networks)


def _vxlans(lab: Lab, host: Host, networks: list[Network]) -> tuple[VxlanPlan, ...]:
    """One VXLAN link per network on several hosts: VNI from the IR, UDP 4789, unicast
    to each other host's address on the underlay (https://docs.kernel.org/networking/vxlan.html)."""
    plans = []
    for net in networks:
        if not net.spanning or net.vni is None:
            continue
        found = underlay(lab, net)
        if found is None:  # the checks report it
            continue
        addresses = found[1]
        plans.append(VxlanPlan(naming.vxlan_name(net.vni), net.vni, net.name, net.bridge,  # type: ignore[arg-type]
                               addresses[host.name],
                               tuple(addresses[h] for h in net.hosts if h != host.name), net.mtu))
    return tuple(plans)


def _default_gateway(host: Host, address: IPInterface | None, nic_gateway: IPAddress | None,
                     family: Family) -> IPAddress | None:
    """The gateway of the host's default route through a NIC in one family: the nic's
    `gateway`, else a `route default via` whose gateway lies on the NIC's subnet."""
    if nic_gateway is not None:
        return nic_gateway
    for route in host.routes:
        if (route.is_default and route.family is family and address is not None
                and route.via in address.network):
            return route.via
    return None


def _text(value: object | None) -> str | None:
    return str(value) if value is not None else None


def _uplinks(host: Host, networks: list[Network]) -> tuple[UplinkPlan, ...]:
    plans = []
    for net in networks:
        if net.mode is not Mode.BRIDGED or net.via is None:
            continue
        nic = next((n for n in host.nics if n.name == net.via), None)
        moved = []
        for family in (IPV4, IPV6):
            address = nic.address_in(family) if nic is not None else None
            moved += [address, _default_gateway(host, address, nic.gateway_in(family) if nic is not None
                                                else None, family)]
        plans.append(UplinkPlan(net.via, net.bridge, net.name,  # type: ignore[arg-type]
                                *(_text(value) for value in moved)))
    return tuple(plans)


def _taps(lab: Lab, vms: list[Vm], networks: list[Network]) -> tuple[TapPlan, ...]:
    by_name = {n.name: n for n in networks}
    plans = []
    for vm in vms:
        for nic in vm.nics:
            net = by_name.get(nic.network)
            if net is None:  # not a network of this host: the checks report it
                continue
            plans.append(TapPlan(naming.tap_name(lab.name, vm.name, nic.index), vm.name, nic.name,
                                 net.bridge, net.name, net.mtu))  # type: ignore[arg-type]
    return tuple(plans)


def _routes(host: Host) -> tuple[RoutePlan, ...]:
    # The default route is the machine's own (like its nic addresses): up.sh leaves it be.
    return tuple(RoutePlan(str(r.destination), str(r.via), r.family is IPV6)
                 for r in host.routes if not r.is_default)


# --- nftables: the host's firewall table (topoc.model.firewall), rendered ------------


def _match_text(rule: fw.Rule, name_family: bool = False) -> list[str]:
    """A rule's matches in nft's words, in the order nft lists them. `name_family`: in
    the inet table of a lab with IPv6, a rule that matches no address says that it is
    IPv4's (`meta nfproto ipv4`), as iptables' rules are: libvirt's ip6tables rules are
    the `ip6` table's, and a reject here must not stop the IPv6 packets that table
    accepts (https://wiki.nftables.org/wiki-nftables/index.php/Nftables_families)."""
    parts = []
    ip = rule.family.facts.nft  # `ip` or `ip6`
    if name_family and rule.saddr is None and rule.daddr is None:
        parts.append(f"meta nfproto {rule.family.facts.libvirt}")
    if rule.saddr is not None:
        parts.append(f"{ip} saddr {_nft_addr(rule.saddr)}")
    if rule.daddr is not None:
        parts.append(f"{ip} daddr {'!= ' if rule.not_daddr else ''}{_nft_addr(rule.daddr)}")
    if rule.iif is not None:
        parts.append(f'iifname "{rule.iif}"')
    if rule.not_iif is not None:
        parts.append(f'iifname != "{rule.not_iif}"')
    if rule.oif is not None:
        parts.append(f'oifname "{rule.oif}"')
    if rule.local_daddr:
        parts.append("fib daddr type local")
    if rule.proto is not None:
        parts.append(f"{rule.proto} dport {rule.dport}" if rule.dport is not None
                     else f"meta l4proto {rule.proto}")
    if rule.ct_state:
        parts.append(f"ct state {','.join(rule.ct_state)}")
    if rule.ct_dnat:
        parts.append("ct status dnat")
    return parts


def _nft_addr(net: IPNetwork) -> str:
    # nft lists a /32 (IPv6: /128) as the bare address.
    return str(net) if net.prefixlen < net.max_prefixlen else str(net.network_address)


def _verdict_text(rule: fw.Rule) -> str:
    if rule.verdict is fw.Verdict.DNAT and rule.family is IPV6:
        # The ip6 table's own family: no `ip6` keyword, the address in brackets before
        # its port (nft(8), NAT STATEMENTS; as `nft list` prints it back).
        return f"dnat to [{rule.to_addr}]:{rule.to_port}"
    if rule.verdict is fw.Verdict.DNAT:
        return f"dnat ip to {rule.to_addr}:{rule.to_port}"
    if rule.verdict is fw.Verdict.MASQUERADE and rule.to_ports is not None:
        return f"masquerade to :{rule.to_ports[0]}-{rule.to_ports[1]}"
    return rule.verdict.value


def nft_rule(rule: fw.Rule, name_family: bool = False) -> Rule:
    """One rule of the table as an nft rule and its comment. A reject is nft's bare
    `reject`: ICMP port unreachable in IPv4, ICMPv6 port unreachable in an `ip6` table,
    the defaults of iptables' and ip6tables' REJECT that libvirt uses
    (https://wiki.nftables.org/wiki-nftables/index.php/Rejecting_traffic)."""
    return Rule(" ".join([*_match_text(rule, name_family), _verdict_text(rule)]), rule.note)


# Each chain of the table under its heading, in the order of the hook's rules.
_HEADINGS = {
    fw.Chain.FORWARD_ACCEPT: "port forwards: accept what prerouting DNATed (wins over the rejects below)",
    fw.Chain.FWX: "libvirt FWX: hairpin within a bridge",
    fw.Chain.FWI: "libvirt FWI: into a bridge",
    fw.Chain.FWO: "libvirt FWO: out of a bridge",
    fw.Chain.PRT: "libvirt PRT: source NAT leaving a nat network",
    fw.Chain.MASQUERADE: "masquerade: source NAT leaving a routed or open network",
    fw.Chain.DNAT: "port forwards: DNAT to the VM",
}
# The nft base chains of the lab's table; libvirt's INPUT/OUTPUT rules only accept DHCP
# and DNS, which a stock host's input policy already accepts, so they are not written.
_BASE_CHAINS = (
    (fw.Hook.FORWARD, "type filter hook forward priority filter"),
    (fw.Hook.POSTROUTING, "type nat hook postrouting priority srcnat"),
    (fw.Hook.PREROUTING, "type nat hook prerouting priority dstnat"),
)


def _sections(rules: tuple[fw.Rule, ...], name_family: bool = False) -> tuple[Section, ...]:
    sections: list[Section] = []
    for rule in rules:
        heading = _HEADINGS[rule.chain]
        if sections and sections[-1].heading == heading:
            sections[-1] = Section(heading, (*sections[-1].rules, nft_rule(rule, name_family)))
        else:
            sections.append(Section(heading, (nft_rule(rule, name_family),)))
    return tuple(sections)


def _chains(lab: Lab, host: Host, family: Family = IPV4, name_family: bool = False
            ) -> tuple[tuple[Chain, ...], list[str]]:
    """One family's table (topoc.model.firewall's, as libvirt 9.0 installs it with
    iptables or ip6tables) as nft base chains."""
    table = fw.host_firewall(lab, host.name, family=family)
    chains = tuple(Chain(hook.value, declaration, _sections(table.hook(hook), name_family))
                   for hook, declaration in _BASE_CHAINS if table.hook(hook))
    skipped = [f"{f.protocol} {f.port} to {f.vm}:{f.vm_port}" for f in table.skipped_forwards]
    return chains, skipped


# --- putting it together ----------------------------------------------------------------


def host_plan(lab: Lab | Analysis, host: Host) -> HostPlan:
    """What one host's files say. Pass the compilation's Analysis when there is one (the
    lab's families are computed once per Analysis, not once per host)."""
    an = lab if isinstance(lab, Analysis) else Analysis(lab)  # lazy: builds only what is asked
    lab = an.lab
    networks = _managed_networks(lab, host)
    carried = _carried_networks(lab, host)
    vms = sorted(lab.vms_on(host.name), key=lambda v: v.name)
    ipv6 = IPV6 in an.families  # computed once per Analysis, not once per host
    chains, skipped = _chains(lab, host, IPV4, name_family=ipv6)
    # The `ip6` table: for a host with a network that has IPv6 (ip6tables' rules, as
    # libvirt 9.0 installs them: topoc.model.firewall, family IPv6).
    chains6 = None
    if any(n.subnet6 is not None for n in networks):
        chains6, skipped6 = _chains(lab, host, IPV6)
        # A forward goes without a rule only when neither family has a target for it.
        skipped = [f for f in skipped if f in skipped6]
    return HostPlan(
        lab=lab.name,
        host=host.name,
        source=_comment_safe(PurePath(lab.file).name),
        table=table_name(lab),
        state_dir=state_dir(lab, host),
        bridges=_bridges(networks, ipv6) + _l2_bridges(carried),
        uplinks=_uplinks(host, networks),
        taps=_taps(lab, vms, networks + carried),
        routes=_routes(host),
        forwarding=any(n.mode in DEFAULT_PROFILE.forwarding_modes for n in networks),
        chains=chains,
        skipped_forwards=tuple(skipped),
        masquerades=tuple(n.name for n in networks if n.masquerade),
        vxlans=_vxlans(lab, host, sorted(networks + carried, key=lambda n: n.name)),
        ipv6=ipv6,
        chains6=chains6,
        # libvirt: net.ipv6.conf.all.forwarding for a nat, routed or open network with an
        # IPv6 address (networkEnableIPForwarding, bridge_driver.c): the topology's rule.
        forwarding6=ipv6 and host_forwarding(lab, host.name, IPV6),
    )


def shell_quote(value: object) -> str:
    """One shell word, literally: shlex.quote, and quotes around a reserved word too."""
    quoted = shlex.quote(str(value))
    return f"'{quoted}'" if quoted in SHELL_RESERVED else quoted


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # Autoescape off: these are shell and nft, not HTML. Values are quoted explicitly.
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("topoc", "templates/host"),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = shell_quote
    return env


def host_artifacts(lab: Lab | Analysis, host_name: str) -> dict[str, str]:
    """{"up.sh", "down.sh", "topoc.nft"} for one host of the lab (the verifier's entry)."""
    the_lab = lab.lab if isinstance(lab, Analysis) else lab
    host = next((h for h in the_lab.hosts if h.name == host_name), None)
    if host is None:
        raise KeyError(f"lab {the_lab.name} has no host {host_name!r}")
    plan = host_plan(lab, host)
    env = _environment()
    return {name: env.get_template(f"{name}.j2").render(plan=plan, only=None) for name in SCRIPT_NAMES}


def nft_tables(lab: Lab | Analysis, host_name: str) -> dict[str, str]:
    """The lab's own nftables tables on one host, as deploy loads and records them, each
    an nft script that replaces that table alone: {"inet topoc_<lab>": topoc.nft} for a
    host without IPv6 (the whole file), else one script per table, the `ip6` one too."""
    the_lab = lab.lab if isinstance(lab, Analysis) else lab
    host = next((h for h in the_lab.hosts if h.name == host_name), None)
    if host is None:
        raise KeyError(f"lab {the_lab.name} has no host {host_name!r}")
    plan = host_plan(lab, host)
    template = _environment().get_template("topoc.nft.j2")
    if plan.chains6 is None:
        return {f"inet {plan.table}": template.render(plan=plan, only=None)}
    return {f"{family} {plan.table}": template.render(plan=plan, only=family)
            for family in ("inet", IPV6.facts.nft)}


def generate(lab: Lab) -> dict[str, str]:
    """`host/up.sh`, `host/down.sh`, `host/topoc.nft`; `host/<name>/...` for several hosts."""
    artifacts: dict[str, str] = {}
    subject = Analysis(lab)  # one for every host: the lab's families, computed once
    for host in sorted(lab.hosts, key=lambda h: h.name):
        folder = "host" if len(lab.hosts) == 1 else f"host/{host.name}"
        for name, text in host_artifacts(subject, host.name).items():
            artifacts[f"{folder}/{name}"] = text
    return artifacts
