"""How long one `topoc deploy` of a lab on two hosts takes: bench/gen.py's 500-VM lab
(two hosts of 250 VMs, five networks each), deployed with `--connect kvm000=URI1
--connect kvm001=URI2` onto two private test-driver hosts, and (as root) onto two real
libvirtds sandboxed in namespaces of their own (tests/libvirtd_fixture.py), then a
second deploy (nothing to change) and destroy. Wall time and the child's peak memory
(ru_maxrss from wait4) are printed, never asserted.

    sudo .venv/bin/python bench/multihost_bench.py [--vms 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))

from gen import generate_lab  # noqa: E402
from run import measure  # noqa: E402


def _run(label: str, argv: list[str], state: Path) -> None:
    os.environ["TOPOC_STATE_DIR"] = str(state)
    wall, cpu, peak_kib, code, tail = measure(argv)
    if code != 0:
        raise SystemExit(f"{label} failed ({code}): {tail}")
    print(f"  {label:<28} {wall:6.2f} s wall  {cpu:6.2f} s CPU  {peak_kib / 1024:6.0f} MiB peak")


def bench(lab: Path, uris: list[str], what: str, state: Path, with_redeploy: bool) -> None:
    connect = [arg for host, uri in zip(("kvm000", "kvm001"), uris)
               for arg in ("--connect", f"{host}={uri}")]
    topoc = [sys.executable, "-m", "topoc"]
    print(f"{what}:")
    _run("deploy (define everything)", [*topoc, "deploy", str(lab), *connect], state)
    if with_redeploy:
        _run("deploy again (nothing)", [*topoc, "deploy", str(lab), *connect], state)
        _run("destroy", [*topoc, "destroy", str(lab), *connect], state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="topoc-multihost-bench-") as tmp:
        work = Path(tmp)
        lab = work / "lab.topo"
        lab.write_text(generate_lab(args.vms), encoding="utf-8")
        # Two private test-driver hosts (a file URI is a fresh host per connection); the
        # host lives only as long as the command, so only the deploy is measured.
        uris = []
        for name in ("one", "two"):
            (work / f"{name}.xml").write_text("<node/>\n", encoding="utf-8")
            uris.append(f"test://{work / name}.xml")
        bench(lab, uris, f"{args.vms} VMs on two test-driver hosts", work / "state-test", False)
        if os.geteuid() != 0:
            print("two sandboxed libvirtds: skipped (needs root)")
            return
        from libvirtd_fixture import running_libvirtd

        (work / "a").mkdir()
        (work / "b").mkdir()
        with running_libvirtd(work / "a") as one, running_libvirtd(work / "b") as two:
            # A fresh daemon probes QEMU's capabilities before its first domain; do that
            # first, so the figures are the deploy's, as on a host that has been up a while.
            for uri in (one.uri, two.uri):
                _run("warm-up (QEMU probe)", ["virsh", "-c", uri, "domcapabilities"], work)
            bench(lab, [one.uri, two.uri], f"{args.vms} VMs on two sandboxed libvirtds",
                  work / "state-real", True)
            # The same machine, at the same time: half the lab on one host, one daemon.
            half = work / "half.topo"
            half.write_text(generate_lab(args.vms // 2), encoding="utf-8")
            print(f"for comparison, {args.vms // 2} VMs on one sandboxed libvirtd:")
            _run("deploy (define everything)", [sys.executable, "-m", "topoc", "deploy", str(half),
                                                "--connect", one.uri], work / "state-half")
            _run("destroy", [sys.executable, "-m", "topoc", "destroy", str(half),
                             "--connect", one.uri], work / "state-half")


if __name__ == "__main__":
    main()
