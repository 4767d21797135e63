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
  DHCP on a nic with no static address.

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
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from topoc.model import naming
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
    nameservers: tuple[IPv4Address, ...]
    search: tuple[str, ...]


def _subnet_of(nic: Nic, network: Network | None) -> IPv4Network | None:
    if nic.address is not None:
        return nic.address.network
    return network.subnet if network is not None else None


def _dhcp_gives(route: Route, network: Network | None) -> bool:
    """The default route a DHCP nic gets from libvirt's dnsmasq anyway (option 3, the
    router: the network's address on nat, routed and open networks)."""
    return (route.is_default and network is not None and network.mode in DHCP_ROUTER_MODES
            and network.gateway == route.via)


def _nic_configs(lab: Lab, vm: Vm) -> list[_NicConfig]:
    networks = [lab.network(nic.network) for nic in vm.nics]
    # Each route goes on the nic whose subnet holds its next hop (the kernel takes a
    # gateway only on a connected subnet); the first such nic, in nic order. A route
    # with no such nic is left out: the gateway-unreachable check reports it.
    placed: dict[int, list[Route]] = {i: [] for i in range(len(vm.nics))}
    for route in effective_routes(lab, vm.name):
        for i, (nic, network) in enumerate(zip(vm.nics, networks, strict=True)):
            subnet = _subnet_of(nic, network)
            if subnet is not None and route.via in subnet:
                if not (nic.address is None and _dhcp_gives(route, network)):
                    placed[i].append(route)
                break
    configs = []
    for i, (nic, network) in enumerate(zip(vm.nics, networks, strict=True)):
        # A static nic learns no DNS server from DHCP: the network's dnsmasq (`dns on`)
        # is its nameserver, at the network's address, with the network's domain.
        dns = (nic.address is not None and network is not None and network.dns
               and network.gateway is not None and network.mode is not Mode.BRIDGED)
        configs.append(_NicConfig(
            nic, network, tuple(placed[i]),
            (network.gateway,) if dns and network is not None and network.gateway else (),
            (network.domain,) if dns and network is not None and network.domain else ()))
    return configs


def _route_lines(routes: tuple[Route, ...]) -> list[str]:
    lines = ["    routes:"]
    for route in routes:
        lines += [f"      - to: {route.destination}", f"        via: {route.via}"]
    return lines


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
        else:
            lines.append("    dhcp4: true")
        if net is not None and net.mtu is not None:
            lines.append(f"    mtu: {net.mtu}")
        if c.routes:
            lines += _route_lines(c.routes)
        if net is not None and net.mode is Mode.ISOLATED and not any(r.is_default for r in c.routes):
            # libvirt gives a network without <forward> an empty DHCP router option
            # (dnsmasq `dhcp-option=3`): nothing beyond the host, so no default route.
            lines.append("    # no default route: an isolated network has no router")
        if c.nameservers:
            lines += ["    nameservers:", "      addresses:"]
            lines += [f"        - {a}" for a in c.nameservers]
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
