"""`topoc verify --live` on real guests: three tiny guests (tests/guests/tiny.py, Debian's
kernel and a busybox initramfs running qemu-guest-agent) boot under QEMU/TCG on a
sandboxed libvirtd, on a NAT and an isolated network defined from topoc's own network
XML; `verify --live` agrees with `topoc reach` on every pair.

STAND-IN until the language has `kernel`/`initrd`/`image` and the cloud-init backend:
the test attaches the direct kernel boot, the NoCloud seed and the agent channel to
topoc's domain XML itself (tests/guests/standin.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT, require_tool
from libvirtd_fixture import Libvirtd, libvirtd_tcg  # noqa: F401  (fixture)
from topoc.compiler import compile_file

LAB = ROOT / "tests/guests/livelab.topo"
BOOT_TIMEOUT_S = 90.0


@pytest.fixture(scope="session")
def tiny_guest():
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "ldd"):
        require_tool(tool)
    from guests import tiny

    return tiny.ensure()


def _host_as_the_file_says(daemon: Libvirtd, lab) -> None:
    """The sandbox's network namespace is the host: give it the host's nic and address
    (a veth, the kernel here has no dummy links), as on the machine the file describes."""
    (host,) = lab.hosts
    for nic in host.nics:
        daemon.run("ip", "link", "add", nic.name, "type", "veth", "peer", "name", f"{nic.name}p")
        daemon.run("ip", "link", "set", f"{nic.name}p", "up")
        daemon.run("ip", "addr", "add", str(nic.address), "dev", nic.name)
        daemon.run("ip", "link", "set", nic.name, "up")


@pytest.fixture(scope="module")
def running_lab(libvirtd_tcg: Libvirtd, tiny_guest, tmp_path_factory) -> Iterator[tuple]:  # noqa: F811
    import libvirt

    from guests import standin
    from topoc.backends import libvirt as backend

    lab = compile_file(str(LAB)).lab
    assert lab is not None
    work = tmp_path_factory.mktemp("live")
    _host_as_the_file_says(libvirtd_tcg, lab)
    conn = libvirt.open(libvirtd_tcg.uri)
    try:
        for network in backend.managed_networks(lab):
            conn.networkDefineXML(backend.network_xml(lab, network)).create()
        started = time.monotonic()
        for vm in lab.vms:
            seed = standin.seed_iso(work / f"{vm.name}-seed.iso", vm.name,
                                    standin.network_config(lab, vm))
            xml = standin.bootable(backend.domain_xml(lab, vm), tiny_guest.kernel,
                                   tiny_guest.initrd, tiny_guest.cmdline, seed,
                                   serial_log=work / f"{vm.name}.console.log")
            conn.defineXML(xml).create()
        yield libvirtd_tcg, lab, work, started
    finally:
        conn.close()


def _topoc(daemon: Libvirtd, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """topoc run in the sandbox's network namespace (the host's network): a local URI."""
    return subprocess.run(["nsenter", "-t", str(daemon.init_pid), "-n",
                           sys.executable, "-m", "topoc", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1"}, check=False)


def _consoles(work: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                     for p in sorted(work.glob("*.console.log")))


def test_verify_live_agrees_with_reach_on_every_pair(running_lab):
    daemon, _, work, started = running_lab
    proc = _topoc(daemon, "verify", "--live", "--connect", daemon.uri, "--format", "json",
                  "--timeout", str(BOOT_TIMEOUT_S), str(LAB))
    assert proc.returncode == 0, proc.stdout + proc.stderr + _consoles(work)
    print(f"three guests booted and verified {time.monotonic() - started:.1f} s after start")
    live = json.loads(proc.stdout)
    reach = json.loads(subprocess.run([sys.executable, "-m", "topoc", "reach", "--format", "json",
                                       str(LAB)], capture_output=True, text=True, check=True).stdout)
    predicted = {(p["src"], p["dst"]): p["reachable"] for p in reach["pairs"]}
    observed = {(p["src"], p["dst"]): p["observed"] for p in live["pairs"]}
    # Every pair is probed: from each VM through its agent, from the host (a local
    # connection) into each VM; the lab has no external node.
    assert set(observed) == set(predicted)
    assert observed == predicted
    assert live["mismatches"] == 0
    assert live["not_probed"]["pairs"] == []
    # The forward, from each VM (closed from both: a reaches the host from its own
    # network, which the DNAT leaves alone; c is isolated); not from the host itself.
    assert {(f["src"], f["predicted"], f["observed"]) for f in live["forwards"]} == {
        ("a", False, False), ("c", False, False)}
    assert [f["src"] for f in live["not_probed"]["forwards"]] == ["kvm1"]
    # Both outcomes occur, so agreement is not trivial.
    assert predicted[("a", "c")] and not predicted[("b", "c")]


def test_a_broken_guest_is_a_mismatch_in_the_text_report(running_lab):
    """Take a's nic on the isolated network down from inside the guest: verify --live
    reports exactly a -> c as predicted but not observed, explained, and exits 1."""
    import libvirt

    from topoc.verify import live

    daemon, lab, work, _ = running_lab
    conn = libvirt.open(daemon.uri)
    try:
        (a,) = [g for g in live.find_guests(lab, conn)[0] if g.vm.name == "a"]
        live.wait_until_ready([a], BOOT_TIMEOUT_S)
        assert a.run(["ip", "link", "set", "eth1", "down"])[0] == 0
        try:
            proc = _topoc(daemon, "verify", "--live", "--connect", daemon.uri,
                          "--timeout", str(BOOT_TIMEOUT_S), str(LAB))
        finally:
            assert a.run(["ip", "link", "set", "eth1", "up"])[0] == 0
    finally:
        conn.close()
    assert proc.returncode == 1, proc.stdout + proc.stderr + _consoles(work)
    assert "predicted against observed inside the running guests" in proc.stdout
    assert "guest agent" in proc.stdout and "pinged from this machine" in proc.stdout
    assert "mismatch: a -> c: predicted reachable, observed unreachable " \
           "(no answer from 10.77.2.3)" in proc.stdout
    assert proc.stdout.count("mismatch:") == 1
    assert "13 of 14 checks agree; 1 mismatch" in proc.stdout


def test_the_forward_probe_sees_an_open_port_and_a_closed_one(running_lab):
    """The probe itself, on a port that is open (a connects to b's own address and the
    listener's port) and one that is not (c, on the isolated network, cannot get there)."""
    import dataclasses

    import libvirt

    from topoc.verify import live

    daemon, lab, work, _ = running_lab
    conn = libvirt.open(daemon.uri)
    try:
        guests, left_out = live.find_guests(lab, conn)
        assert left_out == []
        live.wait_until_ready(guests, BOOT_TIMEOUT_S)
        by_name = {guest.vm.name: guest for guest in guests}
        (forward,) = lab.forwards
        direct = dataclasses.replace(forward, port=forward.vm_port)
        assert live._probe_forward(by_name["b"], by_name["a"], direct, "10.77.1.3"), _consoles(work)
        assert not live._probe_forward(by_name["b"], by_name["c"], direct, "10.77.1.3")
    finally:
        conn.close()


def test_a_guest_without_the_files_address_is_named(running_lab, tmp_path):
    """The file says b has 10.77.1.9; the running b has 10.77.1.3: verify waits, then
    names b and what it lacks, and probes nothing (exit 2)."""
    daemon, _, _, _ = running_lab
    changed = tmp_path / "livelab.topo"
    changed.write_text(LAB.read_text().replace("address 10.77.1.3", "address 10.77.1.9"))
    proc = _topoc(daemon, "verify", "--live", "--connect", daemon.uri, "--timeout", "2",
                  str(changed))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "1 guest(s) not ready" in proc.stderr
    assert "b: eth0 lacks 10.77.1.9" in proc.stderr


def test_a_remote_looking_uri_leaves_the_host_pairs_unprobed():
    from topoc.verify.live import is_local

    assert is_local("qemu:///system") and is_local("qemu:///system?socket=/run/x")
    assert is_local("qemu+unix:///system")
    assert not is_local("qemu+ssh://root@kvm2/system") and not is_local("qemu+tcp://kvm2/system")


def test_unprobed_pairs_are_marked_and_never_counted():
    """The report's rendering: a pair nobody could probe shows `?` and is listed as such
    in the JSON, outside the pairs and the count of checks."""
    from topoc.verify.report import Observation, Report, render_json, render_text

    lab = compile_file(str(LAB)).lab
    (forward,) = lab.forwards
    report = Report("live", [Observation("a", "b", True, True, ("10.77.1.3",), ())], [],
                    not_probed=[("kvm1", "b")], forwards_not_probed=[(forward, "kvm1")],
                    where="inside the running guests (qemu:///system)")
    text = render_text(report, lab)
    assert "predicted against observed inside the running guests (qemu:///system)" in text
    rows = {line.split()[1]: line.split()[2:] for line in text.splitlines()
            if line[:2].strip().isdigit() and len(line.split()) > 2}
    assert rows["kvm1"][2] == "?" and rows["a"][2] == "✓"
    assert "? not probed" in text
    assert "forward tcp 2222 -> b:22 from kvm1: not probed" in text
    assert "1 of 1 checks agree; 0 mismatches" in text
    document = render_json(report)
    assert document["not_probed"] == {
        "pairs": [{"src": "kvm1", "dst": "b"}],
        "forwards": [{"protocol": "tcp", "port": 2222, "vm": "b", "vm_port": 22, "src": "kvm1"}]}
    assert [(p["src"], p["dst"]) for p in document["pairs"]] == [("a", "b")]


NETWORK_CONFIG = """\
network:
  version: 2
  ethernets:
    id0:                       # block style, quoted MAC in capitals
      match:
        macaddress: "52:54:00:AA:bb:01"
      set-name: eth0
      addresses:
        - 10.0.0.2/24
        - '10.0.1.2/24'
      routes:
        - to: 0.0.0.0/0
          via: 10.0.0.1
        - to: 172.16.0.0/12
          via: 10.0.1.1
      nameservers:
        addresses:
          - 10.0.0.1
    id1:
      match: {macaddress: 52:54:00:aa:bb:02}
      set-name: eth1
      dhcp4: true
    eth2:
      match:
        macaddress: '52:54:00:aa:bb:03'
      addresses: [192.168.5.5/24, "192.168.6.5/24"]
      gateway4: 192.168.5.1
      routes:
        - {to: default, via: 192.168.5.254}
      nameservers: {addresses: [1.1.1.1], search: [lab]}
"""


def test_the_tiny_guests_network_config_reader(tiny_guest, tmp_path):
    """tests/guests/netconfig.awk, run by the guest's own busybox awk: block and flow
    style, the `network:` wrapper, quoting, comments, routes, gateway4, dhcp4, DNS."""
    from guests import standin

    reader = ROOT / "tests/guests/netconfig.awk"
    source = tmp_path / "network-config"
    source.write_text(NETWORK_CONFIG)

    def read() -> list[str]:
        return subprocess.run([str(tiny_guest.busybox), "awk", "-f", str(reader), str(source)],
                              capture_output=True, text=True, check=True).stdout.splitlines()

    assert read() == [
        "nic 52:54:00:aa:bb:01 eth0", "addr eth0 10.0.0.2/24", "addr eth0 10.0.1.2/24",
        "nic 52:54:00:aa:bb:02 eth1", "dhcp eth1",
        "nic 52:54:00:aa:bb:03 eth2", "addr eth2 192.168.5.5/24", "addr eth2 192.168.6.5/24",
        "route eth0 default 10.0.0.1", "route eth0 172.16.0.0/12 10.0.1.1",
        "route eth2 default 192.168.5.1", "route eth2 default 192.168.5.254",
        "dns 10.0.0.1", "dns 1.1.1.1"]
    lab = compile_file(str(LAB)).lab
    source.write_text(standin.network_config(lab, lab.node("a")))
    mac0, mac1 = (nic.mac for nic in lab.node("a").nics)
    assert read() == [f"nic {mac0} eth0", "addr eth0 10.77.1.2/24",
                      f"nic {mac1} eth1", "addr eth1 10.77.2.2/24",
                      "route eth0 default 10.77.1.1"]


DUAL_STACK_GUESTS = """\
lab livesix
host kvm1 {
}
network iso1 on kvm1 {
    mode isolated
    subnet 10.30.0.0/24
    subnet fd00:30::/64
}
network iso2 on kvm1 {
    mode isolated
    subnet 10.31.0.0/24
    subnet fd00:31::/64
}
vm a on kvm1 {
    nic eth0 on iso1 address 10.30.0.10 address fd00:30::10
}
vm b on kvm1 {
    nic eth0 on iso1 address 10.30.0.11 address fd00:30::11
}
vm c on kvm1 {
    nic eth0 on iso2 address 10.31.0.10 address fd00:31::10
}
"""


def test_live_pings_both_families_and_reports_each_on_its_own(verify_environment):
    """The live run's ping script and per-family matrix, with network namespaces for
    guests (`topoc verify`'s rig, kept up): each "guest" runs the script with the real
    `ping` (-6 for IPv6 targets), and every VM pair agrees with reach in both families."""
    from topoc.compiler import compile_source
    from topoc.model.family import FAMILIES
    from topoc.verify import live
    from topoc.verify.netns import Session

    class NamespaceGuest(live.Guest):
        """A guest whose commands run in its namespace instead of through an agent."""

        def run(self, argv: list[str], timeout: float = live.EXEC_TIMEOUT_S) -> tuple[int, str]:
            result = subprocess.run(["ip", "netns", "exec", namespace[self.vm.name], *argv],
                                    capture_output=True, text=True, timeout=timeout, check=False)
            return result.returncode, result.stdout

    require_tool("ping")
    result = compile_source(DUAL_STACK_GUESTS, "livesix.topo")
    lab = result.lab
    assert lab is not None and result.analysis is not None
    session = Session(lab, analysis=result.analysis)
    with session as rig:
        namespace = {vm.name: rig.node_ns(vm.name) for vm in lab.vms}
        guests = [NamespaceGuest(vm, None) for vm in lab.vms]
        cover = live.coverage(lab, guests, "qemu+ssh://kvm1/system")
        pairs, not_probed = live._ping_matrix(lab, cover)
    assert {o.family for o in pairs} == set(FAMILIES)
    assert [(o.family, o.src, o.dst) for o in pairs if not o.agrees] == []
    by_pair = {(o.family, o.src, o.dst): o for o in pairs}
    for family in FAMILIES:
        assert by_pair[(family, "a", "b")].observed is True
        assert by_pair[(family, "a", "c")].observed is False
    assert by_pair[(FAMILIES[1], "a", "b")].addresses == ("fd00:30::11",)
    # The host runs no agent: its pairs are not probed, listed once for both families.
    assert sorted(not_probed) == sorted({("kvm1", vm.name) for vm in lab.vms})


def test_a_tentative_ipv6_address_keeps_the_guest_not_ready(verify_environment):
    """An IPv6 address answers nothing while duplicate address detection runs: the live
    run's readiness reads /proc/net/if_inet6 in the guest and waits it out. Here the
    "guest" is a namespace with an address added without nodad."""
    from conftest import VERIFY_PREFIX
    from topoc.compiler import compile_source
    from topoc.verify import live

    result = compile_source(DUAL_STACK_GUESTS, "livesix.topo")
    assert result.lab is not None
    vm = result.lab.node("a")
    namespace = f"{VERIFY_PREFIX}dad"

    class NamespaceGuest(live.Guest):
        def run(self, argv: list[str], timeout: float = live.EXEC_TIMEOUT_S) -> tuple[int, str]:
            done = subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=True,
                                  text=True, timeout=timeout, check=False)
            return done.returncode, done.stdout

    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        for command in (["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"],
                        ["link", "set", "peer0", "up"], ["link", "set", "eth0", "up"],
                        ["-6", "addr", "add", "fd00:30::10/64", "dev", "eth0"]):
            subprocess.run(["ip", "-n", namespace, *command], check=True)
        guest = NamespaceGuest(vm, None)
        assert live._tentative(guest) == ["eth0 holds fd00:30::10 tentative (duplicate address detection)"]
        deadline = time.monotonic() + 10
        while live._tentative(guest) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert live._tentative(guest) == []
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
