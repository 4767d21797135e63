"""`topoc verify --live`: prove the prediction from inside a deployed lab's running guests.

The lab is already deployed (`topoc deploy --start-vms`) and its VMs are running. Each
probe runs inside a guest through the QEMU guest agent, over the libvirt connection
(guest-exec, then guest-exec-status for its exit code and output), so it needs no
network path to the guests: the ping matrix (`ping -c 1 -W 1` from each VM to every
address of every other node, of both families in a dual-stack lab, `-6` for an IPv6
one, unanswered ones retried once) and the forward probes (a
`nc` listener in the forward's VM, a `nc` client in the source VM, connecting to the
host's address and the forwarded port). The result is diffed against
topoc.model.reach's prediction and rendered like `topoc verify` (topoc.verify.report).

What is covered, and said so in the report:
- every pair from a VM, to any node (VMs, hosts, externals);
- pairs from the host into its VMs, with the host's own `ping`, when the connection is
  local (this machine is the lab's only host);
- forwards from a VM source (TCP; busybox's nc has no UDP);
- nothing from an external node, nor from a host over a remote connection: they run no
  agent. Those pairs are listed as not probed, never counted as agreeing.

Before probing, it waits (with a timeout) for each guest's agent (guest-ping) and for
the addresses the file gives its nics (guest-network-get-interfaces; IPv6 ones also past
duplicate address detection), and names every guest that is not ready and why. A
dual-stack lab is reported family by family, as `topoc verify` reports it.

The guests need: qemu-guest-agent on the virtio-serial port org.qemu.guest_agent.0,
`sh` and `ping`; `nc` and `timeout` for forwards.
QEMU guest agent protocol: https://qemu-project.gitlab.io/qemu/interop/qemu-ga-ref.html
libvirt's passthrough (libvirt_qemu.qemuAgentCommand):
https://libvirt.org/html/libvirt-libvirt-qemu.html#virDomainQemuAgentCommand
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from topoc.model import naming
from topoc.model.analysis import Analysis
from topoc.model.family import IPV4, IPV6, Family, family_of, parse_address
from topoc.model.ir import Forward, Lab, Vm
from topoc.verify.report import ForwardObservation, Observation, Report, VerifyError, address_order

READY_TIMEOUT_S = 120.0
AGENT_CALL_TIMEOUT_S = 5  # one agent command (libvirt's own timeout, seconds)
EXEC_TIMEOUT_S = 30.0  # one guest-exec, polled until it exits
FORWARD_LISTEN_S = 5
# Every address pinged at once, each one echo with a 1 s wait; prints those that answered.
# An IPv6 address (it has a colon) is pinged with `ping -6`: iputils' ping and busybox's
# both take it (ping(8): "-6 Use IPv6 only"; busybox's ping applet: "-4,-6 Force IP or
# IPv6 name resolution"), and a ping that cannot tell the family from the literal is told.
PING_SCRIPT = ('for a in "$@"; do case "$a" in *:*) f=-6 ;; *) f= ;; esac; '
               '(ping $f -c 1 -W 1 "$a" >/dev/null 2>&1 && echo "$a") & done; wait')
# A one-connection listener that answers `topoc`, for $1 seconds; busybox's nc and
# Debian's netcat-openbsd both take `-l -p PORT`.
LISTEN_SCRIPT = 'echo topoc | timeout "$1" nc -l -p "$2"'
# Until a socket listens on the port ($1, 4 hex digits as in /proc/net/tcp; 0A: LISTEN),
# up to 5 s: a guest slowed by TCG takes a moment to start the listener.
LISTENING_SCRIPT = ('i=0; while [ "$i" -lt 50 ]; do '
                    'cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -qi ":$1 [0-9A-F:]* 0A " '
                    '&& exit 0; sleep 0.1; i=$((i+1)); done; exit 1')
# stdin held open for a second, for the banner to arrive; 3 s in all for a closed port.
CONNECT_SCRIPT = 'sleep 1 | timeout 3 nc "$1" "$2"'


class GuestNotReady(VerifyError):
    """Some guests did not get their agent or their addresses in time."""


# --- the agent ------------------------------------------------------------------------


@dataclass
class Guest:
    """One running VM of the lab, reached through its guest agent."""

    vm: Vm
    domain: Any  # libvirt.virDomain

    def command(self, execute: str, arguments: dict[str, Any] | None = None,
                timeout: int = AGENT_CALL_TIMEOUT_S) -> Any:
        # libvirt-qemu is libvirt-python's module for QEMU-only calls.
        import libvirt
        import libvirt_qemu

        message: dict[str, Any] = {"execute": execute}
        if arguments is not None:
            message["arguments"] = arguments
        try:
            reply = libvirt_qemu.qemuAgentCommand(self.domain, json.dumps(message), timeout, 0)
        except libvirt.libvirtError as e:  # agent gone, guest stopped, command refused
            raise VerifyError(f"{self.vm.name}: the guest agent failed `{execute}`: "
                              f"{_first_line(e)}") from None
        return json.loads(reply).get("return")

    def addresses(self) -> dict[str, set[str]]:
        """MAC -> the IPv4 and IPv6 addresses on the guest's nic with that MAC (the
        agent's ip-address-type is "ipv4" or "ipv6")."""
        found: dict[str, set[str]] = {}
        for interface in self.command("guest-network-get-interfaces") or []:
            mac = str(interface.get("hardware-address", "")).lower()
            for address in interface.get("ip-addresses", []):
                if address.get("ip-address-type") in ("ipv4", "ipv6"):
                    found.setdefault(mac, set()).add(_canonical(address["ip-address"]))
        return found

    def start(self, argv: list[str], capture: bool = True) -> int:
        reply = self.command("guest-exec", {"path": argv[0], "arg": argv[1:],
                                            "capture-output": capture})
        return int(reply["pid"])

    def wait(self, pid: int, timeout: float = EXEC_TIMEOUT_S) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.command("guest-exec-status", {"pid": pid})
            if status.get("exited"):
                out = base64.b64decode(status.get("out-data", "")).decode(errors="replace")
                return int(status.get("exitcode", -1)), out
            if time.monotonic() > deadline:
                raise VerifyError(f"{self.vm.name}: a command in the guest did not finish in "
                                  f"{timeout:.0f} s")
            time.sleep(0.1)

    def run(self, argv: list[str], timeout: float = EXEC_TIMEOUT_S) -> tuple[int, str]:
        return self.wait(self.start(argv), timeout)


