"""The libvirt backend: the IR -> libvirt network and domain XML, and the virsh steps.

Pure functions, no I/O: `generate(lab)` returns `libvirt/networks/<network>.xml` for
each managed network, `libvirt/domains/<vm>.xml` for each VM and `libvirt/README.txt`
with the virsh commands that apply and undo them, in order. The Python side decides
*what* goes into each document (a small view of the IR per network and domain); the
jinja2 templates under topoc/templates/libvirt/ only lay it out, with autoescaping on,
so no name, path or string can break the XML.

Formats relied on: https://libvirt.org/formatnetwork.html and
https://libvirt.org/formatdomain.html (and libvirt's own RNG schemas, which the tests
validate every generated file against).
"""

from __future__ import annotations

import os
import re
import shlex
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, Template
from markupsafe import Markup, escape

from topoc.backends import cloudinit
from topoc.model import naming
from topoc.model.family import FAMILIES, IPV4, Family, IPInterface
from topoc.model.ir import Host, Lab, Mode, Network, Nic, Vm
from topoc.model.platform import DEFAULT_PROFILE, Profile

# Where topoc records ownership inside libvirt objects (deploy reads it back):
# <metadata><topoc:lab name="LAB" source="FILE"/></metadata>
# https://libvirt.org/formatdomain.html#general-metadata
METADATA_NAMESPACE = "https://topoc.dev/xmlns/libvirt/1"
METADATA_PREFIX = "topoc"

# <domain type>: KVM unless the caller knows the host lacks it (deploy asks the
# connection's domain capabilities and passes "qemu", plain TCG emulation, there).
# https://libvirt.org/formatdomain.html#element-and-attribute-overview
DEFAULT_DOMAIN_TYPE = DEFAULT_PROFILE.domain_type

# The QEMU guest agent's channel: a virtio serial port of this name is where
# qemu-guest-agent listens in the guest, and libvirt connects its side to a UNIX socket
# it picks itself. https://libvirt.org/formatdomain.html#channel
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"

NETWORKS_DIR = "libvirt/networks"
DOMAINS_DIR = "libvirt/domains"
README_PATH = "libvirt/README.txt"

# libvirt's <forward mode> per topoc mode; isolated networks have no <forward>.
# https://libvirt.org/formatnetwork.html#connectivity
FORWARD_MODES = {
    Mode.NAT: "nat",
    Mode.ROUTED: "route",
    Mode.OPEN: "open",
    Mode.BRIDGED: "bridge",
}
# Modes whose <forward> may name the uplink device: a fact of libvirt's, in the profile.
FORWARD_DEV_MODES = DEFAULT_PROFILE.forward_dev_modes

