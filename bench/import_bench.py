"""Time `topoc import` on a host of 500 domains and 20 networks (libvirt's test driver).

The host is a test-driver host file (test:///PATH: a <node> of <network> and <domain>
elements, https://libvirt.org/drvtest.html) that this script writes: 20 NAT networks of
25 VMs each, every VM with a disk, a MAC and a DHCP host entry on its network. Each run
is a fresh `topoc import --connect test:///PATH -o FILE` process (start-up, the libvirt
reads, the description and fmt's layout all count), best of --repeat. Target: under 5 s.
The script also checks the file it got: every network and VM in it, and no errors.

    .venv/bin/python bench/import_bench.py [--vms 500] [--networks 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 5.0
ROOT = Path(__file__).resolve().parent.parent


def host_xml(n_vms: int, n_networks: int) -> str:
    per_network = -(-n_vms // n_networks)
    parts = ["<node>"]
    vm = 0
    for n in range(n_networks):
        hosts = []
        members = range(vm, min(vm + per_network, n_vms))
        for i, v in enumerate(members):
            hosts.append(f"<host mac='52:54:00:{n:02x}:{v >> 8:02x}:{v & 255:02x}' name='vm{v}' "
                         f"ip='10.{100 + n}.0.{10 + i}'/>")
        parts.append(
            f"<network><name>net{n}</name><forward mode='nat'/>"
            f"<bridge name='nbr{n}' stp='on' delay='0'/>"
            f"<ip address='10.{100 + n}.0.1' netmask='255.255.255.0'><dhcp>"
            f"<range start='10.{100 + n}.0.128' end='10.{100 + n}.0.254'/>{''.join(hosts)}</dhcp></ip></network>")
        for v in members:
            parts.append(
                f"<domain type='test'><name>vm{v}</name><memory unit='KiB'>524288</memory><vcpu>1</vcpu>"
                f"<os><type>hvm</type></os><devices>"
                f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                f"<source file='/var/lib/libvirt/images/vm{v}.qcow2'/><target dev='vda' bus='virtio'/></disk>"
                f"<interface type='network'><source network='net{n}'/>"
                f"<mac address='52:54:00:{n:02x}:{v >> 8:02x}:{v & 255:02x}'/><model type='virtio'/></interface>"
                f"</devices></domain>")
        vm = members.stop
    parts.append("</node>")
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--networks", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    topoc = [sys.executable, "-m", "topoc"]
    with tempfile.TemporaryDirectory(prefix="topoc-import-bench-") as tmp:
        host = Path(tmp) / "host.xml"
        host.write_text(host_xml(args.vms, args.networks), encoding="utf-8")
        out = Path(tmp) / "imported.topo"
        env = dict(os.environ, TOPOC_STATE_DIR=str(Path(tmp) / "state"))
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            run = subprocess.run([*topoc, "import", "--connect", f"test://{host}", "-o", str(out)], check=False,
                                 capture_output=True, text=True, env=env, cwd=ROOT)
            times.append(time.perf_counter() - start)
            if run.returncode != 0:
                sys.exit(f"topoc import failed ({run.returncode}):\n{run.stderr[-3000:]}")
        text = out.read_text(encoding="utf-8")
        vms = sum(line.startswith("vm ") for line in text.splitlines())
        networks = sum(line.startswith("network ") and "mode external" not in line for line in text.splitlines())
        check = subprocess.run([*topoc, "check", str(out)], capture_output=True, text=True, cwd=ROOT, check=False)
    best = min(times)
    verdict = "met" if best < TARGET_SECONDS else "NOT met"
    print(f"topoc import: {args.vms} domains, {args.networks} networks on the test driver: "
          f"{best:.2f} s (best of {args.repeat}; all: {', '.join(f'{t:.2f}' for t in times)}); "
          f"target < {TARGET_SECONDS:.0f} s: {verdict}")
    print(f"  the file: {vms} vm blocks, {networks} network blocks; topoc check: "
          f"{check.stdout.strip().splitlines()[-1] if check.stdout.strip() else check.stderr.strip()}")
    if vms != args.vms or check.returncode != 0:
        sys.exit("the imported file is incomplete or has errors")


if __name__ == "__main__":
    main()
