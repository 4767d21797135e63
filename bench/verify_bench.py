"""How long `topoc verify` takes on a generated lab (bench/gen.py), 50 VMs by default:
namespaces built, the generated up.sh and topoc.nft applied, the full ping matrix and
every forward probed, everything torn down. Target: a 50-VM lab in under 60 s (printed,
never asserted). Needs root.

    sudo .venv/bin/python bench/verify_bench.py [--vms 50] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from gen import generate_lab  # noqa: E402

TARGET_SECONDS = 60.0


def run_once(lab: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "topoc", "verify", str(lab), "--format", "json"],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"topoc verify failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("verify_bench needs root (network namespaces)")
    with tempfile.TemporaryDirectory(prefix="topoc-verify-bench-") as tmp:
        lab = Path(tmp) / f"lab{args.vms}.topo"
        lab.write_text(generate_lab(args.vms), encoding="utf-8")
        best = None
        for _ in range(args.repeat):
            elapsed, report = run_once(lab)
            best = elapsed if best is None else min(best, elapsed)
        assert best is not None
    pairs, forwards = len(report["pairs"]), len(report["forwards"])
    verdict = "met" if best < TARGET_SECONDS else "MISSED"
    print(f"topoc verify, {args.vms} VMs: {best:.1f} s wall (best of {args.repeat}); "
          f"{pairs} node pairs and {forwards} forward probes, {report['mismatches']} mismatches; "
          f"target < {TARGET_SECONDS:.0f} s: {verdict}")


if __name__ == "__main__":
    main()