def _not_ready(guest: Guest) -> str | None:
    """Why the guest is not ready yet, or None when it is."""
    try:
        guest.command("guest-ping")
    except VerifyError as e:  # the agent is not connected (yet)
        return f"its guest agent does not answer ({_first_line(e)})"
    try:
        present = guest.addresses()
    except VerifyError as e:  # or a guest agent without the command
        return f"its guest agent does not list its addresses ({_first_line(e)})"
    missing = []
    for nic in guest.vm.nics:
        have = present.get(nic.mac or "", set())
        if nic.ip is not None and str(nic.ip) not in have:
            missing.append(f"{nic.name} lacks {nic.ip}")
        elif nic.ip is None and nic.ip6 is None and not any(
                (ip := parse_address(a)) is not None and family_of(ip) is IPV4 for a in have):
            missing.append(f"{nic.name} has no IPv4 address (DHCP)")
        if nic.ip6 is not None and str(nic.ip6) not in have:
            missing.append(f"{nic.name} lacks {nic.ip6}")
    if not missing and any(nic.ip6 is not None for nic in guest.vm.nics):
        missing += _tentative(guest)
    return "; ".join(missing) or None


# /proc/net/if_inet6: address (32 hex digits), ifindex, prefix length, scope, flags,
# name; the flags are the kernel's IFA_F_* (include/uapi/linux/if_addr.h): 0x40
# IFA_F_TENTATIVE (duplicate address detection still running), 0x08 IFA_F_DADFAILED.
IFA_F_TENTATIVE, IFA_F_DADFAILED = 0x40, 0x08


def _tentative(guest: Guest) -> list[str]:
    """The file's IPv6 addresses the guest still holds tentative: they answer nothing
    until duplicate address detection is over (a second or two after they are set).
    One that failed it stays: the probes will show it."""
    wanted = {str(nic.ip6) for nic in guest.vm.nics if nic.ip6 is not None}
    code, out = guest.run(["sh", "-c", "cat /proc/net/if_inet6"])
    if code != 0:
        return []  # no IPv6 table to read: the probes will tell
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 6 or len(fields[0]) != 32:
            continue
        address = str(parse_address(":".join(fields[0][i:i + 4] for i in range(0, 32, 4))))
        flags = int(fields[4], 16)
        if address in wanted and flags & IFA_F_TENTATIVE and not flags & IFA_F_DADFAILED:
            found.append(f"{fields[5]} holds {address} tentative (duplicate address detection)")
    return found


