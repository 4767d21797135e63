"""Reading libvirt XML for deploy: the facts a plan compares, never libvirt itself.

Pure functions on XML text (no libvirt import, no I/O), so the plan's reasoning can be
tested on its own: which bridge and subnets (both families) a network puts on the host, whether
two documents say the same thing, whether they differ only in DHCP host entries (the
one change topoc applies to a running network live), and setting an object's UUID.

Formats: https://libvirt.org/formatnetwork.html, https://libvirt.org/formatdomain.html,
https://libvirt.org/formatnode.html (host interfaces: https://libvirt.org/formatinterface.html).
"""

from __future__ import annotations

import difflib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface

from topoc.backends.libvirt import METADATA_NAMESPACE, METADATA_PREFIX
from topoc.model.family import IPInterface, IPNetwork

# Keep topoc's own prefix when a document is written back out (ElementTree would
# otherwise invent `ns0:`); libvirt stores the metadata element as it receives it.
ET.register_namespace(METADATA_PREFIX, METADATA_NAMESPACE)

_LAB_TAG = f"{{{METADATA_NAMESPACE}}}lab"


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


@dataclass(frozen=True, slots=True)
class NetworkFacts:
    """What a network occupies on the host: its bridge and the subnets on that bridge."""

    name: str
    bridge: str | None
    forward_mode: str | None  # None: isolated (no <forward>)
    subnets: tuple[IPNetwork, ...]  # in document order (topoc writes IPv4's first)

    @property
    def uses_existing_bridge(self) -> bool:
        # <forward mode='bridge'/> attaches to a bridge the host already has: it must
        # exist, so it is never a clash. https://libvirt.org/formatnetwork.html#connectivity
        return self.forward_mode == "bridge"


def _subnet(ip: ET.Element) -> IPNetwork | None:
    """The subnet of an <ip> element (address with netmask or prefix), either family."""
    interface = _ip_interface(ip)
    return interface.network if interface is not None else None


# The prefix of an <ip> that gives none: IPv6's is 64, as libvirt's own
# (src/util/virsocketaddr.c virSocketAddrGetIPPrefix: "AF_INET6 ... return 64"); IPv4's
# is read as 24 here, as it always was (libvirt takes the address's class there).
_DEFAULT_PREFIX = {"ipv4": "24", "ipv6": "64"}


def _ip_interface(ip: ET.Element) -> IPInterface | None:
    """An <ip> element's address with its netmask or prefix: <ip family='ipv6'> is IPv6,
    any other IPv4 (libvirt's rule: an address without `family` is IPv4)."""
    family = ip.get("family", "ipv4")
    if ip.get("address") is None or family not in _DEFAULT_PREFIX:
        return None
    mask = ip.get("netmask") or ip.get("prefix") or _DEFAULT_PREFIX[family]
    kind = IPv6Interface if family == "ipv6" else IPv4Interface
    try:
        return kind(f"{ip.get('address')}/{mask}")
    except ValueError:
        return None


def network_facts(xml: str) -> NetworkFacts:
    root = parse(xml)
    bridge = root.find("bridge")
    forward = root.find("forward")
    subnets = tuple(s for s in (_subnet(ip) for ip in root.findall("ip")) if s is not None)
    return NetworkFacts(
        name=root.findtext("name", ""),
        bridge=bridge.get("name") if bridge is not None else None,
        forward_mode=forward.get("mode", "nat") if forward is not None else None,
        subnets=subnets,
    )


@dataclass(frozen=True, slots=True)
class InterfaceFacts:
    """A host interface as the libvirt interface driver reports it."""

    name: str
    subnets: tuple[IPNetwork, ...]


