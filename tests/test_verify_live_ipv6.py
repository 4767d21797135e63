"""`topoc verify --live` on a dual-stack lab (tests/guests/livelab6.topo): three tiny
guests under QEMU/TCG on a sandboxed libvirtd, on topoc's own network XML with an IPv6
address on the NAT network and an IPv6 prefix on the isolated one. The guests ping
both families through their agents (`ping -6` for IPv6) and the report agrees with
`topoc reach`'s matrix of each family. The same STAND-IN boot as tests/test_verify_live.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Iterator

import pytest

from conftest import ROOT
from libvirtd_fixture import Libvirtd, libvirtd_tcg  # noqa: F401  (fixture)
from test_verify_live import BOOT_TIMEOUT_S, _consoles, _host_as_the_file_says, _topoc, tiny_guest  # noqa: F401
from topoc.compiler import compile_file

LAB = ROOT / "tests/guests/livelab6.topo"


@pytest.fixture(scope="module")
def running_lab6(libvirtd_tcg: Libvirtd, tiny_guest, tmp_path_factory) -> Iterator[tuple]:  # noqa: F811
    import libvirt

    from guests import standin
    from topoc.backends import libvirt as backend

    lab = compile_file(str(LAB)).lab
    assert lab is not None
    work = tmp_path_factory.mktemp("live6")
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


def test_verify_live_agrees_with_reach_in_both_families(running_lab6):
    daemon, lab, work, started = running_lab6
    proc = _topoc(daemon, "verify", "--live", "--connect", daemon.uri, "--format", "json",
                  "--timeout", str(BOOT_TIMEOUT_S), str(LAB))
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr + _consoles(work)
    print(f"three dual-stack guests booted and verified {time.monotonic() - started:.1f} s after start")
    live = json.loads(proc.stdout)
    reach = json.loads(subprocess.run([sys.executable, "-m", "topoc", "reach", "--format", "json",
                                       str(LAB)], capture_output=True, text=True, check=True).stdout)
    wrong = [(p["family"], p["src"], p["dst"], p["predicted"], p["observed"])
             for p in live["pairs"] if p["predicted"] != p["observed"]]
    assert wrong == [], _consoles(work)
    assert live["mismatches"] == 0
    for family in ("IPv4", "IPv6"):
        predicted = {(p["src"], p["dst"]): p["reachable"] for p in reach["families"][family]["pairs"]}
        observed = {(p["src"], p["dst"]): p["observed"] for p in live["pairs"] if p["family"] == family}
        # Every pair is probed: from each VM through its agent, from the host (a local
        # connection) into each VM; the lab has no external node.
        assert observed == predicted, family
        # Both outcomes occur in each family.
        assert predicted[("a", "c")] and not predicted[("b", "c")], family
    assert live["not_probed"]["pairs"] == []