# libvirt refuses a DHCP <host name> that does not start with a letter ("Cannot use
# host name"), and dnsmasq hands the name to the guest as its hostname, so only names
# that are valid DNS labels go in; other VMs keep their MAC -> IP entry without a name.
HOSTNAME_RE = re.compile(r"[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

# XML turns a literal tab, newline or carriage return in an attribute value into a
# space when it reads the document back; character references keep them exact.
_WHITESPACE_REFS = {ord("\t"): "&#9;", ord("\n"): "&#10;", ord("\r"): "&#13;"}


def _exact_attribute(value: str) -> Markup:
    """A free-form string (a disk path: the grammar takes any quoted text; the source
    file's path) escaped for an attribute so that it reads back exactly, whitespace
    included. Every other value is a name, number or address, and autoescaping alone
    covers it."""
    return Markup(str(escape(value)).translate(_WHITESPACE_REFS))


def _xml_comment(value: object) -> Markup:
    """Text made safe inside <!-- -->: XML forbids `--` in a comment and a comment
    ending in `-`, and libxml2 (so virsh) rejects the whole document otherwise."""
    text = re.sub(r"-(?=-)", "- ", str(value))
    if text.endswith("-"):
        text += " "
    return Markup(text)


# Loaded once per process: templates are compiled on first use and cached, and never
# checked for changes on disk again (auto_reload would stat the file on every render).
_XML = Environment(loader=PackageLoader("topoc", "templates"), autoescape=True,
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                   keep_trailing_newline=True, auto_reload=False)
_XML.filters["xml_comment"] = _xml_comment
# README.txt is plain text: escaping would turn `&` in a path into `&amp;`.
_TEXT = Environment(loader=PackageLoader("topoc", "templates"), autoescape=False,
                    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                    keep_trailing_newline=True, auto_reload=False)


@cache
def _template(name: str) -> Template:
    env = _TEXT if name.endswith(".txt.j2") else _XML
    return env.get_template(f"libvirt/{name}")


# --- what goes into a network --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DhcpHost:
    """A DHCP reservation: the VM nic with this MAC always gets this address."""

    mac: str
    ip: str
    name: str | None


def _hostname(vm: str) -> str | None:
    return vm if HOSTNAME_RE.fullmatch(vm) else None


def _static_hosts(vms: tuple[Vm, ...]) -> dict[str, list[DhcpHost]]:
    """Network name -> a reservation per VM nic with an address on it (VMs by name).
    A VM with two nics on one network names only the first: dnsmasq gives a name to
    one address."""
    hosts: dict[str, list[DhcpHost]] = defaultdict(list)
    for vm in sorted(vms, key=lambda v: v.name):
        named: set[str] = set()
        for nic in vm.nics:
            if nic.ip is not None and nic.mac is not None:
                name = _hostname(vm.name) if nic.network not in named else None
                named.add(nic.network)
                hosts[nic.network].append(DhcpHost(nic.mac, str(nic.ip), name))
    return hosts


def _addresses(network: Network) -> dict[Family, IPInterface]:
    """The network's address per family, IPv4 first; none on a bridged network: it is
    the host's bridge, libvirt refuses an <ip> on it (the host's address lives on the
    bridge itself, set up by the host scripts)."""
    if network.mode is Mode.BRIDGED:
        return {}
    found = {f: network.address_in(f) for f in FAMILIES}
    return {f: a for f, a in found.items() if a is not None}


@dataclass(frozen=True, slots=True)
class IpView:
    """One <ip> element: a family's address on the bridge, and the DHCP server there.
    https://libvirt.org/formatnetwork.html#addressing"""

    # <ip family='ipv6'>: libvirt takes an address without `family` as IPv4 only
    # (network_conf.c virNetworkIPDefParseXML: "no family specified for non-IPv4
    # address"); IPv4's <ip> is written without it, as it always was.
    family: str | None
    address: str
    netmask: str | None  # IPv4: a netmask (as it always was); IPv6 refuses one ...
    prefix: int | None  # ... and takes a prefix
    dhcp_start: str | None
    dhcp_end: str | None
    dhcp_hosts: tuple[DhcpHost, ...]


def _ip_view(network: Network, family: Family, address: IPInterface,
             hosts: list[DhcpHost]) -> IpView:
    dhcp = network.dhcp_in(family)
    ipv4 = family is IPV4
    return IpView(
        family=None if ipv4 else family.facts.libvirt,
        address=str(address.ip),
        netmask=str(address.netmask) if ipv4 else None,
        prefix=None if ipv4 else address.network.prefixlen,
        dhcp_start=str(dhcp.start) if dhcp is not None else None,
        dhcp_end=str(dhcp.end) if dhcp is not None else None,
        # Reservations go into the DHCP server the network declares; a network without
        # `dhcp` gets none, and its VMs configure their addresses themselves. IPv6 has
        # none at all: libvirt 9 refuses `mac` on an IPv6 <host> ("Invalid to specify MAC
        # address ... in network ... IPv6 static host definition", network_conf.c
        # virNetworkDHCPHostDefParseXML), and a DUID is the guest's to choose, so a
        # VM's static IPv6 address comes from cloud-init, never from DHCPv6.
        dhcp_hosts=tuple(hosts) if dhcp is not None and ipv4 else (),
    )


@dataclass(frozen=True, slots=True)
class NetworkView:
    """What one <network> says; None leaves the element (or attribute) out."""

    name: str
    uuid: str
    forward_mode: str | None
    forward_dev: str | None
    # <forward mode='nat'><nat ipv6='yes'/></forward>: masquerade IPv6 too (libvirt routes
    # it otherwise). Since libvirt 6.5.0: https://libvirt.org/formatnetwork.html#connectivity
    nat_ipv6: bool
    bridge: str | None
    stp: str | None  # "on" / "off"; None on a bridge libvirt does not create
    mtu: int | None
    dns: str | None  # "yes" / "no"; None where no dnsmasq runs
    domain: str | None
    ips: tuple[IpView, ...]  # IPv4's first


def _network_view(lab: Lab, network: Network, hosts: list[DhcpHost]) -> NetworkView:
    bridged = network.mode is Mode.BRIDGED
    addresses = _addresses(network)
    return NetworkView(
        name=naming.libvirt_name(lab.name, network.name, network.exact_name),
        uuid=naming.object_uuid(lab.name, "network", network.name),
        forward_mode=FORWARD_MODES.get(network.mode),
        forward_dev=network.via if network.mode in FORWARD_DEV_MODES else None,
        nat_ipv6=network.mode is Mode.NAT and network.nat6,
        bridge=network.bridge,
        # libvirt allows stp, delay and mtu only on bridges it creates itself (not on
        # mode='bridge'). delay 0: a new port forwards at once, so DHCP answers in
        # seconds. https://libvirt.org/formatnetwork.html#bridge-element
        stp=None if bridged else ("on" if network.stp else "off"),
        mtu=None if bridged else network.mtu,
        # dnsmasq serves DHCP and DNS from the bridge's addresses; without one there is
        # nothing to configure.
        dns=("yes" if network.dns else "no") if addresses else None,
        domain=network.domain if addresses else None,
        ips=tuple(_ip_view(network, f, a, hosts) for f, a in addresses.items()),
    )


# --- what goes into a domain ---------------------------------------------------------


def disk_source(lab: Lab, disk: str) -> str:
    """The image's path as libvirt needs it: absolute (its schema's absFilePath,
    basictypes.rng). A relative `disk` is what a user means by it: the file beside the
    .topo file, so it is taken from that file's folder (the IR keeps it as written)."""
    if os.path.isabs(disk):
        return disk
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(lab.file)), disk))