def interface_facts(xml: str) -> InterfaceFacts:
    # <interface name='eth1'><protocol family='ipv4'><ip address='..' prefix='24'/>
    # (and <protocol family='ipv6'>): https://libvirt.org/formatinterface.html
    root = parse(xml)
    subnets: list[IPNetwork] = []
    for protocol in root.findall("protocol"):
        family = protocol.get("family")
        if family not in ("ipv4", "ipv6"):
            continue
        kind, whole = (IPv6Interface, "128") if family == "ipv6" else (IPv4Interface, "32")
        for ip in protocol.findall("ip"):
            try:
                subnets.append(kind(f"{ip.get('address')}/{ip.get('prefix', whole)}").network)
            except ValueError:
                continue
    return InterfaceFacts(root.get("name", ""), tuple(subnets))


def uuid_of(xml: str) -> str | None:
    text = parse(xml).findtext("uuid")
    return text.strip() if text else None


def lab_marker(xml: str) -> str | None:
    """The lab named by a network's or domain's <metadata><topoc:lab name=.../>."""
    metadata = parse(xml).find("metadata")
    if metadata is None:
        return None
    marker = metadata.find(_LAB_TAG)
    return marker.get("name") if marker is not None else None


def with_uuid(xml: str, uuid: str) -> str:
    """The document with its <uuid> set to `uuid` (added after <name> when missing).
    Redefining an object under the same UUID is what makes libvirt update it in place
    instead of refusing a second object of that name."""
    root = parse(xml)
    element = root.find("uuid")
    if element is not None and (element.text or "").strip() == uuid:
        return xml
    if element is None:
        element = ET.Element("uuid")
        names = [i for i, child in enumerate(root) if child.tag == "name"]
        root.insert(names[0] + 1 if names else 0, element)
    element.text = uuid
    return ET.tostring(root, encoding="unicode")


def _canonical_element(element: ET.Element) -> tuple:
    attributes = dict(element.attrib)
    if element.tag == _LAB_TAG:
        # Where the lab was read from is provenance, not configuration: deploying
        # `./lab.topo` after `lab.topo` is no change.
        attributes.pop("source", None)
    text = (element.text or "").strip()
    children = tuple(_canonical_element(c) for c in element if isinstance(c.tag, str))
    return (element.tag, tuple(sorted(attributes.items())), text, children)


def same_config(a: str, b: str) -> bool:
    """Whether two documents say the same thing: comments, layout and attribute order
    aside."""
    return _canonical_element(parse(a)) == _canonical_element(parse(b))


@dataclass(frozen=True, slots=True)
class DhcpHostChange:
    """One live edit of a network's DHCP host entries (virNetworkUpdate, section
    ip-dhcp-host): https://libvirt.org/html/libvirt-libvirt-network.html#virNetworkUpdate"""

    command: str  # "add", "delete" or "modify"
    ip_index: int  # which <ip> element of the network holds the <dhcp>
    old: str | None  # the <host/> element before (delete, modify)
    new: str | None  # the <host/> element after (add, modify)

    def describe(self) -> str:
        entry = parse(self.new or self.old or "<host/>")
        what = f"{entry.get('mac')} -> {entry.get('ip')}"
        return {"add": "+", "delete": "-", "modify": "~"}[self.command] + what


def _dhcp_hosts(root: ET.Element) -> dict[tuple[int, str], ET.Element]:
    """(index of the <ip>, MAC) -> <host> element, for every DHCP host entry."""
    hosts = {}
    for index, ip in enumerate(root.findall("ip")):
        for host in ip.findall("dhcp/host"):
            hosts[(index, host.get("mac") or host.get("name") or "")] = host
    return hosts


def _without_dhcp_hosts(root: ET.Element) -> ET.Element:
    for ip in root.findall("ip"):
        for dhcp in ip.findall("dhcp"):
            for host in dhcp.findall("host"):
                dhcp.remove(host)
    return root


def _host_xml(host: ET.Element) -> str:
    return ET.tostring(host, encoding="unicode").strip()


