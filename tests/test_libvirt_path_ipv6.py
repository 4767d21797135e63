"""The libvirt path of dual-stack labs: topoc's own network XML started on a real
libvirtd (tests/libvirtd_fixture.py, in namespaces of its own, /dev/kvm hidden), with
network namespaces as the VMs and the LAN's machines, and every pair pinged in both
families: what libvirt really does must be what `topoc.model.reach` predicts. The labs
are one per libvirt model (isolated, host-only, routed with and without a route back, nat
without and with nat6, open, several on one host) and the shipped dual-stack examples
whose networks are all libvirt's own.

libvirt, not topoc, sets the host up here: the daemon's network namespace is the host;
starting each network from topoc's XML makes libvirt create the bridge, install its
iptables and ip6tables rules, set its sysctls (IPv6 forwarding, the bridge's
disable_ipv6/accept_ra) and run dnsmasq with its router advertisement configuration.
A VM is a namespace holding one end of a veth whose other end is enslaved to libvirt's
bridge, as a guest's tap would be, with the VM's static addresses from the file.

The IPv6 default route of a VM is left to libvirt's router advertisements (accept_ra=1,
forwarding off, as in a guest): dnsmasq advertises a router lifetime of 0 on an isolated
network (libvirt writes `ra-param=*,0,0` for it, bridge_driver.c
networkDnsmasqConfContents), so no default route, and on nat, routed and open networks
the bridge's link-local address as the default router (dnsmasq(8) --enable-ra); and
libvirt runs dnsmasq only for a network with a DHCP range in either family or DNS on
(networkStartDhcpDaemon), so a network with neither advertises nothing. That the RA
gave, or did not give, the route the model expects (topology.effective_routes) is an
assertion of its own, before the pings. The IPv4 default route is the one the model predicts (DHCP's router
option), configured statically, as no DHCP client runs here.

Before the pings, what explains them is compared too: libvirt's installed iptables and
ip6tables rules with model.firewall's, and the host's forwarding sysctls with
topology.forwards.

The LAN (the host's `via` device) is a namespace with a bridge; the host's nic is a veth
onto it, and each external machine a namespace of its own on it, with its addresses,
gateways and routes from the file.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

import pytest

libvirt = pytest.importorskip("libvirt")

from conftest import EXAMPLES, require_tool  # noqa: E402
from libvirtd_fixture import Libvirtd, _require_tools, running_libvirtd  # noqa: E402

from topoc.backends import libvirt as libvirt_backend  # noqa: E402
from topoc.codes import Severity  # noqa: E402
from topoc.compiler import Compilation, compile_file, compile_source  # noqa: E402
from topoc.model import firewall, naming, reach, topology  # noqa: E402
from topoc.model.analysis import Analysis, analysis_of  # noqa: E402
from topoc.model.family import FAMILIES, IPV4, IPV6, Family, IPAddress  # noqa: E402
from topoc.model.firewall import Chain  # noqa: E402
from topoc.model.ir import Host, Lab, Mode, Vm  # noqa: E402

RUN = uuid.uuid4().hex[:4]  # namespace names unique to this run

# A stock Debian KVM host has no br_netfilter loaded; this kernel has it built in, and
# every new network namespace starts with these at 1, which would send bridged frames
# through ip(6)tables (as topoc.verify.netns does, they are set to 0).
BRIDGE_NF_SYSCTLS = ("net.bridge.bridge-nf-call-arptables", "net.bridge.bridge-nf-call-iptables",
                     "net.bridge.bridge-nf-call-ip6tables")
RA_TIMEOUT_S = 20.0
PING_TIMEOUT_MS = 400
PING_RETRIES = 1

# The LAN every lab's host sits on, with a router that forwards (its routes back to the
# VMs' network vary per lab), a PC that goes through it and a machine with no gateway.
LAN = """\
lab {lab}

network lan {{
    mode external
    subnet 192.168.101.0/24
    subnet 2001:db8:101::/64
}}

host kvm1 {{
    nic eth0 on lan address 192.168.101.11 address 2001:db8:101::11 gateway 192.168.101.1 gateway 2001:db8:101::1
}}

external router {{
    nic eth0 on lan address 192.168.101.1 address 2001:db8:101::1
{router_routes}}}

