"""How long `topoc check` takes, and how much memory, on generated labs of 1,000 and
10,000 VMs (bench/gen.py), and how that grows.

Each run is `topoc check FILE` in a subprocess of its own, measured from a small Python
parent that reports the wall time and the child's peak RSS (getrusage(RUSAGE_CHILDREN)
of a parent with exactly one child is that child's ru_maxrss). The median of --repeat
runs is printed; the target (10,000 VMs in under 2 s, growth close to linear) is
printed next to the figures, never asserted.

    .venv/bin/python bench/check_bench.py [--sizes 1000 10000] [--repeat 3] [--stages]

--stages also times parse, lower and checks in-process, to show where the time goes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from gen import generate_lab  # noqa: E402  (bench/ is not a package)

TARGET_SECONDS = 2.0
TARGET_VMS = 10_000

# Runs one command and prints {"wall": s, "maxrss_kib": n, "rc": n}: as the only child
# of this process, RUSAGE_CHILDREN's ru_maxrss is that command's peak (KiB on Linux).
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss,
                  "rc": rc}))
"""


def topoc_command() -> list[str]:
    script = Path(sys.executable).parent / "topoc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "topoc"]


def measure(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEASURE, *argv], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def stages(path: Path) -> dict[str, float]:
    """parse, lower and checks: CPU seconds in this process (imports excluded)."""
    from topoc.checks import run_checks
    from topoc.front.lower import lower
    from topoc.front.parser import parse
    from topoc.model.analysis import Analysis

    text = path.read_text(encoding="utf-8")
    gc.disable()  # as compile_source does
    t0 = time.process_time()
    tree, _ = parse(text, str(path))
    t1 = time.process_time()
    lowered = lower(tree)  # type: ignore[arg-type]
    t2 = time.process_time()
    run_checks(Analysis(lowered.lab, lowered.poisoned))
    t3 = time.process_time()
    gc.enable()
    return {"parse": t1 - t0, "lower": t2 - t1, "checks": t3 - t2}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stages", action="store_true", help="also time each stage in-process")
    args = parser.parse_args(argv)
    topoc = topoc_command()
    rows = []
    with tempfile.TemporaryDirectory(prefix="topoc-check-bench-") as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"lab-{n}.topo"
            path.write_text(generate_lab(n), encoding="utf-8")
            runs = [measure([*topoc, "check", str(path)]) for _ in range(args.repeat)]
            if any(r["rc"] != 0 for r in runs):
                raise SystemExit(f"topoc check failed on the generated {n}-VM lab (exit "
                                 f"{runs[0]['rc']}): bench/gen.py must generate clean labs")
            wall = statistics.median(r["wall"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            rss = max(r["maxrss_kib"] for r in runs)
            rows.append((n, wall, cpu, rss, stages(path) if args.stages else None))
    print(f"topoc check, median of {args.repeat} runs (times include interpreter start-up; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"{'VMs':>7}  {'wall s':>7}  {'cpu s':>6}  {'ms/VM':>6}  {'peak MiB':>8}  {'growth':>6}  stages (cpu)")
    previous = None
    for n, wall, cpu, rss, parts in rows:
        growth = f"{wall / previous[1]:.1f}x" if previous else ""
        detail = "  ".join(f"{k} {v:.2f}s" for k, v in parts.items()) if parts else ""
        print(f"{n:>7}  {wall:>7.2f}  {cpu:>6.2f}  {1000 * wall / n:>6.3f}  {rss / 1024:>8.1f}  "
              f"{growth:>6}  {detail}")
        previous = (n, wall)
    for n, wall, _, _, _ in rows:
        if n == TARGET_VMS:
            verdict = "meets" if wall < TARGET_SECONDS else "misses"
            print(f"target: {TARGET_VMS} VMs in < {TARGET_SECONDS:.0f} s: {verdict} it ({wall:.2f} s)")


if __name__ == "__main__":
    main()