def dhcp_host_changes(old: str, new: str) -> list[DhcpHostChange] | None:
    """The DHCP host edits that turn network `old` into `new`, or None when anything
    else differs too (that takes a restart of the network: libvirt applies <forward>,
    <bridge>, <ip> and the DHCP range only when it starts the network)."""
    old_root, new_root = parse(old), parse(new)
    old_hosts, new_hosts = _dhcp_hosts(old_root), _dhcp_hosts(new_root)
    if _canonical_element(_without_dhcp_hosts(old_root)) != _canonical_element(_without_dhcp_hosts(new_root)):
        return None
    changes = []
    for key in sorted(old_hosts.keys() - new_hosts.keys()):
        changes.append(DhcpHostChange("delete", key[0], _host_xml(old_hosts[key]), None))
    for key in sorted(old_hosts.keys() & new_hosts.keys()):
        before, after = old_hosts[key], new_hosts[key]
        if _canonical_element(before) != _canonical_element(after):
            changes.append(DhcpHostChange("modify", key[0], _host_xml(before), _host_xml(after)))
    for key in sorted(new_hosts.keys() - old_hosts.keys()):
        changes.append(DhcpHostChange("add", key[0], None, _host_xml(new_hosts[key])))
    return changes


def differing_parts(old: str, new: str) -> list[str]:
    """The top-level elements that differ between two documents, by tag: `forward`,
    `bridge`, `ip`... (to say why a change needs a restart)."""
    def parts(xml: str) -> dict[str, list[tuple]]:
        grouped: dict[str, list[tuple]] = {}
        for child in parse(xml):
            if isinstance(child.tag, str):
                grouped.setdefault(child.tag, []).append(_canonical_element(child))
        return grouped

    a, b = parts(old), parts(new)
    return sorted(tag for tag in a.keys() | b.keys() if a.get(tag) != b.get(tag))


def unified_diff(old: str, new: str, old_label: str, new_label: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=old_label, tofile=new_label))


# --- what a network or domain means, for import and adoption ---------------------------
#
# The facts topoc's language can say about an object, read from any libvirt XML (one
# topoc built, or one made by hand), plus a list of what it says that the language
# cannot. `topoc import` writes the first as statements and the second as comments;
# adoption compares the first of the host's object with the first of the file's.

# libvirt's defaults where an attribute is left out (https://libvirt.org/formatnetwork.html):
# a bridge libvirt creates has STP on and forward delay 0; a network with an address
# (either family) runs dnsmasq's DNS unless <dns enable='no'/>.
DEFAULT_STP = "on"
DEFAULT_DELAY = "0"


