"""The typed IR: the one contract between the front end and every later stage.

Frozen dataclasses with slots and tuples, `ipaddress` types for addresses (a network
and a nic hold at most one of each family: `address` is IPv4, `address6` IPv6, and
`address_in(family)` reads either; see topoc.model.family), sizes in bytes, and a
source span on every node that equality ignores (so a file and its
`topoc fmt`-ed twin lower to equal IRs). `topoc.front.lower` builds it from the syntax tree
and fills in everything derived (nic prefixes from their network, MACs, bridge names),
so checks and backends read facts, never defaults.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from types import MappingProxyType

from topoc.front.span import UNKNOWN, Span
from topoc.model.family import FAMILIES, IPV4, Family, IPAddress, IPInterface, IPNetwork, family_of


def _span() -> Span:
    return field(default=UNKNOWN, compare=False, repr=False)


class Mode(enum.StrEnum):
    """How a network reaches the world; see DESIGN.md's table of the four models.

    libvirt's network XML (https://libvirt.org/formatnetwork.html#connectivity):
    no <forward> = isolated (host-only when the bridge has an <ip>), mode='route',
    mode='nat', mode='bridge' (an existing host bridge), mode='open' (routed without
    any firewall rules). `external` is a network topoc does not manage: the physical
    LAN a host sits on.
    """

    ISOLATED = "isolated"
    ROUTED = "routed"
    NAT = "nat"
    BRIDGED = "bridged"
    OPEN = "open"
    EXTERNAL = "external"


class NodeKind(enum.StrEnum):
    HOST = "host"
    VM = "vm"
    EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class Route:
    destination: IPNetwork  # 0.0.0.0/0 (or ::/0) for `route default via ...`
    via: IPAddress  # of the destination's family
    span: Span = _span()

    @property
    def is_default(self) -> bool:
        return self.destination.prefixlen == 0

    @property
    def family(self) -> Family:
        return family_of(self.via)


@dataclass(frozen=True, slots=True)
class Nic:
    owner: str  # the node (host, VM or external) the nic belongs to
    index: int  # 0-based position among the owner's nics, in source order
    name: str  # the interface name: as written, or eth<index> when left out
    network: str
    address: IPv4Interface | None  # prefix taken from the network when not written
    mac: str | None  # lower-case aa:bb:...; every VM nic has one (derived if not written)
    mac_derived: bool = False
    model: str | None = None  # VM nic device model; None means virtio
    gateway: IPv4Address | None = None
    span: Span = _span()
    # The values' own tokens, so a check can point at the address, not the whole line
    # (UNKNOWN when the value was not written).
    address_span: Span = _span()
    mac_span: Span = _span()
    gateway_span: Span = _span()
    # Its IPv6 address and gateway, written as a second `address` / `gateway` option.
    address6: IPv6Interface | None = None
    gateway6: IPv6Address | None = None
    address6_span: Span = _span()
    gateway6_span: Span = _span()

    @property
    def ip(self) -> IPv4Address | None:
        return self.address.ip if self.address is not None else None

    @property
    def ip6(self) -> IPv6Address | None:
        return self.address6.ip if self.address6 is not None else None

    def address_in(self, family: Family) -> IPInterface | None:
        return self.address if family is IPV4 else self.address6

    def gateway_in(self, family: Family) -> IPAddress | None:
        return self.gateway if family is IPV4 else self.gateway6

    def address_span_in(self, family: Family) -> Span:
        return self.address_span if family is IPV4 else self.address6_span

    def gateway_span_in(self, family: Family) -> Span:
        return self.gateway_span if family is IPV4 else self.gateway6_span

    @property
    def addresses(self) -> tuple[IPInterface, ...]:
        """Its addresses, IPv4 first."""
        return tuple(a for a in (self.address, self.address6) if a is not None)


@dataclass(frozen=True, slots=True)
class DhcpRange:
    start: IPAddress  # both of one family
    end: IPAddress
    span: Span = _span()

    def __contains__(self, address: object) -> bool:
        return (isinstance(address, type(self.start))
                and self.start <= address <= self.end)  # type: ignore[operator]  # same family

    @property
    def family(self) -> Family:
        return family_of(self.start)


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    host: str | None  # the hypervisor it lives on; None for external networks
    mode: Mode
    via: str | None = None  # uplink device (nat/routed/open) or enslaved NIC (bridged)
    bridge: str | None = None  # as written, or derived (see topoc.model.naming); None if external
    bridge_derived: bool = False
    address: IPv4Interface | None = None  # the host's address on the bridge: the gateway
    declared_subnet: IPv4Network | None = None  # `subnet` as written
    dhcp: DhcpRange | None = None
    dns: bool = False
    domain: str | None = None
    mtu: int | None = None
    stp: bool = False
    masquerade: bool = False  # a routed or open network's own source NAT through `via`
    span: Span = _span()
    mode_span: Span = _span()
    address_span: Span = _span()
    bridge_span: Span = _span()
    subnet_span: Span = _span()
    # A network on several hosts (`on kvm1, kvm2`) is one L2 segment: `host` is the first,
    # which holds its gateway, DHCP, DNS and firewall; the others carry it at L2, their
    # bridges joined by VXLAN with this network identifier (written, or derived).
    extra_hosts: tuple[str, ...] = ()
    vni: int | None = None
    vni_span: Span = _span()
    # IPv6, written as a second `address` / `subnet` / `dhcp` statement of that family.
    address6: IPv6Interface | None = None
    declared_subnet6: IPv6Network | None = None
    dhcp6: DhcpRange | None = None
    # A nat network's IPv6: routed like mode routed (libvirt's default), or masqueraded
    # with `nat6 on` (<nat ipv6='yes'/>, https://libvirt.org/formatnetwork.html#addressing).
    nat6: bool = False
    address6_span: Span = _span()
    subnet6_span: Span = _span()

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host the network is on, its first (gateway) host first."""
        return (self.host, *self.extra_hosts) if self.host is not None else ()

    @property
    def spanning(self) -> bool:
        return bool(self.extra_hosts)
    exact_name: str | None = None  # `name NAME`: the libvirt name as is (no lab prefix)
    exact_name_span: Span = _span()

    @property
    def subnet(self) -> IPv4Network | None:
        """The segment's subnet: from `address` when there is one, else `subnet`."""
        if self.address is not None:
            return self.address.network
        return self.declared_subnet

    @property
    def gateway(self) -> IPv4Address | None:
        return self.address.ip if self.address is not None else None

    @property
    def subnet6(self) -> IPv6Network | None:
        if self.address6 is not None:
            return self.address6.network
        return self.declared_subnet6

    def address_in(self, family: Family) -> IPInterface | None:
        return self.address if family is IPV4 else self.address6

    def subnet_in(self, family: Family) -> IPNetwork | None:
        return self.subnet if family is IPV4 else self.subnet6

    def gateway_in(self, family: Family) -> IPAddress | None:
        address = self.address_in(family)
        return address.ip if address is not None else None

    def dhcp_in(self, family: Family) -> DhcpRange | None:
        return self.dhcp if family is IPV4 else self.dhcp6

    def address_span_in(self, family: Family) -> Span:
        return self.address_span if family is IPV4 else self.address6_span

    def subnet_span_in(self, family: Family) -> Span:
        return self.subnet_span if family is IPV4 else self.subnet6_span

    @property
    def families(self) -> tuple[Family, ...]:
        """The families it has a subnet in (IPv4 first)."""
        return tuple(f for f in FAMILIES if self.subnet_in(f) is not None)

    def masquerades(self, family: Family) -> bool:
        """Whether libvirt (a nat network) or the lab (`masquerade`) source-NATs this
        family's traffic leaving through `via`: a nat network's IPv6 only with `nat6`."""
        if self.mode is Mode.NAT:
            return family is IPV4 or self.nat6
        return self.masquerade

    @property
    def managed(self) -> bool:
        """Whether topoc creates it (every mode but `external`)."""
        return self.mode is not Mode.EXTERNAL

    @property
    def host_only(self) -> bool:
        # An address of either family puts the host on the bridge (libvirt gives the
        # bridge every <ip> of the network), so an IPv6-only one is host-only too.
        return self.mode is Mode.ISOLATED and (self.address is not None or self.address6 is not None)

    @property
    def model(self) -> str:
        """The model's name as DESIGN.md tables it: host-only is isolated with an address."""
        return "host-only" if self.host_only else self.mode.value


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    nics: tuple[Nic, ...] = ()
    routes: tuple[Route, ...] = ()
    span: Span = _span()
    connect: str | None = None  # `connect URI`: its libvirt URI (checked by topoc.model.uri)
    connect_span: Span = _span()

    kind = NodeKind.HOST