def _canonical(text: str) -> str:
    """An address as Python writes it (IPv6 compressed, lower case), for comparing with
    the file's; text that is no address is kept as it is."""
    address = parse_address(text)
    return str(address) if address is not None else text


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def wait_until_ready(guests: list[Guest], timeout: float) -> float:
    """Seconds waited. Raises GuestNotReady naming each guest not ready at the deadline."""
    started = time.monotonic()
    pending = {guest.vm.name: guest for guest in guests}
    reasons: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(guests)))) as pool:
        while pending:
            results = dict(zip(pending, pool.map(_not_ready, pending.values()), strict=True))
            reasons = {name: why for name, why in results.items() if why is not None}
            pending = {name: pending[name] for name in reasons}
            if not pending:
                break
            if time.monotonic() - started > timeout:
                lines = "\n".join(f"  {name}: {why}" for name, why in sorted(reasons.items()))
                raise GuestNotReady(f"{len(reasons)} guest(s) not ready after {timeout:.0f} s:\n"
                                    f"{lines}")
            time.sleep(1.0)
    return time.monotonic() - started


# --- the connection -------------------------------------------------------------------


def is_local(uri: str) -> bool:
    """A connection to this machine's own daemon (no host in the URI, not a remote
    transport): its network is the host's, so the host's own pings are the host's."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    return not parts.hostname and transport in ("", "unix")


def find_guests(lab: Lab, conn: Any) -> tuple[list[Guest], list[str]]:
    """The lab's VMs running on the connection, and why each other VM is left out."""
    import libvirt

    guests, left_out = [], []
    for vm in sorted(lab.vms, key=lambda v: v.name):
        name = naming.libvirt_name(lab.name, vm.name)
        try:
            domain = conn.lookupByName(name)
        except libvirt.libvirtError:
            left_out.append(f"{vm.name}: no domain {name} on this connection (deployed?)")
            continue
        if not domain.isActive():
            left_out.append(f"{vm.name}: domain {name} is not running "
                            f"(topoc deploy --start-vms, or virsh start {name})")
            continue
        guests.append(Guest(vm, domain))
    return guests, left_out


# --- probing --------------------------------------------------------------------------


def _alive_in(guest: Guest, addresses: list[str]) -> set[str]:
    if not addresses:
        return set()
    alive: set[str] = set()
    for _ in range(2):  # one retry for the addresses that did not answer
        todo = [a for a in addresses if a not in alive]
        if not todo:
            break
        _, out = guest.run(["sh", "-c", PING_SCRIPT, "ping", *todo])
        alive |= set(out.split()) & set(todo)
    return alive


def _alive_here(addresses: list[str]) -> set[str]:
    if not addresses:
        return set()
    if shutil.which("ping") is None:
        raise VerifyError("the host's pings need `ping` (apt-get install iputils-ping)")
    alive: set[str] = set()
    for _ in range(2):
        todo = [a for a in addresses if a not in alive]
        if not todo:
            break
        result = subprocess.run(["sh", "-c", PING_SCRIPT, "ping", *todo], capture_output=True,
                                text=True, timeout=EXEC_TIMEOUT_S, check=False)
        alive |= set(result.stdout.split()) & set(todo)
    return alive


def _probe_forward(listener: Guest, client: Guest, forward: Forward, target: str) -> bool:
    pid = listener.start(["sh", "-c", LISTEN_SCRIPT, "listen", str(FORWARD_LISTEN_S),
                          str(forward.vm_port)])
    listening, _ = listener.run(["sh", "-c", LISTENING_SCRIPT, "listening",
                                 f"{forward.vm_port:04X}"])
    if listening != 0:
        listener.wait(pid, FORWARD_LISTEN_S + EXEC_TIMEOUT_S)
        raise VerifyError(f"{listener.vm.name}: could not listen on tcp/{forward.vm_port} "
                          "for the forward probe (does the guest have nc and timeout?)")
    _, out = client.run(["sh", "-c", CONNECT_SCRIPT, "connect", target, str(forward.port)])
    # The next probe of this forward listens on the same port: this listener must be gone.
    listener.wait(pid, FORWARD_LISTEN_S + EXEC_TIMEOUT_S)
    return "topoc" in out


@dataclass
class Coverage:
    """Which sources this run can probe from."""

    guests: dict[str, Guest]
    host: str | None  # the host node whose pings this machine sends, if any
    notes: list[str] = field(default_factory=list)


def coverage(lab: Lab, guests: list[Guest], uri: str) -> Coverage:
    host = None
    if is_local(uri) and len(lab.hosts) == 1:
        host = lab.hosts[0].name
    notes = ["probed from inside the guests through the QEMU guest agent (guest-exec)"]
    if host is not None:
        notes.append(f"pairs from {host} into the VMs: pinged from this machine "
                     "(the connection is local)")
    else:
        notes.append("pairs from the hosts: not probed (a remote connection, or several "
                     "hosts: this machine cannot speak for them)")
    if lab.externals:
        notes.append("pairs from external nodes: not probed (they run no guest agent)")
    return Coverage({g.vm.name: g for g in guests}, host, notes)


