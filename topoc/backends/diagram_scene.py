"""The diagram's scene: what to draw, decided once, for every drawing format.

It turns the IR into boxes (networks, hosts, VMs, externals), host clusters, links
(nics, uplinks, port forwards) and the legend's list of models, each label as plain-text
lines; with --reach, the uplinks also carry topoc.model.reach's facts (diagram_reach).
The DOT and Mermaid writers (topoc.backends.diagram_dot, diagram_mermaid) only translate
a Scene into their syntax, so both show the same labels and the same structure. Nothing
here escapes text: each writer escapes for its own syntax.

Large labs are collapsed here too (see `collapse_vms`): VMs that sit on the same host
and the same networks become one box with a count, so a picture of a 1,000-VM lab
stays readable and quick to lay out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePath

from topoc.backends.diagram_reach import (
    MAX_NODES,
    TABLE_MAX_NODES,
    ReachTable,
    Share,
    UplinkReach,
    overlay_allowed,
    reach_table,
    table_allowed,
    uplink_reach,
)
from topoc.model.analysis import Analysis, analysis_of
from topoc.model.family import IPV4, IPV6, Family, IPInterface
from topoc.model.ir import External, Forward, Host, Lab, Network, Nic, Route, Vm

# Above this many VMs a lab is drawn collapsed: see collapse_vms.
COLLAPSE_ABOVE_VMS = 60


@dataclass(frozen=True, slots=True)
class Style:
    """How one kind of box looks, and what the legend says about it."""

    key: str
    title: str  # the legend's name for it
    meaning: str  # the legend's one-line explanation
    fill: str
    stroke: str
    dot_shape: str
    mermaid_shape: str  # a key of diagram_mermaid.SHAPES
    dashed: bool = False


# One style per network model (DESIGN.md's table), then the machines. Colours follow the
# Okabe-Ito palette, which colour-blind readers can tell apart; the shapes differ too,
# so the picture reads in greyscale.
STYLES: dict[str, Style] = {s.key: s for s in (
    Style("external", "external", "the physical LAN; topoc leaves it alone",
          "#eeeeee", "#6b6b6b", "ellipse", "parallelogram", dashed=True),
    Style("nat", "NAT", "VMs reach out, NATed; in only by forward",
          "#fde7c8", "#d08800", "hexagon", "hexagon"),
    Style("routed", "routed", "both ways, if the LAN routes back",
          "#d6e9f8", "#0072b2", "octagon", "subroutine"),
    Style("open", "open", "routed, with no firewall rules",
          "#eadcf3", "#8e5cb8", "octagon", "trapezoid", dashed=True),
    Style("bridged", "bridged", "VMs are peers on the physical LAN",
          "#d3f0e4", "#009e73", "box3d", "cylinder"),
    Style("host-only", "host-only", "VMs and the host, nothing beyond",
          "#fff5bf", "#b89500", "cylinder", "stadium"),
    Style("isolated", "isolated", "VMs on it only, not even the host",
          "#fadbd2", "#d55e00", "box", "rounded"),
    Style("host", "host", "the hypervisor: its nics and port forwards",
          "#ffffff", "#333333", "plain", "rectangle"),
    Style("vm", "VM", "a guest on the host",
          "#ffffff", "#555555", "box", "rounded"),
    Style("machine", "external machine", "a machine outside the host",
          "#f4f4f4", "#6b6b6b", "box", "rectangle", dashed=True),
)}

NETWORK_STYLE_ORDER = ("external", "nat", "routed", "open", "bridged", "host-only", "isolated")


@dataclass(frozen=True, slots=True)
class Box:
    """A node of the drawing. `lines[0]` is its title; the rest are details, and the
    lines from `muted_from` on are secondary facts (sizes, disks) drawn smaller."""

    kind: str  # network | host | vm | external | legend
    name: str  # unique within its kind
    style: str  # a key of STYLES
    lines: tuple[str, ...]
    muted_from: int | None = None
    host: str | None = None  # the host cluster it is drawn in, if any
    ports: tuple[tuple[str, str], ...] = ()  # (port, text) rows: a host's nics and forwards

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)


@dataclass(frozen=True, slots=True)
class Link:
    """An edge. `kind` decides its look: nic (a cable), uplink (the host carries the
    network's traffic), tunnel (a host joins a network on several hosts through VXLAN),
    forward (a DNAT port forward), layout (invisible, only keeps the
    picture in order). With --reach, an uplink also says whether its network's machines
    reach the LAN (`reach_out`) and the LAN reaches them (`reach_in`): "all", "some",
    "none", or None when there is nobody to try."""

    kind: str
    src: tuple[str, str]
    dst: tuple[str, str]
    lines: tuple[str, ...] = ()
    src_port: str | None = None
    dst_port: str | None = None
    style: str | None = None  # a key of STYLES for the colour, when it has one
    reach_out: str | None = None
    reach_in: str | None = None


@dataclass(frozen=True, slots=True)
class Cluster:
    host: str
    title: str


@dataclass(frozen=True, slots=True)
class Scene:
    lab: str
    source: str  # the source file's base name, for the caption
    clusters: tuple[Cluster, ...]
    boxes: tuple[Box, ...]
    links: tuple[Link, ...]
    legend: tuple[str, ...]  # style keys, in legend order
    notes: tuple[str, ...] = ()  # said under the title (e.g. that the lab was collapsed)
    collapsed: bool = False
    overlay: bool = False  # whether the uplinks carry the --reach overlay
    reach: ReachTable | None = None  # the --reach overlay's who-reaches-whom table


# --- labels ---------------------------------------------------------------------------


def _size(n_bytes: int) -> str:
    """1073741824 -> "1 GiB": the largest binary unit that divides it evenly."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n_bytes >= factor and n_bytes % factor == 0:
            return f"{n_bytes // factor} {unit}"
    return f"{n_bytes} B"


def _route(route: Route) -> str:
    destination = "default" if route.is_default else str(route.destination)
    return f"route {destination} via {route.via}"


def _nic_address(nic: Nic, network: Network | None, prefix: bool = True) -> str:
    if nic.address is not None:
        return str(nic.address) if prefix else str(nic.address.ip)
    if network is not None and network.dhcp is not None:
        return "DHCP"
    return "no address"


def _nic_addresses(nic: Nic, network: Network | None, prefix: bool = True) -> list[str]:
    """A nic's addresses, one line per family: its IPv4 one (or how it gets one) as it
    always was, then its IPv6 one (or "DHCPv6" on a network with a DHCPv6 range). A nic
    with no IPv6 in sight has its one line; on an IPv6-only network, only the IPv6 one."""
    ipv4 = _nic_address(nic, network, prefix)
    dhcp6 = network is not None and network.dhcp6 is not None
    if nic.address6 is None and not dhcp6:
        return [ipv4]
    if nic.address6 is not None:
        ipv6 = str(nic.address6) if prefix else str(nic.address6.ip)
    else:
        ipv6 = "DHCPv6"
    if nic.address is None and network is not None and network.subnet is None:
        return [ipv6]
    return [ipv4, ipv6]


def network_mode_line(network: Network) -> str:
    """The network's model in words, with its uplink device: "NAT via eth0"."""
    title = STYLES[network.model].title
    if network.model == "external":
        return "external LAN"
    if network.model == "bridged":
        return f"bridged to {network.via}" if network.via else "bridged"
    if network.via and network.model in ("nat", "routed", "open"):
        return f"{title} via {network.via}"
    return title


def network_box(network: Network) -> Box:
    lines = [network.name, network_mode_line(network)]
    if network.bridge:
        lines.append(f"bridge {network.bridge}")
    if network.subnet is not None:
        lines.append(str(network.subnet))
    if network.subnet6 is not None:
        lines.append(str(network.subnet6))
    muted_from = len(lines)
    if network.gateway is not None:
        lines.append(f"gateway {network.gateway}")
    gateway6 = network.gateway_in(IPV6)
    if gateway6 is not None:
        lines.append(f"gateway {gateway6}")
    if network.dhcp is not None:
        lines.append(f"DHCP {network.dhcp.start} - {network.dhcp.end}")
    if network.dhcp6 is not None:
        lines.append(f"DHCPv6 {network.dhcp6.start} - {network.dhcp6.end}")
    if network.model == "nat" and network.subnet6 is not None:
        # libvirt routes a nat network's IPv6 unless <nat ipv6='yes'/> (`nat6 on`):
        # https://libvirt.org/formatnetwork.html#connectivity
        lines.append("IPv6 NATed (nat6)" if network.nat6 else "IPv6 routed, not NATed")
    return Box("network", network.name, network.model, tuple(lines),
               muted_from=muted_from if len(lines) > muted_from else None, host=network.host)


def vm_box(vm: Vm, lab: Lab) -> Box:
    addresses = [a for n in vm.nics for a in _nic_addresses(n, lab.network(n.network), prefix=False)]
    details = [f"{_size(vm.memory)}, {vm.vcpus} vCPU{'s' if vm.vcpus != 1 else ''}"]
    if vm.disk is not None:
        details.append(vm.disk)
    details += [_route(r) for r in vm.routes]
    lines = (vm.name, *addresses, *details)
    return Box("vm", vm.name, "vm", lines, muted_from=1 + len(addresses), host=vm.host)


def external_box(external: External, lab: Lab) -> Box:
    addresses = [a for n in external.nics for a in _nic_addresses(n, lab.network(n.network), prefix=False)]
    routes = [_route(r) for r in external.routes]
    lines = (external.name, *addresses, *routes)
    return Box("external", external.name, "machine", lines,
               muted_from=1 + len(addresses) if routes else None)


# Row (port) names of a host's table. Each kind has its own prefix, so a nic called
# `fwd-0` cannot take a forward's row.
def nic_port(nic: str) -> str:
    return f"nic-{nic}"


def forward_port(index: int) -> str:
    return f"fwd-{index}"


def host_box(host: Host, lab: Lab) -> Box:
    """The hypervisor: one row per nic (cables and uplinks attach to them), per port
    forward (its arrow leaves from there) and per route."""
    ports = [(nic_port(nic.name), f"{nic.name} {', '.join(_nic_addresses(nic, lab.network(nic.network)))}")
             for nic in host.nics]
    for i, fwd in enumerate(_forwards_on(lab, host.name)):
        text = f"forward {fwd.protocol} {fwd.port} to {fwd.vm}:{fwd.vm_port}"
        ports.append((forward_port(i), text))
    ports += [(f"route-{i}", _route(r)) for i, r in enumerate(host.routes)]
    return Box("host", host.name, "host", (host.name,), host=host.name, ports=tuple(ports))


def _forwards_on(lab: Lab, host: str) -> list[Forward]:
    """The port forwards DNATed on `host`: those to VMs that run on it."""
    on_host = {vm.name for vm in lab.vms_on(host)}
    return [f for f in lab.forwards if f.vm in on_host]


def cluster_title(host: Host, lab: Lab) -> str:
    """"host kvm1 · 192.168.101.11": its LAN addresses (on external networks), or all."""
    def on_lan(nic: Nic) -> bool:
        network = lab.network(nic.network)
        return network is not None and not network.managed

    nics = [n for n in host.nics if n.addresses]
    lan = [n for n in nics if on_lan(n)] or nics
    addresses = ", ".join(str(a.ip) for n in lan for a in n.addresses)
    return f"host {host.name}" + (f" · {addresses}" if addresses else "")


# --- links ----------------------------------------------------------------------------


def nic_link(owner: tuple[str, str], nic: Nic) -> Link:
    """A cable between a node and its network. The picture reads left to right from the
    outside in (external machines, LANs, hosts, their networks, VMs), so the edge runs
    from the network to a host or VM and from an external machine to its network."""
    lines = tuple(x for x in (nic.name, *(str(a) for a in nic.addresses)) if x)
    network = ("network", nic.network)
    if owner[0] == "external":
        return Link("nic", owner, network, lines)
    port = nic_port(nic.name) if owner[0] == "host" else None
    return Link("nic", network, owner, lines, dst_port=port)


def uplink(host: Host, network: Network) -> Link:
    """How the host carries a managed network: through its `via` nic for nat, routed
    and open; by enslaving the nic for bridged; with an address on the bridge only for
    host-only. An isolated network without an address has no link to the host at all
    (only an invisible one that keeps it in its column)."""
    src, dst = ("host", host.name), ("network", network.name)
    if network.model == "isolated":
        return Link("layout", src, dst)
    port = nic_port(network.via) if network.via in {n.name for n in host.nics} else None
    if network.model == "bridged":
        lines: tuple[str, ...] = (f"enslaves {network.via}",) if network.via else ()
    else:
        lines = (f"via {network.via}",) if network.via else ()
    if network.address is not None:
        lines += (" ".join(x for x in (network.bridge, str(network.address)) if x),)
    if network.address6 is not None:
        # The bridge's IPv6 address, under its IPv4 one (or with the bridge, alone).
        lines += (str(network.address6) if network.address is not None
                  else " ".join(x for x in (network.bridge, str(network.address6)) if x),)
    return Link("uplink", src, dst, lines, src_port=port, style=network.model)


def forward_links(host: Host, lab: Lab) -> list[Link]:
    """A dashed arrow per port forward, from its row on the host to its VM."""
    return [Link("forward", ("host", host.name), ("vm", fwd.vm),
                 (f"{fwd.protocol} {fwd.port} to {fwd.vm_port}",),
                 src_port=forward_port(i), style="nat")
            for i, fwd in enumerate(_forwards_on(lab, host.name))]


# --- large labs -----------------------------------------------------------------------


def _address_span(addresses: list[IPInterface], network: Network | None, family: Family = IPV4) -> str:
    if not addresses:
        if network is None or network.dhcp_in(family) is None:
            return "no address"
        return "DHCP" if family is IPV4 else "DHCPv6"
    ordered = sorted(addresses, key=lambda a: a.ip)
    if len(ordered) == 1:
        return str(ordered[0].ip)
    return f"{ordered[0].ip} - {ordered[-1].ip}"


def collapse_vms(lab: Lab) -> tuple[list[Box], list[Link]]:
    """Boxes and nic links for the VMs of a large lab, grouped: every VM with the same
    host and the same networks (in nic order) joins one box "412 VMs", which says the
    first and last name and the address span per network. A group of one stays a VM."""
    groups: dict[tuple[str, tuple[str, ...]], list[Vm]] = {}
    for vm in lab.vms:
        groups.setdefault((vm.host, tuple(n.network for n in vm.nics)), []).append(vm)
    boxes: list[Box] = []
    links: list[Link] = []
    for (host, networks), vms in groups.items():
        if len(vms) == 1:
            vm = vms[0]
            boxes.append(vm_box(vm, lab))
            links += [nic_link(("vm", vm.name), nic) for nic in vm.nics]
            continue
        name = f"{vms[0].name} … {vms[-1].name}"
        spans = []
        for i, network in enumerate(networks):
            net = lab.network(network)
            spans.append(_address_span([a for vm in vms if (a := vm.nics[i].address) is not None], net))
            ipv6: list[IPInterface] = [a6 for vm in vms if (a6 := vm.nics[i].address6) is not None]
            if ipv6 or (net is not None and net.dhcp6 is not None):
                spans.append(_address_span(ipv6, net, IPV6))
        lines = (f"{len(vms)} VMs", name, *spans)
        boxes.append(Box("vm", name, "vm", lines, muted_from=2, host=host))
        links += [Link("nic", ("network", network), ("vm", name), (f"{len(vms)} nics",))
                  for network in networks]
    return boxes, links


# --- the --reach overlay --------------------------------------------------------------


def _mark(share: Share | None) -> str:
    if share is None:
        return "-"
    return {"all": "✓", "none": "✗"}.get(share.word, f"{share.reached} of {share.tried}")


def with_reach(link: Link, facts: UplinkReach) -> Link:
    """The uplink with its reach facts and a line saying them: "LAN: out ✓ in ✗"; with
    IPv6 pairs too, a line per family ("LAN IPv4: ...", "LAN IPv6: ..."), as a nat
    network's IPv6 is routed, not NATed, unless nat6. The arrows show IPv4's facts
    (IPv6's where the network has no IPv4 pair)."""
    ipv4 = facts.out is not None or facts.inbound is not None
    ipv6 = facts.out6 is not None or facts.inbound6 is not None
    if not ipv4 and not ipv6:
        return link
    if not ipv6:
        lines: tuple[str, ...] = (f"LAN: out {_mark(facts.out)}, in {_mark(facts.inbound)}",)
    else:
        lines = ((f"LAN IPv4: out {_mark(facts.out)}, in {_mark(facts.inbound)}",) if ipv4 else ()) + (
            f"LAN IPv6: out {_mark(facts.out6)}, in {_mark(facts.inbound6)}",)
    out, inbound = (facts.out, facts.inbound) if ipv4 else (facts.out6, facts.inbound6)
    return replace(link, lines=link.lines + lines,
                   reach_out=out.word if out else None,
                   reach_in=inbound.word if inbound else None)


def reach_overlay(an: Analysis, links: list[Link]
                  ) -> tuple[list[Link], ReachTable | None, tuple[str, ...]]:
    """The links with reach facts on the uplinks, the who-reaches-whom table, and a note
    when the lab is too large for the overlay."""
    lab = an.lab
    if not overlay_allowed(lab):
        return links, None, (f"reachability overlay left out: {len(lab.nodes)} nodes "
                             f"(it is drawn for up to {MAX_NODES})",)
    facts = {r.network: r for r in uplink_reach(an)}
    marked = [with_reach(link, facts[link.dst[1]])
              if link.kind == "uplink" and link.dst[1] in facts else link for link in links]
    if not table_allowed(lab):
        return marked, None, (f"who-reaches-whom table left out: {len(lab.nodes)} nodes "
                              f"(drawn for up to {TABLE_MAX_NODES}; topoc reach prints them all)",)
    return marked, reach_table(an), ()


# --- the scene ------------------------------------------------------------------------


def legend_styles(boxes: list[Box]) -> tuple[str, ...]:
    """The legend explains the network models this picture uses, in a fixed order."""
    used = {b.style for b in boxes if b.kind == "network"}
    return tuple(s for s in NETWORK_STYLE_ORDER if s in used)


def tunnel(host: Host, network: Network) -> Link:
    """A network on several hosts, from one of its other hosts: the VXLAN tunnel that
    joins that host's bridge of it to the segment (the network box is drawn with its
    first host, which holds the gateway)."""
    lines = (f"VXLAN {network.vni}", f"bridge {network.bridge}" if network.bridge else "")
    return Link("tunnel", ("host", host.name), ("network", network.name),
                tuple(line for line in lines if line), style=network.model)


def host_parts(lab: Lab) -> tuple[list[Box], list[Link]]:
    """The hypervisors: their boxes, their LAN cables, uplinks, VXLAN tunnels and port
    forwards."""
    links: list[Link] = []
    for host in lab.hosts:
        links += [nic_link(("host", host.name), nic) for nic in host.nics]
        links += [uplink(host, n) for n in lab.networks_on(host.name)]
        links += [tunnel(host, n) for n in lab.networks_carried_by(host.name)]
        links += forward_links(host, lab)
    return [host_box(h, lab) for h in lab.hosts], links


def vm_parts(lab: Lab, collapsed: bool) -> tuple[list[Box], list[Link]]:
    if collapsed:
        return collapse_vms(lab)
    return ([vm_box(vm, lab) for vm in lab.vms],
            [nic_link(("vm", vm.name), nic) for vm in lab.vms for nic in vm.nics])


def external_parts(lab: Lab) -> tuple[list[Box], list[Link]]:
    return ([external_box(e, lab) for e in lab.externals],
            [nic_link(("external", e.name), nic) for e in lab.externals for nic in e.nics])


def build_scene(subject: Lab | Analysis, *, reach: bool = False,
                collapse_above: int = COLLAPSE_ABOVE_VMS) -> Scene:
    """Everything to draw, in a fixed order (networks, hosts, VMs, externals; each in
    source order), so the same lab always gives the same drawing. The reach overlay asks
    the compilation's Analysis when given one."""
    an = analysis_of(subject)
    lab = an.lab
    collapsed = len(lab.vms) > collapse_above
    boxes: list[Box] = [network_box(n) for n in lab.networks]
    links: list[Link] = []
    for parts in (host_parts(lab), vm_parts(lab, collapsed), external_parts(lab)):
        boxes += parts[0]
        links += parts[1]
    # A forward to a VM that was collapsed into a group has no box of its own to point at.
    drawn = {b.key for b in boxes}
    links = [link for link in links if link.kind != "forward" or link.dst in drawn]
    notes: tuple[str, ...] = ()
    if collapsed:
        notes = (f"{len(lab.vms)} VMs (over {collapse_above}): VMs on the same host and networks "
                 "are drawn as one box; topoc graph --expand draws each",)
    table = None
    if reach:
        links, table, left_out = reach_overlay(an, links)
        notes += left_out
    return Scene(
        lab=lab.name,
        source=PurePath(lab.file).name,
        clusters=tuple(Cluster(h.name, cluster_title(h, lab)) for h in lab.hosts),
        boxes=tuple(boxes),
        links=tuple(links),
        legend=legend_styles(boxes),
        notes=notes,
        collapsed=collapsed,
        overlay=reach and overlay_allowed(lab),
        reach=table,
    )