@dataclass(frozen=True, slots=True)
class Vm:
    name: str
    host: str
    memory: int = 512 * 1024 * 1024  # bytes
    vcpus: int = 1
    disk: str | None = None  # a disk the user manages, attached as it is
    nics: tuple[Nic, ...] = ()
    routes: tuple[Route, ...] = ()
    span: Span = _span()
    # The guest's boot. `image`: a base image (qcow2 or raw) that deploy never writes;
    # the VM boots a copy-on-write overlay of it. `kernel` (+ `initrd`, `cmdline`): a
    # direct kernel boot, of the overlay's root when there is an image. Hypervisor paths.
    image: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    # What cloud-init sets up: a login user (None: only the image's default user) and the
    # SSH public keys it accepts (the default user's when there is no `user`).
    user: str | None = None
    ssh_keys: tuple[str, ...] = ()
    image_span: Span = _span()
    kernel_span: Span = _span()
    initrd_span: Span = _span()
    exact_name: str | None = None  # `name NAME`: the libvirt name as is (no lab prefix)
    exact_name_span: Span = _span()

    kind = NodeKind.VM

    @property
    def booted(self) -> bool:
        """Whether topoc boots the guest (an image or a kernel): such a VM gets the
        cloud-init seed, and with an image a disk overlay, from deploy."""
        return self.image is not None or self.kernel is not None


