"""Import: describe the networks and domains a libvirt connection already has as a .topo.

`read_host` reads the host over a read-only connection (virConnectOpenReadOnly: libvirt
itself refuses every change on it), so importing can never change the host. `describe`
is pure: it turns what was read into the text of a .topo file that names every object
exactly as the host does (`name NAME`), laid out by `topoc fmt` (the text is run through
the formatter, so the layout is fmt's by construction). What the language cannot say (a
NAT port range, a portgroup, a VLAN, a second disk...) is a comment in the object's
block and a warning, never dropped in silence.

XML facts come from topoc.deploy.facts (describe_network, describe_domain). API:
https://libvirt.org/html/libvirt-libvirt-host.html#virConnectOpenReadOnly,
https://libvirt.org/html/libvirt-libvirt-interface.html#virConnectListAllInterfaces.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import Any

from topoc.deploy import facts as dx
from topoc.front.values import MODEL_RE, NAME_RE
from topoc.model import naming

# What `mode` each libvirt forward mode is in the language; the others (passthrough,
# private, vepa, hostdev: a pool of host devices) it cannot express.
_MODES = {None: "isolated", "nat": "nat", "route": "routed", "open": "open", "bridge": "bridged"}
_WORD_RE = re.compile(r"[A-Za-z0-9_.:/+~@%,=]+(-[A-Za-z0-9_.:/+~@%,=]+)*")


class ImportFailed(Exception):
    """The connection cannot be read, or a named object is not there (exit 2)."""


@dataclass(frozen=True)
class LiveObject:
    name: str
    xml: str
    active: bool
    autostart: bool


@dataclass
class HostObjects:
    """What `read_host` found: the raw XML of each object, nothing interpreted yet."""

    uri: str
    hostname: str
    networks: list[LiveObject] = field(default_factory=list)
    domains: list[LiveObject] = field(default_factory=list)
    interfaces: list[str] | None = None  # interface XML; None: the driver does not report them
    interfaces_note: str | None = None


def read_host(conn: Any, uri: str, networks: tuple[str, ...] = (), vms: tuple[str, ...] = ()) -> HostObjects:
    """Every network and domain of the connection (or the ones named), with their
    persistent configuration, and the host's interfaces when the driver lists them."""
    import libvirt  # deploy only: imported lazily, like topoc.deploy.engine

    from topoc.deploy.engine import (
        _network_config,  # the test driver's flag quirk, in one place
    )

    found = HostObjects(uri, conn.getHostname())
    all_networks = {n.name(): n for n in conn.listAllNetworks(0)}
    all_domains = {d.name(): d for d in conn.listAllDomains(0)}
    missing = [f"network {n}" for n in networks if n not in all_networks]
    missing += [f"domain {v}" for v in vms if v not in all_domains]
    if missing:
        raise ImportFailed(f"{uri} has no {', '.join(missing)} (virsh net-list --all, virsh list --all)")
    wanted_networks = networks or (tuple(all_networks) if not vms else ())
    wanted_vms = vms or (tuple(all_domains) if not networks else ())
    for name in sorted(wanted_networks):
        net = all_networks[name]
        found.networks.append(LiveObject(name, _network_config(net), bool(net.isActive()), bool(net.autostart())))
    for name in sorted(wanted_vms):
        dom = all_domains[name]
        found.domains.append(LiveObject(name, dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
                                        bool(dom.isActive()), bool(dom.autostart())))
    try:
        found.interfaces = [i.XMLDesc(0) for i in conn.listAllInterfaces(0)]
    except libvirt.libvirtError as e:
        found.interfaces_note = e.get_error_message() or str(e)
    return found


# --- names ----------------------------------------------------------------------------