external pc {{
    nic eth0 on lan address 192.168.101.20 address 2001:db8:101::20 gateway 192.168.101.1 gateway 2001:db8:101::1
}}

external stray {{
    nic eth0 on lan address 192.168.101.30 address 2001:db8:101::30
}}

vm a on kvm1 {{
    nic eth0 on net address 10.10.101.10 address fd00:101::10
}}

vm b on kvm1 {{
    nic eth0 on net address 10.10.101.11 address fd00:101::11
}}

network net on kvm1 {{
    bridge lp{run}
{network}}}
{extra}"""

RETURN_ROUTES = ("    route 10.10.101.0/24 via 192.168.101.11\n"
                 "    route fd00:101::/64 via 2001:db8:101::11\n")

ADDRESSES = "    address 10.10.101.1/24\n    address fd00:101::1/64\n"
DNS = "    dns on\n"
DHCP4 = "    dhcp 10.10.101.100 - 10.10.101.199\n"
DHCP = DHCP4 + "    dhcp fd00:101::100 - fd00:101::1ff\n"

# Each libvirt model, dual-stack: (the network's statements, the router's routes back).
# Every network here makes libvirt run dnsmasq, the sender of the router advertisements:
# some with DHCP in both families (dnsmasq then advertises with enable-ra, the managed
# flags), the others with DNS or IPv4's DHCP only (dnsmasq's ra-only: SLAAC). Both give
# the same RA default route.
MODELS = {
    "isolated": ("    mode isolated\n    subnet 10.10.101.0/24\n    subnet fd00:101::/64\n", RETURN_ROUTES),
    "hostonly": ("    mode isolated\n" + ADDRESSES + DHCP, RETURN_ROUTES),
    "routed": ("    mode routed via eth0\n" + ADDRESSES + DNS, RETURN_ROUTES),
    "routed-noreturn": ("    mode routed via eth0\n" + ADDRESSES + DHCP, ""),
    "nat": ("    mode nat via eth0\n" + ADDRESSES + DHCP, RETURN_ROUTES),
    "nat6": ("    mode nat via eth0\n    nat6 on\n" + ADDRESSES + DNS, RETURN_ROUTES),
    # DHCP for IPv4 only: dnsmasq runs for it, and advertises the IPv6 prefix (ra-only).
    "open": ("    mode open\n" + ADDRESSES + DHCP4, RETURN_ROUTES),
    # Several networks on one host: between them libvirt's rules of both decide (a nat
    # network with no `via` forwards IPv6 to and from any interface, the routed one only
    # through eth0), and the isolated one joins two VMs only.
    "mixed": ("    mode routed via eth0\n" + ADDRESSES + DNS,
              RETURN_ROUTES + "    route fd00:102::/64 via 2001:db8:101::11\n"),
}

MIXED = """
network front on kvm1 {{
    mode nat
    bridge lf{run}
    address 10.10.102.1/24
    address fd00:102::1/64
    dhcp 10.10.102.100 - 10.10.102.199
    dhcp fd00:102::100 - fd00:102::1ff
}}

network back on kvm1 {{
    mode isolated
    bridge lk{run}
    subnet 10.10.103.0/24
    subnet fd00:103::/64
}}

vm p on kvm1 {{
    nic eth0 on front address 10.10.102.10 address fd00:102::10
    nic eth1 on back address 10.10.103.10 address fd00:103::10
}}

vm q on kvm1 {{
    nic eth0 on back address 10.10.103.11 address fd00:103::11
}}
"""

# Networks with addresses only (no `dhcp`, no `dns on`), as the issue's own example
# writes its nat network: libvirt 9.0 starts no dnsmasq for them (bridge_driver.c
# networkStartDhcpDaemon: "no DHCP services needed, and user disabled DNS service"; no
# <ip> has a DHCP range or host, and topoc writes <dns enable='no'/>), so nothing sends
# a router advertisement on the bridge.
QUIET = {
    "nat-quiet": ("    mode nat via eth0\n" + ADDRESSES, RETURN_ROUTES),
}


def lab_text(model: str) -> str:
    network, routes = {**MODELS, **QUIET}[model]
    extra = MIXED.format(run=RUN) if model == "mixed" else ""
    return LAN.format(lab=f"lp{model.replace('-', '')[:8]}", run=RUN, network=network,
                      router_routes=routes, extra=extra)


def network_xml(lab: Lab, name: str) -> str:
    """topoc's XML for one managed network (the libvirt backend, as `topoc build`)."""
    network = lab.network(name)
    assert network is not None
    return libvirt_backend.network_xml(lab, network)