@dataclass(frozen=True, slots=True)
class DhcpHost:
    mac: str | None
    ip: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class NetworkDescription:
    name: str
    uuid: str | None
    forward_mode: str | None  # None: no <forward> (isolated)
    forward_dev: str | None
    bridge: str | None
    stp: bool | None  # None: not a bridge libvirt creates (mode='bridge')
    mtu: int | None
    address: IPv4Interface | None  # the first IPv4 <ip>
    dhcp_ranges: tuple[tuple[str, str], ...]
    dhcp_hosts: tuple[DhcpHost, ...]
    dns: bool | None  # None: no address, so no dnsmasq
    domain: str | None
    unexpressed: tuple[str, ...]  # what the language cannot say, one phrase each
    address6: IPv6Interface | None = None  # the first <ip family='ipv6'>
    dhcp6_ranges: tuple[tuple[str, str], ...] = ()
    nat6: bool = False  # <forward mode='nat'><nat ipv6='yes'/>

    def meaning(self, with_hosts: bool = True) -> tuple:
        """The facts a .topo file decides, to compare two networks (not names, UUIDs,
        comments, layout or what the language cannot express)."""
        hosts = frozenset((h.mac, h.ip, h.name) for h in self.dhcp_hosts) if with_hosts else None
        return (self.forward_mode, self.forward_dev if self.forward_mode in ("nat", "route") else None,
                self.bridge, self.stp, self.mtu, self.address, self.dhcp_ranges, hosts, self.dns,
                self.domain, self.address6, self.dhcp6_ranges, self.nat6)

    def differences(self, other: NetworkDescription) -> list[str]:
        """What `other` says differently, one phrase each (for a plan's detail)."""
        out = []
        for label, mine, theirs in (
                ("forward mode", self.forward_mode or "none", other.forward_mode or "none"),
                ("forward dev", self.forward_dev, other.forward_dev), ("bridge", self.bridge, other.bridge),
                ("stp", self.stp, other.stp), ("mtu", self.mtu, other.mtu),
                ("address", self.address, other.address), ("DHCP range", self.dhcp_ranges, other.dhcp_ranges),
                ("DNS", self.dns, other.dns), ("domain", self.domain, other.domain),
                ("IPv6 address", self.address6, other.address6),
                ("DHCPv6 range", self.dhcp6_ranges, other.dhcp6_ranges), ("nat6", self.nat6, other.nat6)):
            if mine != theirs and not (label == "forward dev" and other.forward_mode not in ("nat", "route")):
                out.append(f"{label} {_shown(mine)} -> {_shown(theirs)}")
        return out


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return ", ".join(f"{a}-{b}" for a, b in value) or "none"  # DHCP ranges
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def dhcp_host_edits(have: str, want: str) -> list[DhcpHostChange]:
    """The DHCP host edits that give network `have` the host entries of `want`, keyed by
    MAC, on the first IPv4 <ip> of `have` (the one libvirt's ip-dhcp-host section edits
    at that index). For adoption: the two documents may differ in every other way."""
    have_root, want_root = parse(have), parse(want)
    index = next((i for i, ip in enumerate(have_root.findall("ip")) if ip.get("family", "ipv4") == "ipv4"), 0)

    def hosts(root: ET.Element) -> dict[str, ET.Element]:
        ip = next((ip for ip in root.findall("ip") if ip.get("family", "ipv4") == "ipv4"), None)
        found = ip.findall("dhcp/host") if ip is not None else []
        return {(h.get("mac") or "").lower(): h for h in found if h.get("mac")}

    old, new = hosts(have_root), hosts(want_root)
    changes = [DhcpHostChange("delete", index, _host_xml(old[m]), None) for m in sorted(old.keys() - new.keys())]
    for mac in sorted(old.keys() & new.keys()):
        a, b = old[mac], new[mac]
        if (a.get("ip"), a.get("name")) != (b.get("ip"), b.get("name")):
            changes.append(DhcpHostChange("modify", index, _host_xml(a), _host_xml(b)))
    changes += [DhcpHostChange("add", index, None, _host_xml(new[m])) for m in sorted(new.keys() - old.keys())]
    return changes


# Top-level network elements the description covers (the rest is unexpressed).
_NETWORK_KNOWN = {"name", "uuid", "metadata", "forward", "bridge", "mtu", "ip", "dns", "domain"}


def _ipv4_interface(ip: ET.Element) -> IPv4Interface | None:
    mask = ip.get("netmask") or ip.get("prefix")
    if mask is None:
        return None
    try:
        return IPv4Interface(f"{ip.get('address')}/{mask}")
    except ValueError:
        return None


