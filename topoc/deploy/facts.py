"""Reading libvirt XML for deploy: the facts a plan compares, never libvirt itself.

Pure functions on XML text (no libvirt import, no I/O), so the plan's reasoning can be
tested on its own: which bridge and IPv4 subnets a network puts on the host, whether
two documents say the same thing, whether they differ only in DHCP host entries (the
one change topoc applies to a running network live), and setting an object's UUID.

Formats: https://libvirt.org/formatnetwork.html, https://libvirt.org/formatdomain.html,
https://libvirt.org/formatnode.html (host interfaces: https://libvirt.org/formatinterface.html).
"""

from __future__ import annotations

import difflib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network

from topoc.backends.libvirt import METADATA_NAMESPACE, METADATA_PREFIX

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
    subnets: tuple[IPv4Network, ...]

    @property
    def uses_existing_bridge(self) -> bool:
        # <forward mode='bridge'/> attaches to a bridge the host already has: it must
        # exist, so it is never a clash. https://libvirt.org/formatnetwork.html#connectivity
        return self.forward_mode == "bridge"


def _ipv4_subnet(ip: ET.Element) -> IPv4Network | None:
    """The subnet of an <ip> element (address with netmask or prefix), IPv4 only."""
    if ip.get("family", "ipv4") != "ipv4" or ip.get("address") is None:
        return None
    mask = ip.get("netmask") or ip.get("prefix") or "24"
    try:
        return IPv4Interface(f"{ip.get('address')}/{mask}").network
    except ValueError:
        return None


def network_facts(xml: str) -> NetworkFacts:
    root = parse(xml)
    bridge = root.find("bridge")
    forward = root.find("forward")
    subnets = tuple(s for s in (_ipv4_subnet(ip) for ip in root.findall("ip")) if s is not None)
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
    subnets: tuple[IPv4Network, ...]


def interface_facts(xml: str) -> InterfaceFacts:
    # <interface name='eth1'><protocol family='ipv4'><ip address='..' prefix='24'/>
    root = parse(xml)
    subnets = []
    for protocol in root.findall("protocol"):
        if protocol.get("family") != "ipv4":
            continue
        for ip in protocol.findall("ip"):
            try:
                subnets.append(IPv4Interface(f"{ip.get('address')}/{ip.get('prefix', '32')}").network)
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