# --- commands in namespaces -----------------------------------------------------------


def _run(argv: list[str], *, check: bool = True, timeout: float = 30) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"`{' '.join(argv)}` failed ({result.returncode}): "
                             f"{(result.stderr or result.stdout).strip()}")
    return result.stdout


@dataclass
class Plant:
    """A lab on the daemon: the daemon's namespace is the host, every other node (and the
    LAN) a named network namespace of this machine's."""

    daemon: Libvirtd
    an: Analysis
    prefix: str
    bridges: dict[str, str] = field(default_factory=dict)  # managed network -> libvirt's bridge

    @property
    def lab(self) -> Lab:
        return self.an.lab

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def cmd(self, node: str, *argv: str) -> list[str]:
        """argv run in `node`'s network namespace (the daemon's for the host)."""
        if isinstance(self.lab.node(node), Host):
            return ["nsenter", "-t", str(self.daemon.init_pid), "-n", *argv]
        return ["ip", "netns", "exec", self.ns(node), *argv]

    def run(self, node: str, *argv: str, check: bool = True) -> str:
        return _run(self.cmd(node, *argv), check=check)

    def add_namespace(self, name: str, stack: contextlib.ExitStack) -> str:
        """A network namespace of this machine's, deleted when `stack` unwinds (with the
        veths in it, and so their peers)."""
        namespace = self.ns(name)
        _run(["ip", "netns", "add", namespace])
        stack.callback(_run, ["ip", "netns", "del", namespace], check=False)
        _run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        return namespace


def _sysctl(plant: Plant, node: str, *settings: str) -> None:
    plant.run(node, "sysctl", "-qw", *settings)


def _bridge_nf_off(argv_prefix: list[str]) -> None:
    _run([*argv_prefix, "sysctl", "-qw", *(f"{key}=0" for key in BRIDGE_NF_SYSCTLS)], check=False)


def _address(plant: Plant, node: str, device: str, address: str, family: Family) -> None:
    # nodad: a static address usable at once (duplicate detection only costs time here:
    # every address of the lab is distinct, which the test checks).
    extra = ["nodad"] if family is IPV6 else []
    plant.run(node, "ip", family.facts.ip_flag, "addr", "add", address, "dev", device, *extra)


def _routes(plant: Plant, node: str, family: Family, *, default: bool = True) -> None:
    """The node's routes of `family` as the model has them (topology.effective_routes);
    the default one only when `default`."""
    for route in topology.effective_routes(plant.an, node, family):
        if route.is_default and not default:
            continue
        destination = "default" if route.is_default else str(route.destination)
        plant.run(node, "ip", family.facts.ip_flag, "route", "replace", destination, "via", str(route.via))


def _plant_lan(plant: Plant, stack: contextlib.ExitStack) -> dict[str, str]:
    """One namespace with a bridge per external network: network -> namespace."""
    segments = {}
    for network in plant.lab.networks:
        if network.mode is not Mode.EXTERNAL:
            continue
        namespace = plant.add_namespace(f"s-{network.name}", stack)
        _bridge_nf_off(["ip", "netns", "exec", namespace])
        _run(["ip", "-n", namespace, "link", "add", "lan", "type", "bridge"])
        _run(["ip", "-n", namespace, "link", "set", "lan", "up"])
        segments[network.name] = namespace
    return segments


def _plant_host(plant: Plant, host: Host, segments: dict[str, str]) -> None:
    """The daemon's namespace as the host: its nics on the LAN with the file's addresses,
    gateways and routes. Forwarding is libvirt's to turn on (it starts off here)."""
    pid = str(plant.daemon.init_pid)
    _bridge_nf_off(["nsenter", "-t", pid, "-n"])
    for index, nic in enumerate(host.nics):
        port = f"h{index}"
        _run(["ip", "-n", segments[nic.network], "link", "add", port, "type", "veth",
              "peer", "name", nic.name, "netns", pid])
        _run(["ip", "-n", segments[nic.network], "link", "set", port, "master", "lan", "up"])
        for family in FAMILIES:
            address = nic.address_in(family)
            if address is not None:
                _address(plant, host.name, nic.name, str(address), family)
        plant.run(host.name, "ip", "link", "set", nic.name, "up")
    for family in FAMILIES:
        _routes(plant, host.name, family)