def describe_network(xml: str) -> NetworkDescription:
    root = parse(xml)
    extra: list[str] = []
    for child in root:
        if isinstance(child.tag, str) and child.tag not in _NETWORK_KNOWN:
            extra.append(f"<{child.tag}>" + (f" {child.get('address')}" if child.get("address") else ""))
    for attribute in ("ipv6", "trustGuestRxFilters"):
        if root.get(attribute):
            extra.append(f"<network {attribute}='{root.get(attribute)}'>")
    forward = root.find("forward")
    mode = forward.get("mode", "nat") if forward is not None else None
    dev = forward.get("dev") if forward is not None else None
    nat6 = False
    if forward is not None:
        nat = forward.find("nat")
        if nat is not None:
            for part in nat:
                if isinstance(part.tag, str):
                    extra.append(f"<nat><{part.tag} " + " ".join(f"{k}='{v}'" for k, v in part.attrib.items())
                                 + "/> (NAT " + ("port range" if part.tag == "port" else part.tag) + ")")
            for attribute, value in nat.attrib.items():
                # <nat ipv6='yes'/>: a nat network's IPv6 masqueraded, `nat6 on` (since
                # libvirt 6.5.0, https://libvirt.org/formatnetwork.html#connectivity).
                if attribute == "ipv6" and value in ("yes", "no") and mode == "nat":
                    nat6 = value == "yes"
                else:
                    extra.append(f"<nat {attribute}='{value}'>")
        for part in forward:
            # libvirt writes <forward dev='X'> out as <interface dev='X'/> too: that is `via`.
            via_again = part.tag == "interface" and part.get("dev") == dev
            if isinstance(part.tag, str) and part.tag != "nat" and not via_again:
                extra.append(f"<forward><{part.tag}> (the devices of the forward)")
    bridge = root.find("bridge")
    bridge_name = bridge.get("name") if bridge is not None else None
    own_bridge = mode != "bridge"
    stp = None
    if own_bridge:
        stp = (bridge.get("stp", DEFAULT_STP) if bridge is not None else DEFAULT_STP) == "on"
        delay = bridge.get("delay", DEFAULT_DELAY) if bridge is not None else DEFAULT_DELAY
        if delay != DEFAULT_DELAY:
            extra.append(f"<bridge delay='{delay}'> (topoc makes the forward delay 0)")
    if bridge is not None:
        for attribute, value in bridge.attrib.items():
            if attribute not in ("name", "stp", "delay"):
                extra.append(f"<bridge {attribute}='{value}'>")
    mtu_element = root.find("mtu")
    mtu = int(mtu_element.get("size", "0")) or None if mtu_element is not None else None
    address: IPv4Interface | None = None
    address6: IPv6Interface | None = None
    ranges: list[tuple[str, str]] = []
    ranges6: list[tuple[str, str]] = []
    hosts: list[DhcpHost] = []
    for ip in root.findall("ip"):
        ipv6 = ip.get("family", "ipv4") == "ipv6"
        if ip.get("family", "ipv4") not in ("ipv4", "ipv6"):
            extra.append(f"<ip family='{ip.get('family')}' address='{ip.get('address')}'>")
            continue
        if ipv6:
            interface6 = _ip_interface(ip)
            if address6 is not None or not isinstance(interface6, IPv6Interface):
                extra.append(f"<ip family='ipv6' address='{ip.get('address')}'> (a second IPv6 address "
                             "on the bridge)")
                continue
            address6 = interface6
        else:
            interface = _ipv4_interface(ip)
            if address is not None or interface is None:
                extra.append(f"<ip address='{ip.get('address')}'> (a second IPv4 address on the bridge)")
                continue
            address = interface
        for part in ip:
            if isinstance(part.tag, str) and part.tag != "dhcp":
                extra.append(f"<ip><{part.tag}>")
        dhcp = ip.find("dhcp")
        if dhcp is None:
            continue
        for part in dhcp:
            if part.tag == "range":
                (ranges6 if ipv6 else ranges).append((part.get("start", ""), part.get("end", "")))
                if len(part):
                    extra.append("<range><lease> (DHCP lease time)")
            elif part.tag == "host" and ipv6:
                # A DHCPv6 host is keyed by DUID or name (libvirt refuses a MAC there):
                # topoc gives a VM its IPv6 address through cloud-init instead.
                key = " ".join(f"{k}='{part.get(k)}'" for k in ("id", "name", "ip") if part.get(k))
                extra.append(f"<host {key}> (a DHCPv6 host entry)")
            elif part.tag == "host":
                hosts.append(DhcpHost(part.get("mac", "").lower() or None, part.get("ip"), part.get("name")))
            elif isinstance(part.tag, str):
                extra.append(f"<dhcp><{part.tag}>")
    dns_element = root.find("dns")
    dns = None
    if address is not None or address6 is not None:
        dns = dns_element is None or dns_element.get("enable", "yes") == "yes"
    if dns_element is not None:
        for part in dns_element:
            if isinstance(part.tag, str):
                extra.append(f"<dns><{part.tag}> (DNS {part.tag} entries)")
        for attribute, value in dns_element.attrib.items():
            if attribute != "enable":
                extra.append(f"<dns {attribute}='{value}'>")
    domain_element = root.find("domain")
    domain = domain_element.get("name") if domain_element is not None else None
    if domain_element is not None and domain_element.get("localOnly"):
        extra.append(f"<domain localOnly='{domain_element.get('localOnly')}'>")
    return NetworkDescription(
        name=root.findtext("name", ""), uuid=(root.findtext("uuid") or "").strip() or None,
        forward_mode=mode, forward_dev=dev, bridge=bridge_name, stp=stp, mtu=mtu, address=address,
        dhcp_ranges=tuple(ranges), dhcp_hosts=tuple(hosts), dns=dns, domain=domain,
        unexpressed=tuple(extra), address6=address6, dhcp6_ranges=tuple(ranges6), nat6=nat6)