def _topo_name(libvirt_name: str, taken: set[str]) -> str:
    """A name the language takes for an object libvirt calls `libvirt_name` (the exact
    name goes in the block's `name`): other characters become `_`, and a clash gets a
    number."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", libvirt_name)
    name = re.sub(r"-{2,}", "-", name).strip("-") or "_"
    if not (name[0].isalpha() or name[0] == "_"):
        name = "_" + name
    if not NAME_RE.fullmatch(name):  # e.g. `a_-b`: join the parts with `_`
        name = re.sub(r"-", "_", name)
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _value(text: str) -> str:
    """A value as the language writes it: bare when it is one word, else quoted."""
    if _WORD_RE.fullmatch(text) and not text.startswith("-"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _size(kib: int) -> str:
    if kib % (1024 * 1024) == 0:
        return f"{kib // (1024 * 1024)}GiB"
    if kib % 1024 == 0:
        return f"{kib // 1024}MiB"
    return f"{kib}KiB"


def _comment(text: str) -> str:
    return "# " + " ".join(text.split())


# --- the file -------------------------------------------------------------------------


@dataclass
class Imported:
    text: str
    warnings: list[str]
    networks: int
    vms: int


@dataclass
class _HostNic:
    name: str
    address: IPv4Interface
    gateway: IPv4Address | None
    lan: str = ""
    # Its IPv6 address (the first global one: a link-local fe80::/10 address every
    # interface has says nothing about the LAN) and an IPv6 gateway on that subnet.
    address6: IPv6Interface | None = None
    gateway6: IPv6Address | None = None


def _ipv6_of(protocol: ET.Element) -> tuple[IPv6Interface | None, IPv6Address | None]:
    """The first global IPv6 address of an interface's <protocol family='ipv6'>, and its
    <route gateway> when that is on the address's subnet (https://libvirt.org/formatinterface.html)."""
    address = gateway = None
    for ip in protocol.findall("ip"):
        try:
            found = IPv6Interface(f"{ip.get('address')}/{ip.get('prefix', '128')}")
        except ValueError:
            continue
        if not found.ip.is_link_local and address is None:
            address = found
    route = protocol.find("route")
    if address is not None and route is not None and route.get("gateway"):
        try:
            candidate = IPv6Address(route.get("gateway", ""))
        except ValueError:
            candidate = None
        if candidate is not None and candidate in address.network:
            gateway = candidate
    return address, gateway


def _host_nics(interfaces: list[str], bridges: set[str]) -> tuple[list[_HostNic], list[str], dict[str, list[str]]]:
    """The host's interfaces with an IPv4 address (not the libvirt networks' bridges,
    not loopback), those without one, and each host bridge's enslaved interfaces."""
    nics, bare = [], []
    enslaved: dict[str, list[str]] = {}
    for xml in interfaces:
        root = dx.parse(xml)
        name = root.get("name", "")
        if root.get("type") == "bridge":
            enslaved[name] = [i.get("name", "") for i in root.findall("bridge/interface")]
        if name in bridges or name == "lo" or not name:
            continue
        address = gateway = None
        address6: IPv6Interface | None = None
        gateway6: IPv6Address | None = None
        for protocol in root.findall("protocol"):
            if protocol.get("family") == "ipv6":
                address6, gateway6 = _ipv6_of(protocol)
            if protocol.get("family") != "ipv4":
                continue
            for ip in protocol.findall("ip"):
                try:
                    address = address or IPv4Interface(f"{ip.get('address')}/{ip.get('prefix', '32')}")
                except ValueError:
                    continue
            route = protocol.find("route")
            if route is not None and route.get("gateway"):
                try:
                    gateway = IPv4Address(route.get("gateway"))
                except ValueError:
                    gateway = None
        if address is None:
            bare.append(name)
        else:
            # A host bridge that enslaves a NIC is, in the language, that NIC on its LAN
            # (a bridged network moves the NIC's address onto the bridge).
            slaves = [s for s in enslaved.get(name, []) if s]
            nics.append(_HostNic(slaves[0] if slaves else name, address,
                                 gateway if gateway is not None and gateway in address.network else None,
                                 address6=address6, gateway6=gateway6))
    taken = {nic.name for nic in nics}
    return nics, [b for b in bare if b not in taken], enslaved


class _Writer:
    def __init__(self, host: HostObjects, lab: str) -> None:
        self.host = host
        self.lab = lab
        self.lines: list[str] = []
        self.warnings: list[str] = []
        self.nodes: set[str] = set()
        self.network_names: set[str] = set()

    def cannot(self, where: str, what: str, consequence: str) -> str:
        """A comment for the block and a warning for stderr, naming what is lost."""
        self.warnings.append(f"{where}: {what}: {consequence}")
        return _comment(f"not expressible: {what} ({consequence})")

    def provenance(self, kind: str, obj: LiveObject, uuid: str | None) -> str:
        state = ("running" if kind == "domain" else "active") if obj.active else "inactive"
        return _comment(f"{kind} {obj.name}: imported from {self.host.uri} (uuid {uuid or '?'}, "
                        f"{state}, autostart {'on' if obj.autostart else 'off'})")