def _plant_externals(plant: Plant, segments: dict[str, str], stack: contextlib.ExitStack) -> None:
    for external in plant.lab.externals:
        namespace = plant.add_namespace(external.name, stack)
        for index, nic in enumerate(external.nics):
            port = f"{external.name[:8]}{index}"
            _run(["ip", "-n", segments[nic.network], "link", "add", port, "type", "veth",
                  "peer", "name", nic.name, "netns", namespace])
            _run(["ip", "-n", segments[nic.network], "link", "set", port, "master", "lan", "up"])
            for family in FAMILIES:
                address = nic.address_in(family)
                if address is not None:
                    _address(plant, external.name, nic.name, str(address), family)
            plant.run(external.name, "ip", "link", "set", nic.name, "up")
        for family in FAMILIES:
            _routes(plant, external.name, family)
            if topology.forwards(plant.an, external.name, family):
                _sysctl(plant, external.name, family.facts.forwarding_sysctl + "=1")


def _plant_vm(plant: Plant, index: int, vm: Vm, stack: contextlib.ExitStack) -> None:
    """A guest: each nic a veth whose other end libvirt's bridge takes as the tap. Like a
    guest's kernel: forwarding off, router advertisements accepted."""
    namespace = plant.add_namespace(vm.name, stack)
    pid = str(plant.daemon.init_pid)
    _sysctl(plant, vm.name, "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
    for n, nic in enumerate(vm.nics):
        bridge = plant.bridges.get(nic.network)
        assert bridge is not None, f"{vm.name}.{nic.name}: only nics on managed networks are planted"
        tap = f"t{index}n{n}"
        _run(["ip", "-n", namespace, "link", "add", nic.name, "type", "veth",
              "peer", "name", tap, "netns", pid])
        plant.daemon.run("ip", "link", "set", tap, "master", bridge, "up")
        # Router solicitations every second rather than 4 s: the first ones go out while
        # the bridge's addresses are still tentative, when dnsmasq cannot answer yet (a
        # guest that boots sends its own later); only the wait gets shorter.
        _sysctl(plant, vm.name, f"net.ipv6.conf.{nic.name}.accept_ra=1",
                f"net.ipv6.conf.{nic.name}.router_solicitation_interval=1")
        for family in FAMILIES:
            address = nic.address_in(family)
            if address is not None:
                _address(plant, vm.name, nic.name, str(address), family)
        plant.run(vm.name, "ip", "link", "set", nic.name, "up")
    _routes(plant, vm.name, IPV4)
    # IPv6: only the routes the file writes; the default one is the RA's to give.
    _routes(plant, vm.name, IPV6, default=False)


def _start_networks(plant: Plant, conn: Any, stack: contextlib.ExitStack) -> None:
    for network in libvirt_backend.managed_networks(plant.lab):
        xml = network_xml(plant.lab, network.name)
        net = conn.networkDefineXML(xml)
        stack.callback(net.undefine)
        net.create()
        stack.callback(net.destroy)
        plant.bridges[network.name] = net.bridgeName()


def connect(daemon: Libvirtd, timeout: float = 10.0) -> Any:
    """A connection to the daemon. Its socket file appears (which the fixture waits for)
    a moment before libvirtd listens on it; a fresh daemon may refuse the first tries."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return libvirt.open(daemon.uri)
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def planted(daemon: Libvirtd, an: Analysis) -> Iterator[Plant]:
    """The lab on the daemon, everything undone afterwards (also on failure): networks
    destroyed and undefined, namespaces deleted."""
    plant = Plant(daemon, an, f"lp{RUN}{an.lab.name[-6:]}")
    conn = connect(daemon)
    stack = contextlib.ExitStack()
    stack.callback(conn.close)
    with stack:
        segments = _plant_lan(plant, stack)
        for host in plant.lab.hosts:
            _plant_host(plant, host, segments)
        _start_networks(plant, conn, stack)
        _plant_externals(plant, segments, stack)
        for index, vm in enumerate(plant.lab.vms):
            _plant_vm(plant, index, vm, stack)
        yield plant


def assert_cleaned_up(plant: Plant) -> None:
    """Nothing of the lab is left: no namespace of its, no network on the daemon but
    the `default` one of its configuration (never started)."""
    left = [line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines()
            if line.startswith(plant.prefix)]
    assert left == [], left
    conn = connect(plant.daemon)
    try:
        assert [n.name() for n in conn.listAllNetworks(0) if n.name() != "default"] == []
    finally:
        conn.close()


# --- router advertisements ------------------------------------------------------------


def _ras_received(plant: Plant, vm: str, device: str) -> int:
    """The router advertisements `device` took in (the kernel's per-interface ICMPv6
    counters, /proc/net/dev_snmp6/<device>)."""
    text = plant.run(vm, "cat", f"/proc/net/dev_snmp6/{device}")
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "Icmp6InRouterAdvertisements":
            return int(value)
    raise AssertionError(f"no Icmp6InRouterAdvertisements for {vm}.{device}")


def _dnsmasq_runs(plant: Plant, network: str) -> bool:
    """Whether libvirt started a dnsmasq for the network (its configuration file, which
    libvirt writes only then: bridge_driver.c networkStartDhcpDaemon)."""
    net = plant.lab.network(network)
    assert net is not None
    name = naming.libvirt_name(plant.lab.name, network, net.exact_name)
    return (plant.daemon.root / "lib" / "dnsmasq" / f"{name}.conf").exists()


def _advertising(plant: Plant) -> list[tuple[str, str]]:
    """(VM, nic) on a libvirt network with an IPv6 address whose dnsmasq runs: dnsmasq
    sends router advertisements there (bridge_driver.c networkDnsmasqConfContents
    writes `enable-ra` or `dhcp-range=ADDR,ra-only` for every IPv6 <ip>); on a network
    without one the bridge has IPv6 disabled (networkSetIPv6Sysctls)."""
    found = []
    for vm in plant.lab.vms:
        for nic in vm.nics:
            network = plant.lab.network(nic.network)
            if network is not None and network.address6 is not None and _dnsmasq_runs(plant, network.name):
                found.append((vm.name, nic.name))
    return found


def _tentative(plant: Plant, node: str) -> str:
    return plant.run(node, "ip", "-6", "-o", "addr", "show", "tentative").strip()


def wait_until_settled(plant: Plant) -> None:
    """Until every node's IPv6 addresses have passed duplicate address
    detection: the bridge's addresses start it once the first guest is plugged in (the
    bridge gets its carrier then), and until it ends the kernel neither sources packets
    from them nor sends router advertisements from the link-local one. A booting guest
    takes longer than that; the namespaces here are up in a second."""
    deadline = time.monotonic() + RA_TIMEOUT_S
    for node in [n.name for n in plant.lab.nodes]:
        while (left := _tentative(plant, node)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"{node}: addresses still tentative after {RA_TIMEOUT_S:.0f} s: {left}"


def _ra_default(plant: Plant, vm: str) -> list[dict]:
    return [r for r in json.loads(plant.run(vm, "ip", "-6", "-j", "route", "show", "default") or "[]")
            if r.get("protocol") == "ra"]


def wait_for_router_advertisements(plant: Plant) -> list[tuple[str, str]]:
    """Until every nic libvirt's dnsmasq advertises to has taken in an RA and, where the
    model expects the RA's default route, has that route (dnsmasq's first advertisements
    may come while the bridge's addresses are still tentative); returns the nics that
    did not in RA_TIMEOUT_S."""
    routed = {vm.name for vm in plant.lab.vms
              if any(r.is_default for r in topology.effective_routes(plant.an, vm.name, IPV6))}
    deadline = time.monotonic() + RA_TIMEOUT_S
    waiting = _advertising(plant)
    while waiting and time.monotonic() < deadline:
        waiting = [(vm, nic) for vm, nic in waiting if _ras_received(plant, vm, nic) == 0
                   or (vm in routed and not _ra_default(plant, vm))]
        if waiting:
            time.sleep(0.2)
    return waiting


def _link_local(plant: Plant, bridge: str) -> str | None:
    out = plant.daemon.run("ip", "-6", "-j", "addr", "show", "dev", bridge, "scope", "link")
    for link in json.loads(out or "[]"):
        for info in link.get("addr_info", []):
            if info.get("scope") == "link" and "local" in info:
                return str(info["local"])
    return None


def default_routes_as_advertised(plant: Plant) -> list[str]:
    """Every VM's IPv6 default route against the model's: present (from an RA, via the
    bridge's link-local address) exactly where effective_routes has one. Returns the
    disagreements."""
    problems = []
    for vm in plant.lab.vms:
        expected = [r for r in topology.effective_routes(plant.an, vm.name, IPV6) if r.is_default]
        routes = json.loads(plant.run(vm.name, "ip", "-6", "-j", "route", "show", "default") or "[]")
        if not expected:
            if routes:
                problems.append(f"{vm.name}: the model expects no IPv6 default route, libvirt's RA "
                                f"gave {routes}")
            continue
        via = expected[0].via
        network = next(n for n in plant.lab.networks if n.address6 is not None and n.address6.ip == via)
        router = _link_local(plant, plant.bridges[network.name])
        got = [(r.get("gateway"), r.get("protocol")) for r in routes]
        if got != [(router, "ra")]:
            problems.append(f"{vm.name}: the model expects an IPv6 default route via {via} "
                            f"(network {network.name}: its bridge's link-local {router}, from "
                            f"the RA), the kernel has {routes}")
    return problems


# --- libvirt's rules -------------------------------------------------------------------

# Chains where a rule's place decides a verdict; INP and OUT hold accepts only (the model
# keeps libvirt's insertion order there, which `iptables -S` prints the other way round,
# as libvirt --insert-s every rule). In the others only the order among one network's
# rules counts: every rule names its network's bridge (-i/-o) or, in LIBVIRT_PRT, its
# subnet (-s), so the rules of different networks never match the same packet. (Their
# order follows the order the networks were started in; the model's is by name.)
ORDERED_CHAINS = {Chain.FWX.title, Chain.FWI.title, Chain.FWO.title, Chain.PRT.title}


def _comparable(chain: str, rules: list[str], bridges: list[str]) -> object:
    # `iptables -S` prints the conntrack states as RELATED,ESTABLISHED, whatever order
    # they were given in (libvirt passes ESTABLISHED,RELATED); the set is what counts.
    rules = [re.sub(r"--ctstate (\S+)", lambda m: "--ctstate " + ",".join(sorted(m[1].split(","))), r)
             for r in rules]
    if chain not in ORDERED_CHAINS:
        return sorted(rules)
    per_network: dict[str, list[str]] = {}
    for rule in rules:
        owner = next((b for b in bridges if re.search(rf"-[io] {re.escape(b)}( |$)", rule)), None)
        if owner is None:
            source = re.search(r"-s (\S+)", rule)
            owner = source[1] if source else ""
        per_network.setdefault(owner, []).append(rule)
    return per_network


def rules_as_installed(plant: Plant) -> list[str]:
    """libvirt's rules in the host's filter and nat tables (`iptables -S`, `ip6tables -S`)
    against the model's (firewall.host_firewall, rendered as `-S` prints them), chain by
    chain, in both families: the disagreements. (The mangle table's CHECKSUM rule for
    IPv4 DHCP is not modelled: it decides no verdict.)"""
    problems = []
    for host in plant.lab.hosts:
        for family in FAMILIES:
            modelled: dict[str, list[str]] = {}
            table = firewall.host_firewall(plant.lab, host.name, family=family)
            for rule in (*table.forward, *table.input, *table.output, *table.postrouting):
                if rule.chain.libvirt:
                    modelled.setdefault(rule.chain.title, []).append(firewall.iptables(rule))
            installed: dict[str, list[str]] = {}
            for name in ("filter", "nat"):
                for line in plant.run(host.name, family.facts.iptables, "-w", "-t", name, "-S").splitlines():
                    if line.startswith("-A LIBVIRT_"):
                        chain, _, rule_text = line.removeprefix("-A ").partition(" ")
                        installed.setdefault(chain, []).append(rule_text)
            for chain in sorted(set(modelled) | set(installed)):
                bridges = list(plant.bridges.values())
                want = _comparable(chain, modelled.get(chain, []), bridges)
                got = _comparable(chain, installed.get(chain, []), bridges)
                if want != got:
                    problems.append(f"{host.name} {family.facts.iptables} {chain}: the model has {want}, "
                                    f"libvirt installed {got}")
    return problems


def forwarding_as_set(plant: Plant) -> list[str]:
    """The host's forwarding sysctls, which libvirt sets (networkEnableIPForwarding:
    IPv6's only for a network with an IPv6 address), against topology.forwards."""
    problems = []
    for host in plant.lab.hosts:
        for family in FAMILIES:
            value = plant.run(host.name, "sysctl", "-n", family.facts.forwarding_sysctl).strip()
            expected = topology.forwards(plant.an, host.name, family)
            if (value == "1") != expected:
                problems.append(f"{host.name}: {family.facts.forwarding_sysctl} is {value}, the model "
                                f"says {'on' if expected else 'off'}")
    return problems


# --- the ping matrix ------------------------------------------------------------------


def _alive(plant: Plant, node: str, targets: list[IPAddress]) -> set[IPAddress]:
    """The targets that answer an echo from `node`: both families in one fping run
    (fping picks the family from each address)."""
    if not targets:
        return set()
    out = _run(plant.cmd(node, "fping", "-a", "-q", "-r", str(PING_RETRIES), "-t", str(PING_TIMEOUT_MS),
                         *map(str, targets)), check=False, timeout=120)
    return {ip_address(line.strip()) for line in out.split()}


@dataclass(frozen=True)
class Mismatch:
    family: Family
    src: str
    dst: str
    predicted: bool
    observed: bool
    reason: str

    def __str__(self) -> str:
        said = "reaches" if self.predicted else "does not reach"
        did = "answered" if self.observed else "did not answer"
        return f"{self.family.title} {self.src} -> {self.dst}: reach says {said} ({self.reason}); libvirt: {did}"


def ping_matrix(plant: Plant) -> tuple[dict[Family, dict[tuple[str, str], bool]], list[Mismatch]]:
    """Every ordered pair of the lab's nodes in both families, against reach.predict per
    family: the observations and the mismatches."""
    an = plant.an
    names = [node.name for node in plant.lab.nodes]
    addresses = {name: topology.node_addresses(an, name) for name in names}
    every = [a for name in names for a in addresses[name]]
    assert len(every) == len(set(every)), f"an address is held twice: {every}"

    def probe(src: str) -> set[IPAddress]:
        return _alive(plant, src, [a for dst in names if dst != src for a in addresses[dst]])

    with ThreadPoolExecutor(max_workers=4) as pool:
        alive = dict(zip(names, pool.map(probe, names), strict=True))
    observed: dict[Family, dict[tuple[str, str], bool]] = {}
    mismatches = []
    for family in an.families:
        matrix = reach.predict(an, family)
        seen = observed.setdefault(family, {})
        for result in matrix:
            targets = topology.node_addresses(an, result.dst, family)
            seen[(result.src, result.dst)] = bool(targets) and all(t in alive[result.src] for t in targets)
            if seen[(result.src, result.dst)] != result.reachable:
                mismatches.append(Mismatch(family, result.src, result.dst, result.reachable,
                                           seen[(result.src, result.dst)], result.reason))
    return observed, mismatches


# --- the tests ------------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Libvirtd]:
    """A daemon of its own per lab: libvirt turns forwarding on and never back off, so a
    lab after another would not start from a stock host."""
    _require_tools()
    for tool in ("fping", "iptables", "ip6tables"):
        require_tool(tool)
    with running_libvirtd(tmp_path_factory.mktemp("lp", numbered=True), hide_kvm=True) as d:
        yield d


def _checked(result: Compilation) -> Analysis:
    assert result.lab is not None, result.diagnostics
    # A lab topoc would build: no errors (warnings, such as a LAN machine with no route
    # back, are part of what is proven).
    assert [d for d in result.diagnostics if d.severity is Severity.ERROR] == []
    return analysis_of(result.lab)


def compiled(model: str) -> Analysis:
    return _checked(compile_source(lab_text(model), f"{model}.topo"))


def agreement(an: Analysis, daemon: Libvirtd) -> dict[Family, dict[tuple[str, str], bool]]:
    """Plant the lab, check libvirt's rules, sysctls and router advertisements, and ping
    every pair; fails on any disagreement with the model. Returns what was observed,
    per family."""
    assert an.families == FAMILIES
    with planted(daemon, an) as plant:
        wait_until_settled(plant)
        silent = wait_for_router_advertisements(plant)
        assert silent == [], f"no router advertisement in {RA_TIMEOUT_S:.0f} s on {silent}"
        advertised = set(_advertising(plant))
        for vm in plant.lab.vms:
            for nic in vm.nics:
                if (vm.name, nic.name) not in advertised:
                    # No dnsmasq or no IPv6 on that bridge: nothing may advertise a router.
                    assert _ras_received(plant, vm.name, nic.name) == 0, (vm.name, nic.name)
        rule_problems = rules_as_installed(plant) + forwarding_as_set(plant)
        route_problems = default_routes_as_advertised(plant)
        observed, mismatches = ping_matrix(plant)
        dnsmasq = {n.name: _dnsmasq_runs(plant, n.name) for n in libvirt_backend.managed_networks(plant.lab)}
    assert_cleaned_up(plant)
    header = f"{an.lab.name}: libvirt's dnsmasq runs for {dnsmasq}"
    assert not rule_problems, "\n".join([header, *rule_problems])
    # The router advertisements first, on their own: they explain the pings' outcome.
    assert not route_problems, "\n".join(
        [header, *route_problems, "and then the pings:", *map(str, mismatches)])
    assert not mismatches, "\n".join([header, *map(str, mismatches)])
    for family, seen in observed.items():
        print(f"{an.lab.name} {family.title}: {sum(seen.values())} pairs answer, "
              f"{len(seen) - sum(seen.values())} do not, as reach predicts")
    return observed


def both_outcomes(observed: dict[Family, dict[tuple[str, str], bool]]) -> None:
    for family, seen in observed.items():
        # Both outcomes in each family: the pairs that answer and the ones that must not.
        assert set(seen.values()) == {True, False}, (family, seen)


@pytest.mark.parametrize("model", list(MODELS))
def test_libvirt_agrees_with_reach_in_both_families(model: str, daemon: Libvirtd) -> None:
    both_outcomes(agreement(compiled(model), daemon))


# The dual-stack examples whose every network is one of libvirt's own (not bridged, no
# `masquerade`: those are the host scripts' and topoc.nft's, proven by topoc verify).
# Their `forward`s are left out: a DNAT is topoc.nft's, and no ping goes through one.
LIBVIRT_EXAMPLES = ["isolated-dualstack", "hostonly-dualstack", "routed-dualstack", "nat-dualstack",
                    "mixed-dualstack"]


@pytest.mark.parametrize("example", LIBVIRT_EXAMPLES)
def test_the_dual_stack_examples_on_libvirt_agree_with_reach(example: str, daemon: Libvirtd) -> None:
    # Agreement only: in some of them every pair of a family answers (the labs above
    # hold both outcomes in each family).
    observed = agreement(_checked(compile_file(str(EXAMPLES / f"{example}.topo"))), daemon)
    assert set(observed) == set(FAMILIES)


@pytest.mark.parametrize("model", list(QUIET))
def test_a_network_without_dnsmasq_advertises_no_router(model: str, daemon: Libvirtd) -> None:
    """On a nat, routed or open network with an IPv6 address but neither `dhcp` nor `dns
    on` libvirt runs no dnsmasq, so no router advertisement: its VMs have no IPv6 default
    route and nothing beyond the bridge answers them in IPv6, as the model says (and the
    no-router-advertisement warning tells the user)."""
    result = compile_source(lab_text(model), f"{model}.topo")
    assert {d.code for d in result.diagnostics if d.code == "no-router-advertisement"}, result.diagnostics
    observed = agreement(compiled(model), daemon)
    assert not any(reached for (src, dst), reached in observed[IPV6].items()
                   if src in ("a", "b") and dst not in ("a", "b"))