@dataclass(frozen=True, slots=True)
class DomainNic:
    type: str  # network, direct, bridge, ...
    source: str | None  # the network's name (network), the host device (direct), the bridge
    mac: str | None
    model: str | None
    direct_mode: str | None = None  # <source mode> of a direct (macvtap) nic


@dataclass(frozen=True, slots=True)
class DomainDescription:
    name: str
    uuid: str | None
    memory_kib: int | None
    vcpus: int | None
    disk: str | None  # the first file-backed disk's path
    disk_format: str | None
    nics: tuple[DomainNic, ...]
    unexpressed: tuple[str, ...]

    def meaning(self) -> tuple:
        return (self.memory_kib, self.vcpus, self.disk, self.disk_format,
                tuple((n.type, n.source, n.mac, n.model) for n in self.nics))

    def differences(self, other: DomainDescription) -> list[str]:
        out = []
        for label, mine, theirs in (("memory KiB", self.memory_kib, other.memory_kib),
                                    ("vCPUs", self.vcpus, other.vcpus), ("disk", self.disk, other.disk),
                                    ("disk format", self.disk_format, other.disk_format)):
            if mine != theirs:
                out.append(f"{label} {_shown(mine)} -> {_shown(theirs)}")
        def nics(d: DomainDescription) -> str:
            return "; ".join(f"{n.type} {n.source} {n.mac} {n.model}" for n in d.nics) or "none"
        if self.meaning()[4] != other.meaning()[4]:
            out.append(f"nics [{nics(self)}] -> [{nics(other)}]")
        return out


# Units of <memory unit=...>: https://libvirt.org/formatdomain.html#memory-allocation
_MEMORY_UNITS = {"b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 1000**2, "m": 1024**2,
                 "mib": 1024**2, "gb": 1000**3, "g": 1024**3, "gib": 1024**3, "tb": 1000**4,
                 "t": 1024**4, "tib": 1024**4}
# Devices every domain has or that only say how it is wired inside (controllers, the
# console topoc itself writes): not worth a warning on their own.
_ROUTINE_DEVICES = {"emulator", "controller", "serial", "console", "input", "memballoon", "disk",
                    "interface", "channel", "watchdog", "panic"}


