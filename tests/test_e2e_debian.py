"""`make e2e`: the lab of tests/guests/livelab.topo booted as Debian cloud-init guests
(tests/guests/debian.py) on the sandboxed libvirtd under QEMU/TCG, configured by cloud-init
from a NoCloud seed, and `topoc verify --live` agrees with `topoc reach`.

Slow (a Debian image build the first time, then about a minute of boots), so `make test`
does not collect it (tests/conftest.py); `make e2e` sets TOPOC_E2E=1.

STAND-IN until the language has `image`/`kernel`/`initrd` and deploy makes overlays and
seeds: the test makes each guest's qcow2 overlay and seed, and attaches them, the kernel
and the agent channel to topoc's domain XML itself (tests/guests/standin.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import ROOT, require_tool
from libvirtd_fixture import Libvirtd, libvirtd_tcg  # noqa: F401  (fixture)
from test_verify_live import LAB, _consoles, _host_as_the_file_says, _topoc
from topoc.compiler import compile_file

MEMORY_MIB = 256
BOOT_TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def debian_guest():
    for tool in ("mmdebstrap", "mke2fs", "qemu-img"):
        require_tool(tool)
    from guests import debian

    started = time.monotonic()
    guest = debian.ensure()
    print(f"Debian guest image ready in {time.monotonic() - started:.1f} s: {guest.image.parent}")
    return guest


def test_debian_guests_agree_with_reach(libvirtd_tcg: Libvirtd, debian_guest, tmp_path):  # noqa: F811
    import libvirt

    from guests import standin
    from topoc.backends import libvirt as backend

    lab = compile_file(str(LAB)).lab
    assert lab is not None
    _host_as_the_file_says(libvirtd_tcg, lab)
    conn = libvirt.open(libvirtd_tcg.uri)
    try:
        for network in backend.managed_networks(lab):
            conn.networkDefineXML(backend.network_xml(lab, network)).create()
        started = time.monotonic()
        for vm in lab.vms:
            overlay = tmp_path / f"{vm.name}.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                            str(debian_guest.image), str(overlay)], check=True)
            seed = standin.seed_iso(tmp_path / f"{vm.name}-seed.iso", vm.name,
                                    standin.network_config(lab, vm))
            xml = standin.bootable(backend.domain_xml(lab, vm), debian_guest.kernel,
                                   debian_guest.initrd, debian_guest.cmdline, seed,
                                   memory_mib=MEMORY_MIB, disk=overlay,
                                   serial_log=tmp_path / f"{vm.name}.console.log")
            conn.defineXML(xml).create()
        proc = _topoc(libvirtd_tcg, "verify", "--live", "--connect", libvirtd_tcg.uri,
                      "--format", "json", "--timeout", str(BOOT_TIMEOUT_S), str(LAB),
                      timeout=BOOT_TIMEOUT_S + 120)
        print(f"three Debian guests booted and verified in {time.monotonic() - started:.1f} s")
        assert proc.returncode == 0, proc.stdout + proc.stderr + _consoles(tmp_path)
        live = json.loads(proc.stdout)
        reach = json.loads(subprocess.run(
            [sys.executable, "-m", "topoc", "reach", "--format", "json", str(LAB)],
            capture_output=True, text=True, check=True, cwd=ROOT).stdout)
        predicted = {(p["src"], p["dst"]): p["reachable"] for p in reach["pairs"]}
        assert {(p["src"], p["dst"]): p["observed"] for p in live["pairs"]} == predicted
        assert live["mismatches"] == 0
    finally:
        conn.close()
