"""The cloud-init backend: the IR -> a NoCloud seed per VM (meta-data, user-data, network-config).

Pure functions, no I/O. For each VM, `cloud-init/<vm>/` holds the three files of a
NoCloud seed, which deploy packs into an ISO 9660 image labelled `cidata` and attaches
as a CD-ROM (https://docs.cloud-init.io/en/latest/reference/datasources/nocloud.html):

- `meta-data`: the instance-id (it changes when the seed's contents change, so
  cloud-init applies a changed seed as a new instance) and the hostname;
- `user-data`: `#cloud-config` with the `user` and `ssh-key`s of the file, and the
  guest agent enabled and started (topoc looks into the guest through it);
- `network-config`: version 2, one entry per nic matched by its MAC, with `set-name` so
  the name the .topo gives the nic does not depend on PCI slots; static addresses with
  their prefixes, the routes the model gives the VM (topoc.model.topology.effective_routes:
  the nic `gateway`, `route`s, and on a nat/routed/open network the network's address as
  libvirt's DHCP hands it out), nameservers (the network's address when `dns on`), and
  DHCP on a nic with no static address. IPv6 beside IPv4, in the same keys: the nic's
  IPv6 address after its IPv4 one in `addresses`, its IPv6 routes after the IPv4 ones
  (the default one as `gateway6` on a nic with a static IPv6 address: see
  _split_gateway6), `accept-ra: false` on a nic with a static IPv6 address,
  and `dhcp6: true` on a nic without one on a network with a DHCPv6 range. A lab
  without IPv6 gets no IPv6 key at all.

network-config is written in the subset of version 2 that cloud-init renders itself on
systems without netplan (Debian's cloud images render it for systemd-networkd), so it
means the same with and without netplan:
https://docs.cloud-init.io/en/latest/reference/network-config-format-v2.html (routes
are `to: 0.0.0.0/0`, not netplan's `default`; MACs quoted, in lower case). netplan's
reference for the same keys: https://netplan.readthedocs.io/en/stable/netplan-yaml/.
The tests feed every example's files to netplan's own parser (`netplan generate`).

The YAML is written by hand, not by a YAML library: every value is an address, a MAC,
a name that passed the grammar's rules, or a string quoted as a JSON string (a YAML
double-quoted scalar is a superset), so nothing can break the structure.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from ipaddress import IPv4Interface

from topoc.model import naming
from topoc.model.analysis import Analysis, analysis_of
from topoc.model.family import FAMILIES, IPV4, IPV6, Family, IPAddress, IPNetwork
from topoc.model.ir import Lab, Mode, Network, Nic, Route, Vm
from topoc.model.topology import DHCP_ROUTER_MODES, effective_routes

SEED_DIR = "cloud-init"
SEED_FILES = ("meta-data", "user-data", "network-config")

# The guest agent topoc talks to (verify --live), as Debian and Ubuntu package it.
GUEST_AGENT_UNIT = "qemu-guest-agent.service"


def seed_dir(vm: Vm) -> str:
    return f"{SEED_DIR}/{vm.name}"


def hostname(vm: Vm) -> str:
    """The guest's hostname: the VM's name, `_` made `-` (a hostname is letters, digits
    and `-`, RFC 1123 section 2.1); names are at most 63 characters there too."""
    return vm.name.replace("_", "-")[:63].strip("-") or "vm"


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON's escaping is valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


# --- network-config -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _NicConfig:
    nic: Nic
    network: Network | None
    routes: tuple[Route, ...]
    nameservers: tuple[IPAddress, ...]
    search: tuple[str, ...]


def _subnet_of(nic: Nic, network: Network | None, family: Family) -> IPNetwork | None:
    address = nic.address_in(family)
    if address is not None:
        return address.network
    return network.subnet_in(family) if network is not None else None


def _dhcp_gives(route: Route, network: Network | None) -> bool:
    """The default route a dynamic nic gets from libvirt's dnsmasq anyway: IPv4's DHCP
    option 3 (the router: the network's address on nat, routed and open networks), or
    IPv6's router advertisement on those networks (topoc.model.topology)."""
    return (route.is_default and network is not None and network.mode in DHCP_ROUTER_MODES
            and network.gateway_in(route.family) == route.via)


def _has_ipv6(vm: Vm) -> bool:
    """Whether the VM may have an IPv6 route (a nic's IPv6 address or gateway, an IPv6
    `route`): only then is the lab's IPv6 topology asked, so an IPv4-only lab never
    builds it."""
    return (any(nic.address6 is not None or nic.gateway6 is not None for nic in vm.nics)
            or any(route.family is IPV6 for route in vm.routes))


def _nameserver(nic: Nic, network: Network | None, family: Family) -> IPAddress | None:
    """A static nic learns no DNS server from DHCP: the network's dnsmasq (`dns on`) is
    its nameserver, at the network's address in the nic's family. libvirt runs dnsmasq
    with `bind-dynamic` and `interface=<bridge>` (src/network/bridge_driver.c
    networkDnsmasqConfContents), so it answers on every address of the bridge, the
    IPv6 one too."""
    if (nic.address_in(family) is None or network is None or not network.dns
            or network.mode is Mode.BRIDGED):
        return None
    return network.gateway_in(family)


# The analysis of the lab whose seeds were made last: every VM's seed asks the same
# lab's wiring (its routes), and a fresh Analysis per VM made a lab's seeds quadratic in
# its VMs (9 s for 1,000 VMs). Held by identity, one lab at a time.
_LAST_ANALYSIS: list[tuple[Lab, Analysis]] = []


def _analysis(lab: Lab) -> Analysis:
    last = _LAST_ANALYSIS[0] if _LAST_ANALYSIS else None
    if last is not None and last[0] is lab:
        return last[1]
    an = analysis_of(lab)
    _LAST_ANALYSIS[:] = [(lab, an)]
    return an


def _nic_configs(lab: Lab, vm: Vm) -> list[_NicConfig]:
    networks = [lab.network(nic.network) for nic in vm.nics]
    an = _analysis(lab)  # the lab's, for both families
    # Each route goes on the nic whose subnet holds its next hop (the kernel takes a
    # gateway only on a connected subnet); the first such nic, in nic order. A route
    # with no such nic is left out: the gateway-unreachable check reports it. IPv4's
    # routes first, then IPv6's.
    placed: dict[int, list[Route]] = {i: [] for i in range(len(vm.nics))}
    for family in FAMILIES if _has_ipv6(vm) else (IPV4,):
        for route in effective_routes(an, vm.name, family):
            for i, (nic, network) in enumerate(zip(vm.nics, networks, strict=True)):
                subnet = _subnet_of(nic, network, family)
                if subnet is not None and route.via in subnet:
                    if not (nic.address_in(family) is None and _dhcp_gives(route, network)):
                        placed[i].append(route)
                    break
    configs = []
    for i, (nic, network) in enumerate(zip(vm.nics, networks, strict=True)):
        servers = tuple(a for a in (_nameserver(nic, network, f) for f in FAMILIES) if a is not None)
        configs.append(_NicConfig(
            nic, network, tuple(placed[i]), servers,
            (network.domain,) if servers and network is not None and network.domain else ()))
    return configs


def _yaml_address(value: object) -> str:
    """An address (or network) as a YAML scalar: IPv4 bare, as it always was; IPv6
    quoted, as netplan's examples write it (`"2001:1::1/64"`): `::/0` would not even
    be a plain scalar."""
    text = str(value)
    return _q(text) if ":" in text else text


def _route_lines(routes: list[Route]) -> list[str]:
    lines = ["    routes:"]
    for route in routes:
        # The default route is `to: 0.0.0.0/0`, never netplan's `default`: cloud-init's
        # own v2 parser (cloudinit/net/network_state.py, _normalize_route) refuses a `to`
        # that is no address ("Address default is not a valid ip address").
        lines += [f"      - to: {_yaml_address(route.destination)}", f"        via: {_yaml_address(route.via)}"]
    return lines


def _split_gateway6(nic: Nic, routes: tuple[Route, ...]) -> tuple[Route | None, list[Route]]:
    """The IPv6 default route to write as `gateway6`, and the routes for `routes:`.

    Not `to: "::/0"`: cloud-init's own v2 parser turns it into a route to ::/64
    (network_state.py normalizes a route twice and drops the prefix 0 the second time;
    https://github.com/canonical/cloud-init/pull/1973, LP: #2003562), so on a guest
    where cloud-init renders the network itself (Debian 12's cloud-init 22.4 for
    systemd-networkd or ifupdown) the guest would have no IPv6 default route. `gateway6`
    is the IPv6 gateway of the nic's static IPv6 address there, and netplan still reads
    it as the default route (deprecated in favour of `routes`, with a warning:
    https://netplan.readthedocs.io/en/stable/netplan-yaml/#default-routes). A nic
    without a static IPv6 address has no such address to hang it on: its default route
    stays in `routes`."""
    if nic.address6 is None:
        return None, list(routes)
    default6 = next((r for r in routes if r.is_default and r.family is IPV6), None)
    return default6, [r for r in routes if r is not default6]


def network_config(lab: Lab, vm: Vm) -> str:
    """cloud-init network-config version 2 for the VM (the NoCloud file: no top-level
    `network:` key, the file name says what it is)."""
    lines = [
        f"# network-config of VM `{vm.name}` of lab {lab.name}: cloud-init network config",
        "# version 2, generated by topoc. Each nic is matched by its MAC and given the",
        "# name the .topo file says. https://docs.cloud-init.io/en/latest/reference/network-config-format-v2.html",
        "version: 2",
    ]
    configs = _nic_configs(lab, vm)
    if not configs:
        lines.append("ethernets: {}")
        return "\n".join(lines) + "\n"
    lines.append("ethernets:")
    for c in configs:
        nic = c.nic
        assert nic.mac is not None, "lowering gives every VM nic a MAC"
        net = c.network
        what = f"on {net.name} ({net.model})" if net is not None else f"on {nic.network}"
        lines += [
            f"  {nic.name}:  # {what}",
            "    match:",
            f"      macaddress: {_q(nic.mac)}",
            f"    set-name: {nic.name}",
        ]
        if nic.address is not None:
            lines += ["    dhcp4: false", "    addresses:", f"      - {IPv4Interface(nic.address)}"]
            if nic.address6 is not None:
                lines.append(f"      - {_yaml_address(nic.address6)}")
        else:
            # An IPv6-only network has no IPv4 to ask DHCP for.
            ipv6_only = net is not None and net.subnet is None and net.subnet6 is not None
            lines.append("    dhcp4: false" if ipv6_only else "    dhcp4: true")
            if nic.address6 is not None:
                lines += ["    addresses:", f"      - {_yaml_address(nic.address6)}"]
        if nic.address6 is not None:
            # Exactly the .topo's IPv6 address: a libvirt network without DHCPv6 sends
            # router advertisements with the A (autonomous) flag (dnsmasq `ra-only`,
            # src/radv.c: do_slaac), so a guest accepting them would add a SLAAC address
            # and a default route via the bridge's link-local address beside it. The
            # default route the model gives the VM is written as `gateway6` instead.
            # https://netplan.readthedocs.io/en/stable/netplan-yaml/ (accept-ra). netplan
            # honours it; cloud-init 22.4's own systemd-networkd renderer writes
            # IPv6AcceptRA only for a DHCPv6 nic (cloudinit/net/networkd.py), so there a
            # static nic still takes a SLAAC address beside its own.
            lines += ["    dhcp6: false", "    accept-ra: false"]
        elif net is not None and net.dhcp6 is not None and net.mode is not Mode.BRIDGED:
            # libvirt's dnsmasq serves this range by DHCPv6 (its RAs then carry the M and O
            # flags, not A: the guest must ask); the RA still gives the default route.
            lines.append("    dhcp6: true")
        if net is not None and net.mtu is not None:
            lines.append(f"    mtu: {net.mtu}")
        gateway6, routes = _split_gateway6(nic, c.routes)
        if gateway6 is not None:
            lines.append(f"    gateway6: {_yaml_address(gateway6.via)}")
        if routes:
            lines += _route_lines(routes)
        if net is not None and net.mode is Mode.ISOLATED and not any(r.is_default for r in c.routes):
            # libvirt gives a network without <forward> an empty DHCP router option
            # (dnsmasq `dhcp-option=3`): nothing beyond the host, so no default route.
            lines.append("    # no default route: an isolated network has no router")
        if c.nameservers:
            lines += ["    nameservers:", "      addresses:"]
            lines += [f"        - {_yaml_address(a)}" for a in c.nameservers]
            if c.search:
                lines += ["      search:"] + [f"        - {d}" for d in c.search]
    return "\n".join(lines) + "\n"


# --- user-data and meta-data ----------------------------------------------------------


def user_data(lab: Lab, vm: Vm) -> str:
    """#cloud-config: the login user and keys, and the guest agent running.
    Keys: https://docs.cloud-init.io/en/latest/reference/modules.html (the modules
    "Users and Groups", "SSH" for ssh_authorized_keys, "Runcmd", which runs once per
    instance)."""
    lines = [
        "#cloud-config",
        f"# user-data of VM `{vm.name}` of lab {lab.name}, generated by topoc.",
    ]
    if vm.user is not None:
        # `default` first keeps the image's own default user as well.
        lines += [
            "users:",
            "  - default",
            f"  - name: {vm.user}",
            "    shell: /bin/bash",
            "    lock_passwd: true",
            "    # a lab machine: its user administers it, like the image's default user",
            "    sudo: \"ALL=(ALL) NOPASSWD:ALL\"",
        ]
        if vm.ssh_keys:
            lines.append("    ssh_authorized_keys:")
            lines += [f"      - {_q(key)}" for key in vm.ssh_keys]
    elif vm.ssh_keys:
        # Without `user`, the keys are the image's default user's.
        lines.append("ssh_authorized_keys:")
        lines += [f"  - {_q(key)}" for key in vm.ssh_keys]
    lines += [
        "# topoc looks into the guest through the QEMU guest agent (the virtio channel",
        "# org.qemu.guest_agent.0 of the domain): start it where the image has it.",
        "runcmd:",
        f"  - [systemctl, enable, --now, {GUEST_AGENT_UNIT}]",
    ]
    return "\n".join(lines) + "\n"


def _digest(*texts: str) -> str:
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()


def instance_id(lab: Lab, vm: Vm, user: str, network: str) -> str:
    """`<lab>-<vm>-<hash of user-data and network-config>`: cloud-init applies a seed
    once per instance-id, so a changed seed must come with a new one."""
    return f"{lab.name}-{vm.name}-{_digest(user, network)[:12]}"


def meta_data(lab: Lab, vm: Vm, user: str, network: str) -> str:
    return (f"# meta-data of VM `{vm.name}` of lab {lab.name}, generated by topoc.\n"
            f"instance-id: {instance_id(lab, vm, user, network)}\n"
            f"local-hostname: {hostname(vm)}\n")


def seed(lab: Lab, vm: Vm) -> dict[str, str]:
    """The three files of the VM's NoCloud seed: file name -> text."""
    user, network = user_data(lab, vm), network_config(lab, vm)
    return {"meta-data": meta_data(lab, vm, user, network), "user-data": user,
            "network-config": network}


def seed_volume(lab: Lab, vm: Vm) -> str:
    """The name of the seed ISO's volume in the lab's storage pool. It names the seed's
    contents, so a changed seed is a new volume (and a changed domain), never a volume
    rewritten under a guest that has it open."""
    files = seed(lab, vm)
    return f"{naming.libvirt_name(lab.name, vm.name)}-seed-{_digest(*files.values())[:10]}.iso"


def generate(lab: Lab) -> dict[str, str]:
    """`cloud-init/<vm>/{meta-data,user-data,network-config}` for every VM."""
    artifacts: dict[str, str] = {}
    for vm in sorted(lab.vms, key=lambda v: v.name):
        for name, text in seed(lab, vm).items():
            artifacts[f"{seed_dir(vm)}/{name}"] = text
    return artifacts