def describe_domain(xml: str) -> DomainDescription:
    root = parse(xml)
    extra: list[str] = []
    memory_kib = None
    memory = root.find("memory")
    memory_text = (memory.text or "").strip() if memory is not None else ""
    if memory is not None and memory_text.isdigit():
        unit = _MEMORY_UNITS.get(memory.get("unit", "KiB").lower(), 1024)
        memory_kib = -(-int(memory_text) * unit // 1024)
    current = root.find("currentMemory")
    if current is not None and memory is not None and (current.text or "").strip() != (memory.text or "").strip():
        extra.append(f"<currentMemory> {current.text} {current.get('unit', 'KiB')} (the balloon's size)")
    vcpu = root.find("vcpu")
    vcpu_text = (vcpu.text or "").strip() if vcpu is not None else ""
    vcpus = int(vcpu_text) if vcpu_text.isdigit() else None
    if vcpu is not None and vcpu.get("current"):
        extra.append(f"<vcpu current='{vcpu.get('current')}'> (vCPUs online at boot)")
    disk = disk_format = None
    devices = root.find("devices")
    other: list[str] = []
    nics: list[DomainNic] = []
    for device in devices if devices is not None else []:
        if not isinstance(device.tag, str):
            continue
        if device.tag == "disk":
            source = device.find("source")
            path = source.get("file") if source is not None else None
            if device.get("device", "disk") == "disk" and device.get("type") == "file" and path and disk is None:
                disk = path
                driver = device.find("driver")
                # No format given: libvirt takes the image as raw (it never lets QEMU probe).
                disk_format = (driver.get("type") if driver is not None else None) or "raw"
            else:
                extra.append(f"<disk device='{device.get('device', 'disk')}'>"
                             + (f" {path}" if path else "") + " (topoc describes one file-backed disk)")
        elif device.tag == "interface":
            source = device.find("source")
            kind = device.get("type", "")
            source_name = None
            if source is not None:
                source_name = source.get("network") or source.get("dev") or source.get("bridge")
            mac = device.find("mac")
            model = device.find("model")
            nics.append(DomainNic(kind, source_name, mac.get("address", "").lower() if mac is not None else None,
                                  model.get("type") if model is not None else None,
                                  source.get("mode") if source is not None and kind == "direct" else None))
            for part in device:
                if isinstance(part.tag, str) and part.tag not in ("source", "mac", "model", "target", "alias",
                                                                  "address"):
                    extra.append(f"<interface><{part.tag}> on the nic {nics[-1].mac or ''}".rstrip())
            if source is not None and source.get("portgroup"):
                extra.append(f"<source portgroup='{source.get('portgroup')}'> on the nic {nics[-1].mac or ''}")
        elif device.tag not in _ROUTINE_DEVICES:
            other.append(device.tag)
    if other:
        extra.append("devices " + ", ".join(f"<{t}>" for t in sorted(set(other))))
    return DomainDescription(
        name=root.findtext("name", ""), uuid=(root.findtext("uuid") or "").strip() or None,
        memory_kib=memory_kib, vcpus=vcpus, disk=disk, disk_format=disk_format, nics=tuple(nics),
        unexpressed=tuple(extra))


def lab_element(lab: str, source: str, namespaced: bool = True) -> str:
    """topoc's <topoc:lab name= source=/> element alone, its namespace declared on it
    (or a plain <lab/>, for virDomainSetMetadata, which adds the namespace itself)."""
    # A lone element: ElementTree declares its namespace on it (the registered prefix).
    tag = _LAB_TAG if namespaced else "lab"
    return ET.tostring(ET.Element(tag, {"name": lab, "source": source}), encoding="unicode")


def with_lab_marker(xml: str, lab: str, source: str) -> str:
    """The document with topoc's <metadata><topoc:lab name= source=/> added, the rest
    exactly as it was (text edit, not a re-serialisation: the namespace stays declared
    on the element, as libvirt keeps metadata): how an adopted network becomes the lab's."""
    if lab_marker(xml) is not None:
        raise ValueError("the document already carries a topoc lab marker")
    text = lab_element(lab, source)
    at = xml.find("<metadata>")
    if at >= 0:
        at += len("<metadata>")
        return xml[:at] + text + xml[at:]
    for closing in ("</uuid>", "</name>"):
        at = xml.find(closing)
        if at >= 0:
            at += len(closing)
            return xml[:at] + f"<metadata>{text}</metadata>" + xml[at:]
    raise ValueError("not a libvirt network or domain document (no <name>)")


def domain_with_meaning(have: str, want: str) -> str:
    """Domain `have` (the host's) edited to mean what `want` (the file's) means, and
    nothing else changed: memory, vCPUs, the first file-backed disk, and the nics (by
    MAC: source and model set, the file's missing ones added, the others removed).
    Machine type, firmware, graphics and every other device stay as the host has them:
    how adoption changes only what differs. <metadata> is carried over as text (so
    namespaces other programs declared in it stay where they were)."""
    import re

    found = re.search(r"<metadata>.*?</metadata>|<metadata/>", have, re.S)
    metadata = found.group(0) if found else None
    root = parse(have if found is None else have[:found.start()] + "<metadata/>" + have[found.end():])
    wanted = parse(want)
    have_d, want_d = describe_domain(have), describe_domain(want)
    if have_d.memory_kib != want_d.memory_kib and want_d.memory_kib is not None:
        memory = root.find("memory")
        if memory is None:
            memory = ET.SubElement(root, "memory")
        memory.set("unit", "KiB")
        memory.text = str(want_d.memory_kib)
        current = root.find("currentMemory")
        if current is not None:
            current.set("unit", "KiB")
            current.text = str(min(want_d.memory_kib, (have_d.memory_kib or want_d.memory_kib)
                                   if current.text == str(have_d.memory_kib) else want_d.memory_kib))
    if have_d.vcpus != want_d.vcpus and want_d.vcpus is not None:
        vcpu = root.find("vcpu")
        if vcpu is None:
            vcpu = ET.SubElement(root, "vcpu")
        vcpu.text = str(want_d.vcpus)
        if vcpu.get("current") and int(vcpu.get("current", "0")) > want_d.vcpus:
            del vcpu.attrib["current"]
    devices = root.find("devices")
    if devices is None:
        devices = ET.SubElement(root, "devices")
    wanted_devices = wanted.find("devices")

    def file_disk(parent: ET.Element | None) -> ET.Element | None:
        for disk in parent.findall("disk") if parent is not None else []:
            source = disk.find("source")
            if disk.get("device", "disk") == "disk" and disk.get("type") == "file" and source is not None \
                    and source.get("file"):
                return disk
        return None

    if (have_d.disk, have_d.disk_format) != (want_d.disk, want_d.disk_format):
        mine, theirs = file_disk(devices), file_disk(wanted_devices)
        if mine is not None and theirs is None:
            devices.remove(mine)
        elif mine is not None and theirs is not None:
            mine.find("source").set("file", want_d.disk or "")  # type: ignore[union-attr]
            driver = mine.find("driver")
            if driver is None:
                driver = ET.SubElement(mine, "driver", {"name": "qemu"})
            driver.set("type", want_d.disk_format or "raw")
        elif theirs is not None:
            devices.insert(0, theirs)
    if have_d.meaning()[4] != want_d.meaning()[4]:
        wanted_nics = {(i.find("mac").get("address") or "").lower(): i  # type: ignore[union-attr]
                       for i in (wanted_devices.findall("interface") if wanted_devices is not None else [])
                       if i.find("mac") is not None}
        for interface in devices.findall("interface"):
            mac = interface.find("mac")
            key = (mac.get("address") or "").lower() if mac is not None else ""
            theirs = wanted_nics.pop(key, None)
            if theirs is None:
                devices.remove(interface)
                continue
            interface.set("type", theirs.get("type", "network"))
            source = interface.find("source")
            if source is not None:
                interface.remove(source)
            interface.insert(0, theirs.find("source"))  # type: ignore[arg-type]
            model = interface.find("model")
            if model is None:
                model = ET.SubElement(interface, "model")
            model.set("type", (theirs.find("model").get("type") if theirs.find("model") is not None  # type: ignore[union-attr]
                               else "virtio") or "virtio")
        for interface in wanted_nics.values():
            devices.append(interface)
    text = ET.tostring(root, encoding="unicode")
    if metadata is not None:
        text = text.replace("<metadata />", metadata, 1)
    return text