def _ping_matrix(lab: Lab, cover: Coverage) -> tuple[list[Observation], list[tuple[str, str]]]:
    """Every address of both families in the same run (one ping script per source);
    the observations compared family by family with reach's matrix of that family, as
    `topoc verify` does (an IPv4-only lab: one matrix, no family, as before)."""
    from topoc.model.reach import predict_by_family
    from topoc.model.topology import node_addresses

    an = Analysis(lab)  # one topology and engine for every question below
    matrices = predict_by_family(an)
    dual = [m.family for m in matrices] != [IPV4]
    names = [node.name for node in lab.nodes]
    by_family = {(name, m.family): [str(a) for a in node_addresses(an, name, m.family)]
                 for name in names for m in matrices}
    addresses = {name: [a for m in matrices for a in by_family[(name, m.family)]] for name in names}
    vm_names = {vm.name for vm in lab.vms}

    def targets(src: str) -> list[str]:
        wanted = [d for d in names if d != src and (src != cover.host or d in vm_names)]
        return sorted({a for d in wanted for a in addresses[d]}, key=address_order)

    def probe(src: str) -> set[str]:
        if src == cover.host:
            return _alive_here(targets(src))
        return _alive_in(cover.guests[src], targets(src))

    sources = [n for n in names if n in cover.guests or n == cover.host]
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(sources)))) as pool:
        alive = dict(zip(sources, pool.map(probe, sources), strict=True))
    observations: list[Observation] = []
    not_probed: list[tuple[str, str]] = []
    for matrix in matrices:
        for src in names:
            for dst in names:
                if dst == src:
                    continue
                if src not in alive or (src == cover.host and dst not in vm_names):
                    if (src, dst) not in not_probed:
                        not_probed.append((src, dst))
                    continue
                wanted = by_family[(dst, matrix.family)]
                failed = tuple(a for a in wanted if a not in alive[src])
                observed = bool(wanted) and not failed
                observations.append(Observation(src, dst, matrix.get(src, dst).reachable, observed,
                                                tuple(wanted), failed,
                                                family=matrix.family if dual else None))
    return observations, not_probed


def _forward_checks(lab: Lab, cover: Coverage
                    ) -> tuple[list[ForwardObservation], list[tuple[Forward, str]]]:
    """Every forward from every VM source, in each family the lab uses."""
    from topoc.model.reach import forward_reach, forward_target

    an = Analysis(lab)
    families: tuple[Family, ...] = an.families or (IPV4,)
    dual = families != (IPV4,)
    observations, not_probed = [], []
    for family in families:
        for forward, src, predicted in forward_reach(an, family):
            address = forward_target(lab, forward, src, family)
            if address is None:
                continue
            listener, client = cover.guests.get(forward.vm), cover.guests.get(src)
            if listener is None or client is None or forward.protocol != "tcp":
                if (forward, src) not in not_probed:
                    not_probed.append((forward, src))
                continue
            observed = _probe_forward(listener, client, forward, str(address))
            shown = f"[{address}]" if family is IPV6 else str(address)
            observations.append(ForwardObservation(forward, src, f"{shown}:{forward.port}",
                                                   predicted, observed,
                                                   family=family if dual else None))
    return observations, not_probed


def verify_live(lab: Lab, conn: Any, uri: str, timeout: float = READY_TIMEOUT_S) -> Report:
    """Wait for the guests, probe, and report against the prediction."""
    started = time.monotonic()
    guests, left_out = find_guests(lab, conn)
    if left_out and not guests:
        raise GuestNotReady("no guest of the lab is running on this connection:\n"
                            + "\n".join(f"  {line}" for line in left_out))
    waited = wait_until_ready(guests, timeout)
    cover = coverage(lab, guests, uri)
    pairs, pairs_not_probed = _ping_matrix(lab, cover)
    forwards, forwards_not_probed = _forward_checks(lab, cover)
    report = Report(lab.name, pairs, forwards, not_probed=pairs_not_probed,
                    forwards_not_probed=forwards_not_probed,
                    where=f"inside the running guests ({uri})")
    report.notes.extend(cover.notes)
    report.notes.extend(f"not probed: {line}" for line in left_out)
    if any(f.protocol != "tcp" for f, _ in forwards_not_probed):
        report.notes.append("UDP forwards: not probed (the guests' nc may lack UDP)")
    report.notes.append(f"{len(guests)} guests ready after {waited:.1f} s; "
                        f"{time.monotonic() - started:.1f} s in all")
    return report
