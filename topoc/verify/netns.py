"""`topoc verify`: build the lab in Linux network namespaces with the generated host
scripts, run the ping matrix, and diff reality against the reachability prediction.

One namespace per host, VM and external node, and one per external network (the
physical LAN, a bridge of its own). Each host's `up.sh` and `topoc.nft` run unchanged
inside the host's namespace: the scripts under test are the ones users will run. A VM
nic is a veth whose host end already carries the tap's name, so `up.sh` finds it and
attaches it to its bridge where the tap would be.

Faithful to a stock Debian KVM host: this kernel has br_netfilter built in and every new
namespace starts with net.bridge.bridge-nf-call-iptables=1, which would send bridged
frames through the IP hooks; a stock host has no br_netfilter loaded, so verify sets the
bridge-nf-call-* sysctls to 0 in every namespace it makes. ip_forward starts off (the
kernel's default) until `up.sh` turns it on; rp_filter and arp_ignore stay at the
kernel's defaults (0).

A dual-stack lab is built and probed in both families at once: every node gets its
IPv6 address and IPv6 routes too, IPv6 forwarding is on where the model says a node
forwards IPv6, and every ping runs in the family of its target address. An IPv4-only
lab is built exactly as before.

Everything verify makes is named with a prefix unique to the run, and is torn down
(down.sh, then every namespace deleted) also on failure and Ctrl-C, unless --keep.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from ipaddress import ip_address
from pathlib import Path

from topoc.interrupts import Interrupted
from topoc.model import naming
from topoc.model.analysis import Analysis, analysis_of
from topoc.model.family import IPV4, IPV6, Family, family_of
from topoc.model.ir import External, Forward, Host, Lab, Mode, Nic, Vm

# The report and its text and JSON are shared with `verify --live` (topoc.verify.live).
from topoc.verify.report import (  # noqa: F401  (re-exported: callers use netns.render_*)
    ForwardObservation,
    Observation,
    Report,
    VerifyError,
    address_order,
    render_json,
    render_text,
)

BRIDGE_NF_SYSCTLS = ("net.bridge.bridge-nf-call-arptables", "net.bridge.bridge-nf-call-iptables",
                     "net.bridge.bridge-nf-call-ip6tables")
REQUIRED_TOOLS = ("ip", "bridge", "nft", "fping", "bash", "sysctl")
PING_TIMEOUT_MS = 400
PING_RETRIES = 1
CONNECT_TIMEOUT_S = 2.0
# Nothing in the rig sends router advertisements, and no node may take an address or a
# route from a stray one: every node namespace of a dual-stack lab starts with these
# (interfaces created afterwards take the `default` values). disable_ipv6 is 0 by
# default; it is set anyway, for a machine booted with IPv6 disabled by default.
# https://docs.kernel.org/networking/ip-sysctl.html (accept_ra, disable_ipv6)
IPV6_NODE_SYSCTLS = ("net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0",
                     "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0")
# How long an IPv6 address may stay tentative (duplicate address detection: `up.sh`'s
# addresses on bridges; verify's own are added with nodad) before the probes start.
DAD_TIMEOUT_S = 10.0


# --- running commands -----------------------------------------------------------------


def _run(argv: list[str], *, namespace: str | None = None, env: Mapping[str, str] | None = None,
         check: bool = True, timeout: float = 60, stdin: str | None = None,
         ) -> subprocess.CompletedProcess[str]:
    if namespace is not None:
        argv = ["ip", "netns", "exec", namespace, *argv]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=stdin,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise VerifyError(f"`{shlex.join(argv)}` failed ({result.returncode}): "
                          f"{(result.stderr or result.stdout).strip()}")
    return result


def _settle(pending: Callable[[], list[str]], deadline: float, failure: str) -> None:
    """Poll `pending` every 0.1 s until it lists nothing; past `deadline`, fail with
    `failure` and what is still pending."""
    while remaining := pending():
        if time.monotonic() > deadline:
            raise VerifyError(f"{failure}: {', '.join(remaining)}")
        time.sleep(0.1)


def _ip(namespace: str, *args: str) -> None:
    _run(["ip", "-n", namespace, *args])


def check_environment() -> None:
    if os.geteuid() != 0:
        raise VerifyError("verify needs root: it creates network namespaces "
                          "(run it with sudo, or as root)")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise VerifyError(f"verify needs {', '.join(missing)}; install them "
                          "(`make setup` does, or apt-get install iproute2 nftables fping procps)")


# --- the rig: namespaces, links, addresses --------------------------------------------


@dataclass
class Rig:
    """The lab built in namespaces. `namespaces` lists every one made, in order."""

    lab: Lab
    prefix: str
    workdir: Path
    scripts: Mapping[str, Mapping[str, str]]  # host name -> {"up.sh", "down.sh", "topoc.nft"}
    namespaces: list[str] = field(default_factory=list)
    hosts_up: list[str] = field(default_factory=list)
    ports: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (node, LAN) -> ports
    log: list[str] = field(default_factory=list)
    analysis: Analysis | None = None  # the lab's (built here when not handed over)

    def __post_init__(self) -> None:
        if self.analysis is None:
            self.analysis = Analysis(self.lab)

    @property
    def facts(self) -> Analysis:
        assert self.analysis is not None
        return self.analysis

    def ns(self, kind: str, name: str) -> str:
        return f"{self.prefix}-{kind}-{name}"

    def node_ns(self, name: str) -> str:
        return self.ns("n", name)

    def segment_ns(self, network: str) -> str:
        return self.ns("s", network)

    def add_namespace(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        _ip(name, "link", "set", "lo", "up")
        # A stock Debian KVM host has no br_netfilter loaded; this kernel has it built in.
        settings = [f"{key}=0" for key in BRIDGE_NF_SYSCTLS]
        _run(["sysctl", "-qw", *settings], namespace=name, check=False)

    # -- building --

    def build(self) -> None:
        if IPV6 in self.families and not Path("/proc/sys/net/ipv6").is_dir():
            raise VerifyError("the lab has IPv6 addresses and this kernel runs without IPv6 "
                              "(booted with ipv6.disable=1, or built without it): verify cannot "
                              "build it here")
        for network in self.lab.networks:
            if network.mode is Mode.EXTERNAL:
                self.add_namespace(self.segment_ns(network.name))
                _ip(self.segment_ns(network.name), "link", "add", "lan", "type", "bridge")
                _ip(self.segment_ns(network.name), "link", "set", "lan", "up")
        for node in self.lab.nodes:
            self.add_namespace(self.node_ns(node.name))
            if IPV6 in self.families:
                _run(["sysctl", "-qw", *IPV6_NODE_SYSCTLS], namespace=self.node_ns(node.name))
        ports: dict[str, int] = {}
        for node in self.lab.nodes:
            for nic in node.nics:
                self.wire(node, nic, ports)
        self.separate_macvtap_guests()
        for node in self.lab.nodes:
            self.configure(node)
        for host in self.lab.hosts:
            self.run_up(host)
        self.wait_for_bridge_ports()
        if IPV6 in self.families:
            self.wait_for_addresses()

    @property
    def families(self) -> tuple[Family, ...]:
        """The families the lab uses (IPv4 first); IPv4 for a lab with no address."""
        return self.facts.families or (IPV4,)

    def wait_for_addresses(self, timeout: float = DAD_TIMEOUT_S) -> None:
        """An IPv6 address is tentative while duplicate address detection runs (about a
        second, RFC 4862 section 5.4) and answers nothing meanwhile: wait until no node
        holds a tentative global address on a link with carrier (without one, DAD waits
        for the link), so a probe does not race it. A duplicate stays `dadfailed`: the
        probes will show it."""
        def tentative(namespace: str) -> list[str]:
            out = _run(["ip", "-j", "-6", "addr", "show", "tentative", "scope", "global"],
                       namespace=namespace).stdout
            return [f"{link['ifname']} {address['local']}"
                    for link in json.loads(out or "[]") if "LOWER_UP" in link.get("flags", ())
                    for address in link.get("addr_info", ())
                    if address.get("tentative") and not address.get("dadfailed")]

        deadline = time.monotonic() + timeout
        for node in self.lab.nodes:
            _settle(partial(tentative, self.node_ns(node.name)), deadline,
                    f"IPv6 addresses of {node.name} still tentative after {timeout:.0f} s")

    def wait_for_bridge_ports(self, timeout: float = 15.0) -> None:
        """With `stp on`, bridge ports listen and learn (2 x forward delay) before they
        forward; and a port that was just set up stays `disabled` until the kernel sees
        its carrier, which it reports asynchronously (linkwatch, up to a second later).
        Probing earlier would report false mismatches (IPv6's neighbour discovery, which
        retries less than fping, misses them first). Every port that is up must
        forward, on the hosts' bridges and on the LAN segments'."""
        deadline = time.monotonic() + timeout
        bridges = [(f"host {host}", self.node_ns(host)) for host in self.hosts_up]
        bridges += [(f"network {network.name}", self.segment_ns(network.name))
                    for network in self.lab.networks if network.mode is Mode.EXTERNAL]
        def waiting(namespace: str) -> list[str]:
            out = _run(["bridge", "-j", "link", "show"], namespace=namespace).stdout
            return [f"{port.get('ifname')} {port.get('state')}" for port in json.loads(out or "[]")
                    if port.get("state") not in ("forwarding", None)
                    and not (port.get("state") == "disabled" and "UP" not in port.get("flags", ()))]

        for what, namespace in bridges:
            _settle(partial(waiting, namespace), deadline,
                    f"bridge ports of {what} did not reach the forwarding state in {timeout:.0f} s")

    def wire(self, node: Host | Vm | External, nic: Nic, ports: dict[str, int]) -> None:
        network = self.lab.network(nic.network)
        assert network is not None
        node_ns = self.node_ns(node.name)
        if network.mode is Mode.EXTERNAL:
            segment = self.segment_ns(network.name)
            port = f"p{ports.setdefault(network.name, 0)}"
            ports[network.name] += 1
            _ip(node_ns, "link", "add", nic.name, "type", "veth", "peer", "name", port,
                "netns", segment)
            _ip(segment, "link", "set", port, "master", "lan", "up")
            self.ports.setdefault((node.name, network.name), []).append(port)
        elif isinstance(node, Vm):
            # The host end takes the tap's name: up.sh finds it and attaches it.
            host_ns = self.node_ns(node.host)
            tap = naming.tap_name(self.lab.name, node.name, nic.index)
            _ip(host_ns, "link", "add", tap, "type", "veth", "peer", "name", nic.name,
                "netns", node_ns)
        else:
            raise VerifyError(f"{node.kind} {node.name}: a nic on managed network "
                              f"{network.name} cannot be built in namespaces")

    def separate_macvtap_guests(self) -> None:
        """A VM placed on the LAN itself is a macvtap guest of its host's NIC (libvirt's
        direct attachment), and the two cannot exchange frames through that NIC. The LAN
        bridge drops frames between their ports to behave alike."""
        from topoc.model.topology import macvtap_links

        rules: dict[str, list[str]] = {}
        for host, vm, network in sorted(macvtap_links(self.lab)):
            for host_port in self.ports.get((host, network), []):
                for vm_port in self.ports.get((vm, network), []):
                    rules.setdefault(network, []).extend(
                        f'iifname "{a}" oifname "{b}" drop' for a, b in
                        ((host_port, vm_port), (vm_port, host_port)))
        for network, lines in rules.items():
            body = "\n".join(f"        {line}" for line in lines)
            ruleset = ("table bridge topoc_macvtap {\n    chain forward {\n"
                       "        type filter hook forward priority 0; policy accept;\n"
                       f"{body}\n    }}\n}}\n")
            _run(["nft", "-f", "-"], namespace=self.segment_ns(network), stdin=ruleset)

    def configure(self, node: Host | Vm | External) -> None:
        from topoc.model.topology import effective_routes, forwards

        namespace = self.node_ns(node.name)
        for nic in node.nics:
            if nic.address is not None:
                _ip(namespace, "addr", "add", str(nic.address), "dev", nic.name)
            if nic.address6 is not None:
                # nodad: duplicate address detection would hold the address tentative for
                # a second or more; the checks (address-conflict) already guarantee
                # uniqueness where it matters. ip-address(8): "nodad".
                _ip(namespace, "-6", "addr", "add", str(nic.address6), "dev", nic.name, "nodad")
            if isinstance(node, Vm) and nic.mac:
                _ip(namespace, "link", "set", nic.name, "address", nic.mac)
            _ip(namespace, "link", "set", nic.name, "up")
        if isinstance(node, Host):
            # The machine's own default route; up.sh adds the lab's `route` lines.
            for family in self.families:
                for nic in node.nics:
                    gateway = nic.gateway_in(family)
                    if gateway is not None:
                        _ip(namespace, family.facts.ip_flag, "route", "replace", "default",
                            "via", str(gateway), "dev", nic.name)
            return
        for family in self.families:
            connected = [address.network for nic in node.nics
                         if (address := nic.address_in(family)) is not None]
            # IPv6: a VM's default route comes from the network's router advertisement
            # (topoc.model.topology's RA rule); nothing sends RAs here, so the model's
            # route is written as an explicit one. That libvirt's dnsmasq really
            # advertises it is proven against a real libvirtd, not here.
            for route in effective_routes(self.facts, node.name, family):
                if not any(route.via in subnet for subnet in connected):
                    # A nic left to DHCP has no address here (verify runs no DHCP server), so
                    # its gateway is not on any connected subnet; the kernel would refuse it.
                    self.log.append(f"{node.name}: skipped route {route.destination} via {route.via}")
                    continue
                destination = "default" if route.is_default else str(route.destination)
                _ip(namespace, family.facts.ip_flag, "route", "replace", destination,
                    "via", str(route.via))
            if isinstance(node, External) and forwards(self.facts, node.name, family):
                # An external forwards when another node routes through it (the model's rule).
                _run(["sysctl", "-qw", f"{family.facts.forwarding_sysctl}=1"], namespace=namespace)

    def host_dir(self, host: str) -> Path:
        return self.workdir / host

    def run_up(self, host: Host) -> None:
        files = self.scripts.get(host.name)
        if not files:
            return
        directory = self.host_dir(host.name)
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (directory / name).write_text(text)
        self.hosts_up.append(host.name)
        result = _run(["bash", str(directory / "up.sh")], namespace=self.node_ns(host.name),
                      env={"TOPOC_STATE_DIR": str(directory / "state")}, check=False)
        self.log.append(result.stdout + result.stderr)
        if result.returncode != 0:
            raise VerifyError(f"up.sh of host {host.name} failed ({result.returncode}):\n"
                              f"{(result.stderr or result.stdout).strip()}")

    # -- tearing down --

    def teardown(self) -> list[str]:
        """Undo everything; returns problems met on the way (never raises)."""
        problems = []
        for host in reversed(self.hosts_up):
            directory = self.host_dir(host)
            result = _run(["bash", str(directory / "down.sh")], namespace=self.node_ns(host),
                          env={"TOPOC_STATE_DIR": str(directory / "state")}, check=False)
            if result.returncode != 0:
                problems.append(f"down.sh of host {host} failed: {result.stderr.strip()}")
        for namespace in reversed(self.namespaces):
            result = _run(["ip", "netns", "del", namespace], check=False)
            if result.returncode != 0:
                problems.append(f"could not delete namespace {namespace}: {result.stderr.strip()}")
        self.namespaces.clear()
        self.hosts_up.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return problems

    def cleanup_commands(self) -> list[str]:
        commands = [f"TOPOC_STATE_DIR={shlex.quote(str(self.host_dir(h) / 'state'))} "
                    f"ip netns exec {shlex.quote(self.node_ns(h))} "
                    f"bash {shlex.quote(str(self.host_dir(h) / 'down.sh'))}" for h in self.hosts_up]
        commands += [f"ip netns del {shlex.quote(n)}" for n in reversed(self.namespaces)]
        commands.append(f"rm -rf {shlex.quote(str(self.workdir))}")
        return commands


# --- probing --------------------------------------------------------------------------


def _alive(namespace: str, addresses: list[str]) -> set[str]:
    """The addresses that answer one ICMP echo (with a retry) from inside `namespace`.

    One fping run takes both families: fping 5 picks each target's family from the
    address, and `-4`/`-6` would make the other family's targets fail ("Address family
    for hostname not supported"). So a dual-stack lab pings IPv6 in the same run as
    IPv4, one run per source, without `-6` (fping 4.0's changelog: "fping and fping6 are
    now unified into one binary"; fping(8), -4 and -6)."""
    if not addresses:
        return set()
    result = _run(["fping", "-a", "-q", "-r", str(PING_RETRIES), "-t", str(PING_TIMEOUT_MS),
                   *addresses], namespace=namespace, check=False, timeout=120)
    if result.returncode not in (0, 1):
        raise VerifyError(f"fping failed in {namespace}: {result.stderr.strip()}")
    return set(result.stdout.split())


_LISTENER = textwrap.dedent("""
    import socket, sys
    proto, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    ipv6 = sys.argv[4] == "6"
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::" if ipv6 else "0.0.0.0", port))
    s.settimeout(seconds)
    if proto == "tcp":
        s.listen(16)
    print("ready", flush=True)
    try:
        while True:
            if proto == "tcp":
                conn, _ = s.accept()
                conn.sendall(b"topoc\\n")
                conn.close()
            else:
                data, peer = s.recvfrom(64)
                s.sendto(b"topoc\\n", peer)
    except OSError:
        pass  # the timeout: the probe window is over
""")

_CLIENT = textwrap.dedent("""
    import socket, sys
    proto, host, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
    s.settimeout(seconds)
    try:
        if proto == "tcp":
            s.connect((host, port))
            ok = s.recv(16).startswith(b"topoc")
        else:
            s.sendto(b"hello", (host, port))
            ok = s.recv(16).startswith(b"topoc")
    except OSError:
        ok = False
    sys.exit(0 if ok else 1)
""")


def _probe_forward(rig: Rig, forward: Forward, src: str, target: str, family: Family = IPV4) -> bool:
    listener = subprocess.Popen(
        ["ip", "netns", "exec", rig.node_ns(forward.vm), sys.executable, "-c", _LISTENER,
         forward.protocol, str(forward.vm_port), str(CONNECT_TIMEOUT_S * 3),
         str(family.facts.version)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert listener.stdout is not None
        if listener.stdout.readline().strip() != "ready":
            raise VerifyError(f"could not listen on {forward.protocol}/{forward.vm_port} in {forward.vm}")
        result = _run([sys.executable, "-c", _CLIENT, forward.protocol, target, str(forward.port),
                       str(CONNECT_TIMEOUT_S)], namespace=rig.node_ns(src), check=False)
        return result.returncode == 0
    finally:
        listener.kill()
        listener.wait()


# --- the whole run --------------------------------------------------------------------


# The kernel's count of ICMP echo replies a namespace sent, per family: Icmp OutEchoReps
# in /proc/net/snmp, Icmp6OutEchoReplies in /proc/net/snmp6 (both per network
# namespace; https://docs.kernel.org/networking/snmp_counter.html).
def _echo_replies(namespace: str, family: Family = IPV4) -> int:
    if family is IPV6:
        lines = _run(["cat", "/proc/net/snmp6"], namespace=namespace).stdout.splitlines()
        counts = [line.split()[1] for line in lines if line.split()[:1] == ["Icmp6OutEchoReplies"]]
        if not counts:
            raise VerifyError(f"no Icmp6OutEchoReplies counter in {namespace}'s /proc/net/snmp6")
        return int(counts[0])
    lines = _run(["cat", "/proc/net/snmp"], namespace=namespace).stdout.splitlines()
    rows = [line.split()[1:] for line in lines if line.startswith("Icmp:")]
    if len(rows) < 2 or "OutEchoReps" not in rows[0]:
        raise VerifyError(f"no Icmp OutEchoReps counter in {namespace}'s /proc/net/snmp")
    return int(rows[1][rows[0].index("OutEchoReps")])


def _who_answers(rig: Rig, src: str, address: str, holders: list[str]) -> tuple[bool, list[str]]:
    """Ping an address that several nodes hold (on separate segments, which the checks
    allow) and tell which of them answered: the one whose echo-reply counter (of the
    address's family) moved. Run alone, so no other probe moves the counters meanwhile."""
    family = family_of(ip_address(address))
    before = {node: _echo_replies(rig.node_ns(node), family) for node in holders}
    alive = address in _alive(rig.node_ns(src), [address])
    after = {node: _echo_replies(rig.node_ns(node), family) for node in holders}
    return alive, [node for node in holders if after[node] > before[node]]


def _ping_matrix(rig: Rig, an: Analysis) -> list[Observation]:
    """A ping counts for DST only when DST answered it (the README's definition of
    reaching): an address the source holds itself is answered by the source, and one
    that another node also holds may be answered by that node instead.

    Every address of every family is pinged in the same run; the observations are
    compared family by family with reach's matrix of that family (predict_by_family),
    IPv4's first. An IPv4-only lab has one matrix, as before."""
    from topoc.model.reach import predict_by_family
    from topoc.model.topology import node_addresses

    matrices = predict_by_family(an)
    dual = rig.families != (IPV4,)
    names = [node.name for node in an.lab.nodes]
    # (node, family) -> that node's addresses of the family
    by_family = {(name, m.family): [str(a) for a in node_addresses(an, name, m.family)]
                 for name in names for m in matrices}
    addresses = {name: [a for m in matrices for a in by_family[(name, m.family)]] for name in names}
    holders: dict[str, list[str]] = {}
    for name in names:
        for address in addresses[name]:
            if name not in holders.setdefault(address, []):
                holders[address].append(name)

    def probe(src: str) -> set[str]:
        # Addresses only one other node holds: a reply can only come from that node.
        targets = sorted({a for dst in names if dst != src for a in addresses[dst]
                          if len(holders[a]) == 1},
                         key=address_order)
        return _alive(rig.node_ns(src), targets)

    with ThreadPoolExecutor(max_workers=8) as pool:
        alive = dict(zip(names, pool.map(probe, names), strict=True))
    # Shared addresses, one probe at a time: (src, address) -> (answered, by whom).
    shared: dict[tuple[str, str], tuple[bool, list[str]]] = {}
    for src in names:
        for address in sorted({a for dst in names if dst != src for a in addresses[dst]
                               if len(holders[a]) > 1 and src not in holders[a]},
                              key=address_order):
            shared[(src, address)] = _who_answers(rig, src, address, holders[address])

    rows = []
    for matrix in matrices:
        for src in names:
            for dst in names:
                if dst == src:
                    continue
                failed, instead = [], []
                wanted = by_family[(dst, matrix.family)]
                for address in wanted:
                    if src in holders[address]:
                        failed.append(address)  # the source's own address: it answers itself
                        instead.append((address, src))
                    elif (src, address) in shared:
                        answered, by = shared[(src, address)]
                        if not answered or dst not in by:
                            failed.append(address)
                            instead += [(address, node) for node in by if node != dst]
                    elif address not in alive[src]:
                        failed.append(address)
                observed = bool(wanted) and not failed
                rows.append(Observation(src, dst, matrix.get(src, dst).reachable, observed,
                                        tuple(wanted), tuple(failed), tuple(instead),
                                        family=matrix.family if dual else None))
    return rows


def _forward_checks(rig: Rig, an: Analysis) -> list[ForwardObservation]:
    """Every forward from every node, in each family the lab uses (a forward DNATs in
    each family its VM has an address in: topoc.model.reach.forward_reach)."""
    from topoc.model.reach import forward_reach, forward_target

    dual = rig.families != (IPV4,)
    observations = []
    for family in rig.families:
        for forward, src, predicted in forward_reach(an, family):
            address = forward_target(an.lab, forward, src, family)
            if address is None:
                continue
            target = str(address)
            observed = _probe_forward(rig, forward, src, target, family)
            shown = f"[{target}]" if family is IPV6 else target
            observations.append(ForwardObservation(forward, src, f"{shown}:{forward.port}",
                                                   predicted, observed,
                                                   family=family if dual else None))
    return observations


def default_scripts(lab: Lab) -> dict[str, dict[str, str]]:
    from topoc.backends.host import host_artifacts

    return {host.name: host_artifacts(lab, host.name) for host in lab.hosts}


def scripts_from_dir(lab: Lab, directory: Path) -> dict[str, dict[str, str]]:
    """Scripts from a build output (`output/<lab>/host`), as the user will run them."""
    scripts = {}
    for host in lab.hosts:
        folder = directory if len(lab.hosts) == 1 else directory / host.name
        files = {}
        for name in ("up.sh", "down.sh", "topoc.nft"):
            path = folder / name
            if not path.is_file():
                raise VerifyError(f"{path}: missing (build the host target first: "
                                  "topoc build FILE --target host)")
            files[name] = path.read_text()
        scripts[host.name] = files
    return scripts


# The kernel keeps one ARP table for all network namespaces, and its size limits are
# set in the initial namespace only (gc_thresh3 is 1024 by default). Every node of a
# lab learns every other node's MAC during the ping matrix, so a 50-VM lab needs a few
# thousand entries; past the limit, sends fail with ENOBUFS ("No buffer space
# available") and pings that should succeed do not. Verify raises the limits for the
# run and puts them back. IPv6's neighbour table (NDP) is another such table, with its
# own limits under net.ipv6.neigh.default.
# https://docs.kernel.org/networking/ip-sysctl.html (neigh/default)
NEIGH_LIMITS = Path("/proc/sys/net/ipv4/neigh/default")
NEIGH_LIMITS_BY_FAMILY = {IPV4: NEIGH_LIMITS, IPV6: Path("/proc/sys/net/ipv6/neigh/default")}
NEIGH_TABLE_NAMES = {IPV4: "ARP table", IPV6: "IPv6 neighbour (NDP) table"}


@dataclass
class NeighbourRoom:
    """Room in the kernel's shared neighbour table of one family (ARP's by default) for
    `entries` more neighbours, for a while."""

    entries: int
    changed: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (old, new)
    family: Family = IPV4

    @property
    def limits(self) -> Path:
        return NEIGH_LIMITS_BY_FAMILY[self.family]

    def __enter__(self) -> NeighbourRoom:
        try:
            hard_limit = int((self.limits / "gc_thresh3").read_text())
        except OSError:
            return self  # not Linux, or not allowed: the run may then miss some pings
        if self.entries <= hard_limit // 2:
            return self  # room enough, with half left for the machine's own neighbours
        # Leave the machine's own neighbours 1,024 entries besides the lab's.
        wanted = {"gc_thresh2": self.entries + 1024, "gc_thresh3": 2 * (self.entries + 1024)}
        for name, value in wanted.items():
            path = self.limits / name
            try:
                old = int(path.read_text())
                if old < value:
                    path.write_text(str(value))
                    self.changed[name] = (old, value)
            except OSError:
                continue  # not Linux, or not allowed: the run may then miss some pings
        return self

    def __exit__(self, *exc: object) -> None:
        for name, (old, new) in self.changed.items():
            path = self.limits / name
            try:
                if int(path.read_text()) == new:  # unless someone changed it meanwhile
                    path.write_text(str(old))
            except OSError:
                pass  # not writable any more: nothing else to restore it with

    def note(self) -> str | None:
        if not self.changed:
            return None
        limits = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in sorted(self.changed.items()))
        return (f"the kernel's {NEIGH_TABLE_NAMES[self.family]}, shared by all namespaces, "
                f"was enlarged for the run ({limits}) and restored")


def neighbour_entries_needed(lab: Lab, family: Family = IPV4) -> int:
    """Every node may learn every address on its segments, and its gateways: a generous
    bound is twice the nodes times the addresses (of the family). IPv6 counts every nic
    once more: its link-local address, which NDP may learn too."""
    addresses = sum(1 for node in lab.nodes for nic in node.nics if nic.address_in(family) is not None)
    addresses += sum(1 for network in lab.networks if network.address_in(family) is not None)
    if family is IPV6:
        addresses += sum(len(node.nics) for node in lab.nodes)
    return 2 * len(lab.nodes) * max(addresses, 1)


@dataclass
class Session:
    """A verify run: `with Session(lab) as rig:` builds the rig and always tears it down
    (unless keep), including on Ctrl-C and SIGTERM."""

    lab: Lab
    scripts: Mapping[str, Mapping[str, str]] | None = None
    keep: bool = False
    rig: Rig | None = None
    analysis: Analysis | None = None
    neighbours: list[NeighbourRoom] = field(default_factory=list)  # one per family
    teardown_problems: list[str] = field(default_factory=list)

    def __enter__(self) -> Rig:
        check_environment()
        # TOPOC_VERIFY_PREFIX lets a caller (the tests) recognise its own namespaces.
        prefix = os.environ.get("TOPOC_VERIFY_PREFIX", "tv") + secrets.token_hex(3)
        workdir = Path(tempfile.mkdtemp(prefix=f"topoc-verify-{prefix}-"))
        scripts = self.scripts if self.scripts is not None else default_scripts(self.lab)
        self.rig = Rig(self.lab, prefix, workdir, scripts, analysis=self.analysis)
        self._old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        self.neighbours = [NeighbourRoom(neighbour_entries_needed(self.lab, family), family=family)
                           for family in self.rig.families]
        for room in self.neighbours:
            room.__enter__()
        try:
            self.rig.build()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self.rig

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._old_term)
        if self.rig is not None and not (self.keep and exc[0] is None):
            self.teardown_problems = self.rig.teardown()
            for room in self.neighbours:
                room.__exit__(*exc)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def verify(subject: Lab | Analysis, scripts: Mapping[str, Mapping[str, str]] | None = None,
           keep: bool = False) -> tuple[Report, Session]:
    """Build the lab in namespaces and compare what the kernel does with the prediction
    (asked of `subject`'s Analysis: the compilation's, or a fresh one for a bare Lab)."""
    started = time.monotonic()
    an = analysis_of(subject)
    lab = an.lab
    session = Session(lab, scripts, keep, analysis=an)
    with session as rig:
        pairs = _ping_matrix(rig, an)
        forwards = _forward_checks(rig, an)
    report = Report(lab.name, pairs, forwards)
    report.notes.append("bridge-nf-call-{arp,ip,ip6}tables=0 in every namespace "
                        "(a stock KVM host has no br_netfilter)")
    report.notes += [note for room in session.neighbours if (note := room.note()) is not None]
    report.notes.append(f"{len(rig.namespaces) if keep else 'all'} namespaces "
                        f"{'kept' if keep else 'removed'}; {time.monotonic() - started:.1f} s")
    report.notes.extend(session.teardown_problems)
    return report, session


def iter_kept_instructions(rig: Rig) -> Iterator[str]:
    yield "the lab is still up (--keep). Enter a node with:"
    for namespace in rig.namespaces:
        yield f"  ip netns exec {namespace} bash"
    yield "remove it with:"
    for command in rig.cleanup_commands():
        yield f"  {command}"
