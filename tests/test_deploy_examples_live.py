"""`topoc deploy --start-vms` of the examples on a real libvirtd that boots guests
(tests/libvirtd_fixture.py's `libvirtd_tcg`, QEMU/TCG), with the tiny test guest
(tests/guests/tiny.py) as every VM: the guests come up with the file's addresses,
`topoc verify --live` agrees with `topoc reach` on every pair it probes, and
`topoc destroy` leaves no domain, network, volume, pool or nft table behind.

The example is copied and each VM block gets the tiny guest's `kernel`, `initrd`,
`cmdline` and 128 MiB of memory instead of its disk (the examples stay as they are).
topoc runs in the daemon's network and mount namespaces (nsenter), as on the machine
the file describes: its local URI makes deploy load the lab's nft table there, never
in this machine's own firewall."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, require_tool
from libvirtd_fixture import Libvirtd, libvirtd_tcg  # noqa: F401  (fixture)

from topoc.backends.host import table_name
from topoc.compiler import compile_file

BOOT_TIMEOUT_S = 120.0


@pytest.fixture(scope="session")
def tiny_guest():
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "ldd", "nft"):
        require_tool(tool)
    pytest.importorskip("pycdlib")
    from guests import tiny

    return tiny.ensure()


def bootable_copy(example: Path, dest: Path, guest) -> Path:
    """The example with each VM booting the tiny guest: kernel, initrd, cmdline and
    128 MiB instead of its `disk`/`image` and memory."""
    out: list[str] = []
    in_vm = False
    for line in example.read_text().splitlines():
        stripped = line.strip()
        if re.match(r"vm\s+\S+.*\{\s*(#.*)?$", stripped):
            in_vm = True
            out += [line, "    memory 128MiB", f"    kernel {guest.kernel}",
                    f"    initrd {guest.initrd}", f'    cmdline "{guest.cmdline}"']
            continue
        if in_vm and re.match(r"(memory|disk|image|kernel|initrd|cmdline)\b", stripped):
            continue
        if in_vm and stripped.startswith("}"):
            in_vm = False
        out.append(line)
    copy = dest / example.name
    copy.write_text("\n".join(out) + "\n")
    return copy


def _in_net(pid: str, *command: str) -> None:
    """A command in the network namespace of process `pid` (this machine's /proc)."""
    subprocess.run(["nsenter", "-t", pid, "-n", *command], capture_output=True, check=True, timeout=10)


def _host_as_the_file_says(daemon: Libvirtd, lab, stack: contextlib.ExitStack) -> None:
    """The daemon's network namespace is the host: give it the host's nics and addresses
    (veths onto one bridge per external network), and put each external machine, in a
    network namespace of its own, on the same bridge with its address and gateway."""
    bridges: dict[str, str] = {}

    def bridge(network: str) -> str:
        if network not in bridges:
            bridges[network] = f"xb{len(bridges)}"
            daemon.run("ip", "link", "add", bridges[network], "type", "bridge")
            daemon.run("ip", "link", "set", bridges[network], "up")
            stack.callback(daemon.run, "ip", "link", "del", bridges[network])
        return bridges[network]

    for host in lab.hosts:
        for nic in host.nics:
            daemon.run("ip", "link", "add", nic.name, "type", "veth", "peer", "name", f"{nic.name}p")
            # The daemon outlives the test (one per module): the next example's host
            # has nics of the same names.
            stack.callback(daemon.run, "ip", "link", "del", nic.name)
            daemon.run("ip", "link", "set", f"{nic.name}p", "master", bridge(nic.network), "up")
            if nic.address is not None:
                daemon.run("ip", "addr", "add", str(nic.address), "dev", nic.name)
            daemon.run("ip", "link", "set", nic.name, "up")
    for index, external in enumerate(lab.externals):
        # A network namespace held by a sleeping process (`ip netns add` needs a
        # shared /run, which the daemon's namespace does not have); killed at the end.
        holder = subprocess.Popen(["nsenter", "-t", str(daemon.init_pid), "-n", "-m",
                                   "unshare", "--net", "sleep", "900"])
        stack.callback(holder.wait)
        stack.callback(holder.kill)
        for _ in range(100):
            if os.readlink(f"/proc/{holder.pid}/ns/net") != daemon.net_namespace():
                break
            time.sleep(0.02)
        ns = str(holder.pid)
        _in_net(ns, "ip", "link", "set", "lo", "up")
        for n, nic in enumerate(external.nics):
            if nic.address is None or nic.network not in bridges:
                continue
            inside, outside = f"x{index}n{n}", f"x{index}n{n}p"
            daemon.run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            daemon.run("ip", "link", "set", outside, "master", bridges[nic.network], "up")
            _in_net(str(daemon.init_pid), "ip", "link", "set", inside, "netns", ns)
            _in_net(ns, "ip", "addr", "add", str(nic.address), "dev", inside)
            _in_net(ns, "ip", "link", "set", inside, "up")
            if nic.gateway is not None:
                # Off the network is on-link here (no router stands at the gateway's
                # address): replies to the host's NATed address go straight to it.
                _in_net(ns, "ip", "route", "add", "default", "dev", inside)
        for route in external.routes:
            # The external's own routes as the file states them (e.g. back to a routed
            # network through the host).
            _in_net(ns, "ip", "route", "replace", str(route.destination), "via", str(route.via))


def _topoc(daemon: Libvirtd, state: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """topoc in the daemon's network and mount namespaces (the host): a local URI."""
    return subprocess.run(["nsenter", "-t", str(daemon.init_pid), "-n", "-m",
                           sys.executable, "-m", "topoc", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1", "TOPOC_STATE_DIR": str(state)},
                          check=False)


def _consoles(daemon: Libvirtd) -> str:
    logs = sorted((daemon.root / "log" / "qemu").glob("*.log"))
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in logs)


def _machine_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


@pytest.mark.parametrize("example", ["nat.topo", "isolated.topo", "routed-masquerade.topo",
                                     "hostonly.topo", "mixed.topo"])
def test_deploy_boot_verify_destroy(example, libvirtd_tcg, tiny_guest, tmp_path):  # noqa: F811
    daemon = libvirtd_tcg
    started = time.monotonic()
    topo = bootable_copy(ROOT / "examples" / example, tmp_path, tiny_guest)
    lab = compile_file(str(topo)).lab
    assert lab is not None, topo.read_text()
    stack = contextlib.ExitStack()
    with stack:
        _host_as_the_file_says(daemon, lab, stack)
        _deploy_verify_destroy(example, daemon, lab, topo, tmp_path, started)


def _deploy_verify_destroy(example: str, daemon: Libvirtd, lab, topo: Path, tmp_path: Path,
                           started: float) -> None:
    state = tmp_path / "state"
    machine_before = _machine_tables()

    deploy = _topoc(daemon, state, "deploy", str(topo), "--connect", daemon.uri, "--start-vms")
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr + _consoles(daemon)
    deployed = time.monotonic()
    try:
        _running_then_verified(example, daemon, lab, topo, state, started, deployed, machine_before)
    finally:
        destroy = _topoc(daemon, state, "destroy", str(topo), "--connect", daemon.uri)
    assert destroy.returncode == 0, destroy.stdout + destroy.stderr
    _nothing_left(daemon, lab, machine_before)


def _running_then_verified(example: str, daemon: Libvirtd, lab, topo: Path, state: Path, started: float,
                           deployed: float, machine_before: str) -> None:
    import libvirt

    # What destroy must remove is there: the lab's pool with each VM's seed volume, and
    # (a lab with forwards) its nft table, in the daemon's namespace, not this machine's.
    conn = libvirt.open(daemon.uri)
    try:
        pool = conn.storagePoolLookupByName(f"{lab.name}-images")
        pool.refresh(0)
        assert len(pool.listAllVolumes(0)) >= len(lab.vms)
        assert len(conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)) == len(lab.vms)
    finally:
        conn.close()
    if lab.forwards:
        assert table_name(lab) in daemon.run("nft", "list", "tables")
    assert table_name(lab) not in _machine_tables()
    live = _topoc(daemon, state, "verify", "--live", "--connect", daemon.uri, "--format", "json",
                  "--timeout", str(BOOT_TIMEOUT_S), str(topo))
    assert live.returncode == 0, live.stdout + live.stderr + _consoles(daemon)
    verified = time.monotonic()
    report = json.loads(live.stdout)
    reach = json.loads(subprocess.run([sys.executable, "-m", "topoc", "reach", "--format", "json",
                                       str(topo)], capture_output=True, text=True, check=True).stdout)
    predicted = {(p["src"], p["dst"]): p["reachable"] for p in reach["pairs"]}
    observed: dict[tuple[str, str], bool] = {}  # a dual-stack lab's pairs: every family's
    for p in report["pairs"]:
        observed[(p["src"], p["dst"])] = observed.get((p["src"], p["dst"]), True) and p["observed"]
    assert report["mismatches"] == 0
    assert observed, "verify --live probed nothing"
    assert {k: predicted[k] for k in observed} == observed
    # Every pair between the lab's VMs and its host is probed (only the pairs from an
    # external machine are not: nothing runs commands there).
    inside = {vm.name for vm in lab.vms} | {host.name for host in lab.hosts}
    assert {k for k in predicted if k[0] in inside and k[1] in inside} <= set(observed)

    # Each guest has the file's addresses, as its agent reports them.
    from topoc.verify import live as livemod
    conn = libvirt.open(daemon.uri)
    try:
        guests, left_out = livemod.find_guests(lab, conn)
        assert left_out == []
        livemod.wait_until_ready(guests, BOOT_TIMEOUT_S)
        for guest in guests:
            for nic in guest.vm.nics:
                if nic.address is None:
                    continue
                code, out = guest.run(["ip", "-4", "-o", "addr", "show", "dev", nic.name])
                assert code == 0 and str(nic.address) in out, (guest.vm.name, nic.name, out)
    finally:
        conn.close()
    assert _machine_tables() == machine_before
    print(f"{example}: deployed in {deployed - started:.1f} s, guests booted and verified "
          f"{verified - deployed:.1f} s later")


def _nothing_left(daemon: Libvirtd, lab, machine_before: str) -> None:
    """After destroy: no domain, no network (but libvirt's own `default`), not the lab's
    pool (so none of its volumes), no nft table; this machine's tables as they were."""
    import libvirt

    conn = libvirt.open(daemon.uri)
    try:
        assert conn.listAllDomains(0) == []
        assert [n.name() for n in conn.listAllNetworks(0) if n.name() != "default"] == []
        assert [p.name() for p in conn.listAllStoragePools(0) if p.name().startswith(f"{lab.name}-")] == []
    finally:
        conn.close()
    tables = daemon.run("nft", "list", "tables")
    assert table_name(lab) not in tables, tables
    assert _machine_tables() == machine_before