@dataclass(frozen=True, slots=True)
class External:
    name: str
    nics: tuple[Nic, ...] = ()
    routes: tuple[Route, ...] = ()
    span: Span = _span()

    kind = NodeKind.EXTERNAL


Node = Host | Vm | External


@dataclass(frozen=True, slots=True)
class Forward:
    """`forward tcp 2222 to vm0:22`: DNAT on the VM's host (libvirt has no element for it)."""

    protocol: str  # "tcp" or "udp"
    port: int  # on the host
    vm: str
    vm_port: int
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Expect:
    """`expect A -> B` / `expect A !-> B`: A and B are node names or IP addresses."""

    src: str
    dst: str
    reachable: bool
    span: Span = _span()
    src_span: Span = _span()
    dst_span: Span = _span()


@dataclass(frozen=True, slots=True)
class Lab:
    name: str
    file: str  # the source file, as given on the command line
    networks: tuple[Network, ...] = ()
    hosts: tuple[Host, ...] = ()
    vms: tuple[Vm, ...] = ()
    externals: tuple[External, ...] = ()
    forwards: tuple[Forward, ...] = ()
    expects: tuple[Expect, ...] = ()
    span: Span = _span()
    # Name indexes, built once; not part of equality.
    _networks: Mapping[str, Network] = field(init=False, compare=False, repr=False)
    _nodes: Mapping[str, Node] = field(init=False, compare=False, repr=False)
    _families: tuple[Family, ...] | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_networks", MappingProxyType({n.name: n for n in self.networks}))
        nodes: dict[str, Node] = {}
        for group in (self.hosts, self.vms, self.externals):
            for node in group:
                nodes.setdefault(node.name, node)
        object.__setattr__(self, "_nodes", MappingProxyType(nodes))

    def network(self, name: str) -> Network | None:
        return self._networks.get(name)

    def node(self, name: str) -> Node | None:
        return self._nodes.get(name)

    @property
    def nodes(self) -> tuple[Node, ...]:
        """Hosts, VMs and externals, in that order (each group in source order)."""
        return (*self.hosts, *self.vms, *self.externals)

    def networks_on(self, host: str) -> tuple[Network, ...]:
        """The networks whose gateway host this is (a spanning network: its first host)."""
        return tuple(n for n in self.networks if n.host == host)

    def networks_carried_by(self, host: str) -> tuple[Network, ...]:
        """The networks on several hosts that this host carries at L2 only (not first)."""
        return tuple(n for n in self.networks if host in n.extra_hosts)

    def vms_on(self, host: str) -> tuple[Vm, ...]:
        return tuple(v for v in self.vms if v.host == host)

    @property
    def families(self) -> tuple[Family, ...]:
        """The families any network or nic of the lab has an address in (IPv4 first);
        computed once (every backend and stage asks)."""
        families = self._families
        if families is None:
            found = {f for n in self.networks for f in n.families}
            found |= {family_of(a) for node in self.nodes for nic in node.nics for a in nic.addresses}
            families = tuple(f for f in FAMILIES if f in found)
            object.__setattr__(self, "_families", families)
        return families