def describe(host: HostObjects, lab: str, source: str = "imported.topo") -> Imported:
    """The .topo text for what `read_host` found (in fmt's layout) and the warnings."""
    from topoc.front.fmt import format_source

    w = _Writer(host, lab)
    out = w.lines
    out.append(_comment(f"Imported by `topoc import --connect {host.uri}` from host {host.hostname}."))
    out.append(_comment("Every object keeps its libvirt name (`name`); `topoc deploy --adopt` "
                        "takes them into this lab."))
    out.append(f"lab {lab}")
    out.append("")

    networks = [(obj, dx.describe_network(obj.xml)) for obj in host.networks]
    domains = [(obj, dx.describe_domain(obj.xml)) for obj in host.domains]
    host_name = _topo_name(host.hostname.split(".")[0] or "host", w.nodes)

    bridges = {d.bridge for _, d in networks if d.bridge and d.forward_mode != "bridge"}
    host_nics, bare, enslaved = _host_nics(host.interfaces or [], bridges)
    lans: dict[IPv4Network, str] = {}
    lan6: dict[str, IPv6Network] = {}  # a LAN's IPv6 subnet: its first nic's
    for nic in host_nics:
        if nic.address.network not in lans:
            lans[nic.address.network] = _topo_name(f"lan_{nic.name}", w.network_names)
        nic.lan = lans[nic.address.network]
        if nic.address6 is not None:
            subnet6 = lan6.setdefault(nic.lan, nic.address6.network)
            if nic.address6.network != subnet6:
                w.warnings.append(f"host {host.hostname}: {nic.name}'s IPv6 address {nic.address6} is not on "
                                  f"{subnet6}, the IPv6 subnet of its LAN {nic.lan}: it is left out")
                nic.address6 = nic.gateway6 = None

    # Network blocks, and where each libvirt network went (libvirt name -> topo name).
    topo_network: dict[str, str] = {}
    dhcp_hosts: dict[str, dict[str, dx.DhcpHost]] = {}  # libvirt network -> MAC -> entry
    for obj, d in networks:
        problem = naming.exact_name_problem(obj.name)
        mode = _MODES.get(d.forward_mode) if d.forward_mode in _MODES else None
        if problem is not None or mode is None or (mode == "bridged" and not d.bridge):
            pool = " without a bridge (a macvtap pool)" if d.forward_mode == "bridge" else " (a pool of host devices)"
            why = (f"its name cannot be written in a .topo file ({problem})" if problem else
                   f"<forward mode='{d.forward_mode}'>" + pool)
            out.append(w.provenance("network", obj, d.uuid))
            out.append(w.cannot(f"network {obj.name}", why, "the network is left out of this file"))
            out.append("")
            continue
        name = _topo_name(obj.name, w.network_names)
        topo_network[obj.name] = name
        dhcp_hosts[obj.name] = {h.mac: h for h in d.dhcp_hosts if h.mac}
        out.append(w.provenance("network", obj, d.uuid))
        out.append(f"network {name} on {host_name} {{")
        out.append(f"    name {obj.name}")
        if mode == "bridged":
            slaves = [s for s in enslaved.get(d.bridge or "", []) if s]
            if slaves:
                out.append(f"    mode bridged to {slaves[0]}")
            else:
                out.append(f"    mode bridged to {d.bridge}")
                out.append(w.cannot(f"network {obj.name}", f"the host NIC bridge {d.bridge} enslaves",
                                    f"the connection does not report it: write it after `to` instead of {d.bridge}"))
        elif d.forward_dev and mode in ("nat", "routed"):
            out.append(f"    mode {mode} via {d.forward_dev}")
        else:
            out.append(f"    mode {mode}")
            if d.forward_dev:
                out.append(w.cannot(f"network {obj.name}", f"<forward dev='{d.forward_dev}'> on mode {d.forward_mode}",
                                    "libvirt takes no dev there; it is dropped"))
        if d.bridge:
            out.append(f"    bridge {d.bridge}")
        if d.stp is not None and mode != "bridged":
            out.append(f"    stp {'on' if d.stp else 'off'}")
        if d.mtu is not None and mode != "bridged":
            out.append(f"    mtu {d.mtu}")
        if d.nat6 and mode == "nat":
            out.append("    nat6 on")  # <nat ipv6='yes'/>
        if d.address is not None and mode != "bridged":
            out.append(f"    address {d.address}")
            if d.dhcp_ranges:
                start, end = d.dhcp_ranges[0]
                out.append(f"    dhcp {start} - {end}")
                for start, end in d.dhcp_ranges[1:]:
                    out.append(w.cannot(f"network {obj.name}", f"a second DHCP range {start} - {end}",
                                        "topoc writes one range"))
            elif d.dhcp_hosts:
                out.append(w.cannot(f"network {obj.name}", "DHCP host entries without a DHCP range",
                                    "topoc writes host entries only with a `dhcp` range; they are dropped"))
        # The first <ip family='ipv6'>: the network's second `address`, its range the
        # second `dhcp` (one address and one range per family, as in the language).
        if d.address6 is not None and mode != "bridged":
            out.append(f"    address {d.address6}")
            for index, (start, end) in enumerate(d.dhcp6_ranges):
                out.append(f"    dhcp {start} - {end}" if index == 0 else
                           w.cannot(f"network {obj.name}", f"a second DHCPv6 range {start} - {end}",
                                    "topoc writes one range"))
        if (d.address is not None or d.address6 is not None) and mode != "bridged":
            out.append(f"    dns {'on' if d.dns else 'off'}")
            if d.domain:
                out.append(f"    domain {d.domain}")
        for what in d.unexpressed:
            out.append(w.cannot(f"network {obj.name}", what, "kept on the host until topoc redefines the network"))
        out.append("}")
        out.append("")

    # Host block (after the networks, as the LANs it names come with it).
    out.append(_comment(f"host {host.hostname}: the hypervisor behind {host.uri}"))
    out.append(f"host {host_name} {{")
    if host.interfaces is None:
        out.append(w.cannot(f"host {host.hostname}", "its interfaces and routes",
                            f"the connection does not report them ({host.interfaces_note}); "
                            "add `nic IFACE on LAN address IP` lines by hand"))
    for nic in host_nics:
        gateway = f" gateway {nic.gateway}" if nic.gateway is not None else ""
        ipv6 = f" address {nic.address6.ip}" if nic.address6 is not None else ""
        gateway6 = f" gateway {nic.gateway6}" if nic.gateway6 is not None else ""
        out.append(f"    nic {nic.name} on {nic.lan} address {nic.address.ip}{ipv6}{gateway}{gateway6}")
    if bare:
        out.append(_comment(f"interfaces without an IPv4 address: {', '.join(sorted(bare))}"))
    out.append("}")
    out.append("")
    for subnet, lan in sorted(lans.items(), key=lambda item: item[1]):
        out.append(_comment(f"the LAN of the host's {', '.join(n.name for n in host_nics if n.lan == lan)}"))
        out.append(f"network {lan} {{")
        out.append("    mode external")
        out.append(f"    subnet {subnet}")
        if lan in lan6:
            out.append(f"    subnet {lan6[lan]}")
        out.append("}")
        out.append("")
    lan_of_device = {nic.name: nic.lan for nic in host_nics}

    # Host bridges VMs plug into directly (<interface type='bridge'>), with no libvirt
    # network: the language's way to say that is a bridged network on that bridge, which
    # deploy creates (lab-prefixed: nothing of that name is there) and adoption moves
    # those nics onto. https://libvirt.org/formatdomain.html#bridge-to-lan
    on_bridge = {d.bridge: topo_network[obj.name] for obj, d in networks
                 if obj.name in topo_network and d.bridge}
    for _, dom in domains:
        for vnic in dom.nics:
            if vnic.type == "bridge" and vnic.source and vnic.source not in on_bridge \
                    and len(vnic.source) <= naming.IFNAMSIZ:
                name = _topo_name(vnic.source, w.network_names)
                on_bridge[vnic.source] = name
                slaves = [x for x in enslaved.get(vnic.source, []) if x]
                out.append(_comment(f"host bridge {vnic.source}: VMs plug into it directly, with no libvirt "
                                    f"network; as a bridged network, deploy defines it as {lab}-{name}"))
                out.append(f"network {name} on {host_name} {{")
                out.append(f"    mode bridged to {slaves[0] if slaves else vnic.source}")
                out.append(f"    bridge {vnic.source}")
                if not slaves:
                    out.append(w.cannot(f"host bridge {vnic.source}", f"the host NIC bridge {vnic.source} enslaves",
                                        f"the connection does not report it: write it after `to` instead of "
                                        f"{vnic.source}"))
                out.append("}")
                out.append("")

    # VM blocks.
    vms = 0
    used_macs: dict[tuple[str, str], str] = {}  # (libvirt network, MAC) -> VM
    for obj, dom in domains:
        out.append(w.provenance("domain", obj, dom.uuid))
        problem = naming.exact_name_problem(obj.name)
        if problem is not None:
            out.append(w.cannot(f"domain {obj.name}", f"its name cannot be written in a .topo file ({problem})",
                                "the VM is left out of this file"))
            out.append("")
            continue
        vms += 1
        name = _topo_name(obj.name, w.nodes)
        where = f"domain {obj.name}"
        out.append(f"vm {name} on {host_name} {{")
        out.append(f"    name {obj.name}")
        if dom.memory_kib is not None:
            if 1024 <= dom.memory_kib <= 16 * 1024**3:
                out.append(f"    memory {_size(dom.memory_kib)}")
            else:
                out.append(w.cannot(where, f"memory of {dom.memory_kib} KiB", "topoc takes 1MiB to 16TiB"))
        if dom.vcpus is not None:
            out.append(f"    vcpus {dom.vcpus}")
        if dom.disk is not None:
            out.append(f"    disk {_value(dom.disk)}")
            expected = "qcow2" if dom.disk.lower().endswith(".qcow2") else "raw"
            if dom.disk_format not in (None, expected):
                out.append(w.cannot(where, f"disk format {dom.disk_format} of {dom.disk}",
                                    f"topoc calls it {expected} from its name: rename the image, "
                                    "or adoption redefines the VM with the wrong format"))
        for vnic in dom.nics:
            line = None
            if vnic.type == "network" and vnic.source in topo_network:
                line = f"    nic on {topo_network[vnic.source]}"
                entry = dhcp_hosts[vnic.source].get(vnic.mac or "")
                if entry is not None and entry.ip:
                    line += f" address {entry.ip}"
                    used_macs[(vnic.source, vnic.mac or "")] = name
                    if entry.name not in (None, name):
                        w.warnings.append(f"{where}: the DHCP host entry for {vnic.mac} names it {entry.name}; "
                                          f"the built XML names it {name}")
            elif vnic.type == "bridge" and vnic.source in on_bridge:
                line = f"    nic on {on_bridge[vnic.source]}"
                w.warnings.append(f"{where}: nic {vnic.mac} plugs into host bridge {vnic.source} directly "
                                  f"(type='bridge'); the file puts it on network {on_bridge[vnic.source]}, "
                                  "so adoption makes it <interface type='network'> on that network")
            elif vnic.type == "direct" and vnic.direct_mode in (None, "bridge") and vnic.source in lan_of_device:
                line = f"    nic on {lan_of_device[vnic.source]}"
            if line is None:
                what = f"a nic of type {vnic.type} on {vnic.source or '?'}" + (f" ({vnic.mac})" if vnic.mac else "")
                out.append(w.cannot(where, what, "topoc puts nics on the networks of this file; "
                                    "adoption would redefine the VM without it"))
                continue
            if vnic.mac:
                line += f" mac {vnic.mac}"
            if vnic.model and MODEL_RE.fullmatch(vnic.model):
                line += f" model {vnic.model}"
            elif vnic.model is None:
                w.warnings.append(f"{where}: nic {vnic.mac} names no model (QEMU picks one); the built XML says virtio")
            out.append(line)
        for what in dom.unexpressed:
            out.append(w.cannot(where, what, "kept on the host until topoc redefines the VM"))
        out.append("}")
        out.append("")

    # DHCP host entries that no imported VM nic carries: the language makes them from nics.
    for obj, d in networks:
        for entry in d.dhcp_hosts:
            if obj.name in topo_network and (obj.name, entry.mac or "") not in used_macs:
                w.warnings.append(f"network {obj.name}: DHCP host entry {entry.mac} -> {entry.ip}"
                                  + (f" ({entry.name})" if entry.name else "")
                                  + " belongs to no imported VM: topoc writes host entries from VM nics, "
                                  "so the built XML drops it")
    text = "\n".join(out) + "\n"
    formatted, diagnostics = format_source(text, source)
    if formatted is None:  # a bug in the writer above, never the host's fault
        raise ImportFailed("topoc import wrote a file that does not parse (a bug in topoc): "
                           + "; ".join(f"line {d.span.line}: {d.message}" for d in diagnostics))
    return Imported(formatted, w.warnings, len(topo_network), vms)