def _disk_format(path: str) -> str:
    # The format must be stated, not probed: libvirt never lets QEMU guess it from a
    # guest-writable image. https://libvirt.org/formatdomain.html#hard-drives-floppy-disks-cdroms
    return "qcow2" if path.lower().endswith(".qcow2") else "raw"


def _memory_kib(size: int) -> int:
    # Sizes in KB/MB/GB are powers of 1000 and need not be whole KiB: round up.
    return -(-size // 1024)


@dataclass(frozen=True, slots=True)
class InterfaceView:
    nic: str  # the guest-side name, for the reader
    network: str | None  # the libvirt network's name (type='network')
    direct_dev: str | None  # the host NIC a macvtap sits on (type='direct')
    mac: str
    model: str


@dataclass(frozen=True, slots=True)
class DomainView:
    name: str
    uuid: str
    type: str
    memory_kib: int
    vcpus: int
    disk_path: Markup | None
    disk_format: str | None
    interfaces: tuple[InterfaceView, ...]
    # The guest's boot: the overlay of its image and its NoCloud seed, as volumes of a
    # storage pool (deploy creates them), and a kernel booted directly.
    pool: str | None
    overlay_volume: str | None
    seed_volume: str | None
    kernel: Markup | None
    initrd: Markup | None
    cmdline: Markup | None
    agent_channel: str = GUEST_AGENT_CHANNEL


def default_pool(lab: Lab) -> str:
    """The storage pool deploy creates for the lab's overlays and seeds (unless told to
    use an existing one): `<lab>-images`."""
    return f"{lab.name}-images"


def overlay_volume(lab: Lab, vm: Vm) -> str:
    """The VM's copy-on-write overlay of its image: `<lab>-<vm>.qcow2` in the pool."""
    return f"{naming.libvirt_name(lab.name, vm.name)}.qcow2"


def _interface_view(lab: Lab, vm: Vm, nic: Nic) -> InterfaceView:
    assert nic.mac is not None, "lowering gives every VM nic a MAC"
    model = nic.model or "virtio"
    network = lab.network(nic.network)
    if network is not None and network.managed:
        return InterfaceView(nic.name, naming.libvirt_name(lab.name, network.name, network.exact_name), None,
                             nic.mac, model)
    # A VM nic on the external LAN itself: a macvtap on the host's NIC on that LAN, in
    # bridge mode, so the VM is a peer on the LAN with no libvirt network in between.
    # (The host and its macvtap guests cannot reach each other through that NIC.)
    # https://libvirt.org/formatdomain.html#direct-attachment-to-physical-interface
    return InterfaceView(nic.name, None, _host_nic_on(lab, vm, nic.network), nic.mac, model)


def _host_nic_on(lab: Lab, vm: Vm, network: str) -> str:
    host = lab.node(vm.host)
    for host_nic in getattr(host, "nics", ()):
        if host_nic.network == network:
            return host_nic.name
    # A check should have reported this with a span; this is the backstop.
    raise ValueError(f"VM `{vm.name}` has a nic on the external network `{network}`, but its "
                     f"host `{vm.host}` has no nic there to attach it to")


def _domain_view(lab: Lab, vm: Vm, domain_type: str, pool: str | None,
                 seed: str | None = None) -> DomainView:
    def text(value: str | None) -> Markup | None:
        return _exact_attribute(value) if value is not None else None

    pool = pool or default_pool(lab)
    return DomainView(
        name=naming.libvirt_name(lab.name, vm.name, vm.exact_name),
        uuid=naming.object_uuid(lab.name, "domain", vm.name),
        type=domain_type,
        memory_kib=_memory_kib(vm.memory),
        vcpus=vm.vcpus,
        disk_path=_exact_attribute(disk_source(lab, vm.disk)) if vm.disk else None,
        disk_format=_disk_format(vm.disk) if vm.disk else None,
        interfaces=tuple(_interface_view(lab, vm, nic) for nic in vm.nics),
        pool=pool if vm.booted else None,
        overlay_volume=overlay_volume(lab, vm) if vm.image else None,
        seed_volume=(seed or cloudinit.seed_volume(lab, vm)) if vm.booted else None,
        kernel=text(vm.kernel),
        initrd=text(vm.initrd),
        cmdline=text(vm.cmdline),
    )


# --- rendering -----------------------------------------------------------------------


def _common(lab: Lab) -> dict[str, object]:
    # The source file is free text too (a path as given on the command line).
    return {"lab": lab.name, "source": lab.file, "source_attr": _exact_attribute(lab.file),
            "ns": METADATA_NAMESPACE, "prefix": METADATA_PREFIX}


def network_path(network: Network) -> str:
    return f"{NETWORKS_DIR}/{network.name}.xml"


def domain_path(vm: Vm) -> str:
    return f"{DOMAINS_DIR}/{vm.name}.xml"


def _render_network(lab: Lab, network: Network, hosts: list[DhcpHost]) -> str:
    return _template("network.xml.j2").render(
        **_common(lab), net=_network_view(lab, network, hosts), topo_name=network.name,
        file=network_path(network).removeprefix("libvirt/"))


def network_xml(lab: Lab, network: Network) -> str:
    """The XML of one managed network, ready for `virsh net-define`."""
    if not network.managed:
        raise ValueError(f"network {network.name!r} is external: topoc generates no XML for it")
    return _render_network(lab, network, _static_hosts(lab.vms).get(network.name, []))


def carried_network_xml(lab: Lab, network: Network, host: str) -> str:
    """A network on several hosts as one of its other hosts (not the first) has it: the
    bridge topoc makes there (joined to the others by VXLAN), in libvirt's bridge mode,
    so VMs attach by network name; no address, DHCP or firewall (those are on the first
    host). https://libvirt.org/formatnetwork.html#using-an-existing-host-bridge"""
    view = NetworkView(
        name=naming.libvirt_name(lab.name, network.name, network.exact_name),
        uuid=naming.object_uuid(lab.name, "network", f"{network.name}@{host}"),
        forward_mode="bridge", forward_dev=None, nat_ipv6=False, bridge=network.bridge, stp=None,
        mtu=None, dns=None, domain=None, ips=())
    return _template("network.xml.j2").render(
        **_common(lab), net=view, topo_name=network.name,
        file=network_path(network).removeprefix("libvirt/"))


def domain_xml(lab: Lab, vm: Vm, profile: Profile = DEFAULT_PROFILE, *, pool: str | None = None,
               seed: str | None = None) -> str:
    """The XML of one VM, ready for `virsh define`; its domain type comes from the
    platform profile (KVM by default, QEMU/TCG where the host has no usable KVM). A VM
    with an image or a kernel names its overlay and seed as volumes of `pool` (default:
    `default_pool(lab)`); `seed`, the seed's volume name when the caller has it already."""
    return _template("domain.xml.j2").render(
        **_common(lab), dom=_domain_view(lab, vm, profile.domain_type, pool, seed), topo_name=vm.name,
        file=domain_path(vm).removeprefix("libvirt/"))


def managed_networks(lab: Lab) -> list[Network]:
    return sorted((n for n in lab.networks if n.managed), key=lambda n: n.name)


def readme(lab: Lab, seeds: dict[str, str] | None = None) -> str:
    networks = [(network_path(n).removeprefix("libvirt/"), naming.libvirt_name(lab.name, n.name, n.exact_name))
                for n in managed_networks(lab)]
    domains = [(domain_path(v).removeprefix("libvirt/"), naming.libvirt_name(lab.name, v.name, v.exact_name))
               for v in sorted(lab.vms, key=lambda v: v.name)]
    exact = [f"network {n.exact_name}" for n in managed_networks(lab) if n.exact_name is not None]
    exact += [f"domain {v.exact_name}" for v in sorted(lab.vms, key=lambda v: v.name) if v.exact_name is not None]
    masquerades = [n.name for n in managed_networks(lab) if n.masquerade]
    return _template("README.txt.j2").render(
        lab=lab.name, source=lab.file, networks=networks, domains=domains, exact=exact,
        on_host="", connect_note="", virsh="virsh", masquerades=masquerades,
        volumes=_volumes(lab, lab.vms, seeds), pool=default_pool(lab))


def _volumes(lab: Lab, vms: Iterable[Vm], seeds: dict[str, str] | None) -> list[dict[str, str | None]]:
    """The pool volumes of the booted VMs, for the README's by-hand commands."""
    return [{"name": v.name, "overlay": overlay_volume(lab, v) if v.image else None,
             # A shell word: the README's commands are meant to be pasted.
             "image": shlex.quote(v.image) if v.image else None,
             "image_format": _disk_format(v.image) if v.image else None,
             "seed": (seeds or {}).get(v.name) or cloudinit.seed_volume(lab, v)}
            for v in sorted(vms, key=lambda v: v.name) if v.booted]


# When no `connect` names a host's daemon, its README's commands run on the host itself.
LOCAL_URI = "qemu:///system"


def host_readme(lab: Lab, host: Host, seeds: dict[str, str] | None = None) -> str:
    """One host's README.txt of a lab on several hosts: its own objects, and `virsh -c`
    with its connection, so no command lands on another host's daemon."""
    mine = [n for n in managed_networks(lab) if host.name in n.hosts]
    my_vms = [v for v in sorted(lab.vms, key=lambda v: v.name) if v.host == host.name]
    networks = [(network_path(n).removeprefix("libvirt/"), naming.libvirt_name(lab.name, n.name, n.exact_name))
                for n in mine]
    domains = [(domain_path(v).removeprefix("libvirt/"), naming.libvirt_name(lab.name, v.name, v.exact_name))
               for v in my_vms]
    exact = [f"network {n.exact_name}" for n in mine if n.exact_name is not None]
    exact += [f"domain {v.exact_name}" for v in my_vms if v.exact_name is not None]
    uri = host.connect or LOCAL_URI
    if host.connect:
        note = (f"Host {host.name}'s libvirtd is {host.connect} (its `connect` line): every command "
                "below names that connection, so they may run from any machine that reaches it.\n"
                f"The lab's other hosts have folders of their own beside this one.")
    else:
        note = (f"Host {host.name} has no `connect` line in the .topo file: the commands use "
                f"{LOCAL_URI}, so run them on {host.name} itself (or give it `connect URI` and "
                "build again).\nThe lab's other hosts have folders of their own beside this one.")
    spanning = sorted(n.name for n in managed_networks(lab) if host.name in n.hosts and n.spanning)
    if spanning:
        note += (f"\nNetworks on several hosts ({', '.join(spanning)}): their bridges are joined by "
                 "VXLAN, which libvirt cannot make; `topoc deploy` makes the links (and on hosts "
                 "other than the first, the bridge) over the connection's transport, and so does "
                 "host/<host>/up.sh on the shell path.")
    masquerades = [n.name for n in mine if n.masquerade and n.host == host.name]
    return _template("README.txt.j2").render(
        lab=lab.name, source=lab.file, networks=networks, domains=domains, exact=exact,
        on_host=f" on host {host.name}", connect_note=note, virsh=f"virsh -c {shlex.quote(uri)}",
        masquerades=masquerades, volumes=_volumes(lab, my_vms, seeds), pool=default_pool(lab))


def generate(lab: Lab, profile: Profile = DEFAULT_PROFILE) -> dict[str, str]:
    """Every libvirt artifact of the lab: relative path -> text, for the platform
    `profile` describes (topoc.model.platform). A lab on several hosts
    gets a folder per host (libvirt/<host>/networks, domains, README.txt): one virsh
    session must never define two hosts' objects on one daemon, where they collide."""
    hosts = _static_hosts(lab.vms)  # indexed once: a lab may have thousands of VMs
    artifacts = {network_path(n): _render_network(lab, n, hosts.get(n.name, []))
                 for n in managed_networks(lab)}
    # Each seed's name hashes its contents: made once per VM, for its domain and the README.
    seeds = {vm.name: cloudinit.seed_volume(lab, vm) for vm in lab.vms if vm.booted}
    for vm in sorted(lab.vms, key=lambda v: v.name):
        artifacts[domain_path(vm)] = domain_xml(lab, vm, profile, seed=seeds.get(vm.name))
    if len(lab.hosts) <= 1:
        artifacts[README_PATH] = readme(lab, seeds)
        return artifacts
    host_of = {network_path(n): n.host for n in managed_networks(lab)}
    host_of.update({domain_path(v): v.host for v in lab.vms})
    per_host = {f"libvirt/{host_of[path]}/{path.removeprefix('libvirt/')}": text
                for path, text in artifacts.items()}
    for net in managed_networks(lab):
        for other in net.extra_hosts:
            per_host[f"libvirt/{other}/{network_path(net).removeprefix('libvirt/')}"] = \
                carried_network_xml(lab, net, other)
    for host in sorted(lab.hosts, key=lambda h: h.name):
        per_host[f"libvirt/{host.name}/README.txt"] = host_readme(lab, host, seeds)
    return per_host
