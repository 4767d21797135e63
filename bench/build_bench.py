"""Time `topoc build --target libvirt` on labs of 1,000 and 10,000 VMs.

Each run is a fresh `topoc` process (so start-up, parsing, lowering, the checks, the
libvirt XML of every network and domain, and the atomic write all count), measured
for wall time and the child's own peak memory (ru_maxrss from wait4). Target: 10,000
VMs in under 5 s, peak memory under 1 GiB. Labs come from bench/gen.py's
`generate_lab(n_vms)` when it exists, else from the small generator below (same
shape: several hosts, NAT and routed networks of 50 VMs each).

    .venv/bin/python bench/build_bench.py [--sizes 1000,10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

VMS_PER_NETWORK = 50
NETWORKS_PER_HOST = 20
TARGET_SECONDS = {10_000: 5.0}
TARGET_PEAK_MIB = 1024


def minimal_lab(n_vms: int) -> str:
    """A lab of n_vms VMs: /24 networks of 50 VMs, alternately NAT and routed, 20 per host."""
    n_networks = -(-n_vms // VMS_PER_NETWORK)
    n_hosts = -(-n_networks // NETWORKS_PER_HOST)
    lines = ["lab bench", "", "network lan {", "    mode external", "    subnet 172.16.0.0/16", "}"]
    for h in range(n_hosts):
        lines += ["", f"host kvm{h} {{",
                  f"    nic eth0 on lan address 172.16.{h // 250}.{h % 250 + 2} gateway 172.16.255.254",
                  "}"]
    vm = 0
    for i in range(n_networks):
        octets = f"10.{i // 256}.{i % 256}"
        mode = "nat via eth0" if i % 2 == 0 else "routed via eth0"
        lines += ["", f"network net{i} on kvm{i // NETWORKS_PER_HOST} {{", f"    mode {mode}",
                  f"    address {octets}.1/24", f"    dhcp {octets}.100 - {octets}.200", "}"]
        for j in range(min(VMS_PER_NETWORK, n_vms - vm)):
            lines += ["", f"vm vm{vm} on kvm{i // NETWORKS_PER_HOST} {{", "    memory 1GiB",
                      f"    disk /var/lib/libvirt/images/vm{vm}.qcow2",
                      f"    nic eth0 on net{i} address {octets}.{j + 10}", "}"]
            vm += 1
    return "\n".join(lines) + "\n"


def lab_text(n_vms: int) -> tuple[str, str]:
    try:
        from gen import generate_lab  # bench/gen.py, from the checks' benchmark
    except ImportError:
        return minimal_lab(n_vms), "bench/build_bench.py minimal_lab"
    return generate_lab(n_vms), "bench/gen.py generate_lab"


def topoc_argv() -> list[str]:
    script = Path(sys.executable).parent / "topoc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "topoc"]


def run_once(argv: list[str]) -> tuple[float, int, int, str]:
    """(wall seconds, peak RSS in KiB of this child alone, exit code, stderr tail)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
    return wall, usage.ru_maxrss, os.waitstatus_to_exitcode(status), "\n".join(tail)


def median_run(argv: list[str], repeat: int, before=None) -> tuple[float, int]:
    """(median wall seconds, largest peak KiB) of `repeat` runs; exits on a failure."""
    walls, peak = [], 0
    for _ in range(repeat):
        if before is not None:
            before()
        wall, rss, code, err = run_once(argv)
        if code != 0:
            raise SystemExit(f"{' '.join(argv)} failed (exit {code}):\n{err}")
        walls.append(wall)
        peak = max(peak, rss)
    return statistics.median(walls), peak


def bench(sizes: list[int], repeat: int) -> int:
    """Print, per size, `topoc check` and `topoc build --target libvirt` (which includes
    the checks): their difference is what generating and writing the XML costs."""
    missed = 0
    with tempfile.TemporaryDirectory(prefix="topoc-build-bench-") as work:
        print(f"{'VMs':>7} {'files':>6} {'check s':>8} {'build s':>8} {'xml+write s':>12} "
              f"{'peak MiB':>9}  target (build)")
        for n in sizes:
            text, origin = lab_text(n)
            path = Path(work) / f"lab-{n}.topo"
            path.write_text(text, encoding="utf-8")
            out = Path(work) / f"out-{n}"
            check, _ = median_run([*topoc_argv(), "check", str(path)], repeat)
            # Each build starts from no output: a first build, not a rebuild.
            build, peak = median_run(
                [*topoc_argv(), "build", str(path), "--target", "libvirt", "-o", str(out)],
                repeat, before=lambda: shutil.rmtree(out, ignore_errors=True))
            files = sum(1 for p in out.rglob("*") if p.is_file())
            verdict = ""
            if n in TARGET_SECONDS:
                ok = build < TARGET_SECONDS[n] and peak / 1024 < TARGET_PEAK_MIB
                missed += not ok
                verdict = (f"< {TARGET_SECONDS[n]:.0f} s, < {TARGET_PEAK_MIB} MiB: "
                           f"{'met' if ok else 'MISSED'}")
            print(f"{n:>7} {files:>6} {check:>8.2f} {build:>8.2f} {build - check:>12.2f} "
                  f"{peak / 1024:>9.0f}  {verdict}")
        print(f"labs from {origin}; {repeat} run(s) each: median wall time, largest peak; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 1 if missed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.exit(bench([int(s) for s in args.sizes.split(",")], args.repeat))


if __name__ == "__main__":
    main()
