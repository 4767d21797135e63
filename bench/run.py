"""`make bench`: time topoc against its targets and against netlab, print one table.

For N = 100, 1,000 and 10,000 VMs (labs from bench/gen.py's `generate_lab`), it runs
`topoc check`, `topoc build --target libvirt,host` (into a temp dir) and `topoc reach
FILE SRC DST` as subprocesses, and records each one's wall time and peak memory (the
child's own ru_maxrss, from wait4). Side by side, it runs `netlab create` (installed on
first use into bench/.venv-netlab by bench/netlab_bench.py) on the equivalent netlab
topology for N = 100 and 1,000. It prints the ratio of each size to the previous one,
time per VM, topoc/netlab, and the issue's targets next to the figures: it reports
them, it never asserts them.

The same topoc commands also run on the dual-stack twin of each lab (bench/gen.py's
`generate_dual_stack_lab`: the same sizes, every network and VM with an IPv6 address
too), taking turns with the IPv4 runs so both meet the same load, and a second table
puts both figures side by side with their ratio, against the dual-stack target (at
most 1.5 times the IPv4-only figures). `--labs ipv4` or
`--labs dual-stack` runs one kind only.

`--profile` instead runs topoc check, build and reach under cProfile on the largest lab
of each kind `--labs` selects and prints the hotspots (profiles are kept in bench/work/
for snakeviz or pstats), with what the cyclic GC costs; `--stages` prints the CPU time
of each pipeline stage (parse, lower, checks, each backend, the writer) per size, to
show how each one grows.

Responsibility: measuring and reporting. Generating labs is bench/gen.py's job,
describing them to netlab is bench/netlab_bench.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"  # git-ignored: profiles and --keep'd labs
sys.path.insert(0, str(BENCH))

import netlab_bench  # noqa: E402  (bench/ is not a package)

SIZES = (100, 1_000, 10_000)
NETLAB_SIZES = (100, 1_000)
GIB_KIB = 1024 * 1024

# The targets: printed next to the figures, never asserted.
TIME_TARGETS = {("check", 10_000): 2.0, ("build", 10_000): 5.0}
MEMORY_TARGET_KIB = GIB_KIB  # at 10,000 VMs, every command
GROWTH_TARGET = 11.0  # time, 1,000 -> 10,000 VMs
NETLAB_SPEEDUP_TARGET = 50.0  # topoc build vs netlab create, at 1,000 VMs
DUAL_STACK_TARGET = 1.5  # dual-stack lab vs its IPv4-only twin, every command and size

# The kinds of lab: the IPv4-only one bench/gen.py has always made, and its dual-stack twin.
IPV4, DUAL = "ipv4", "dual-stack"
LAB_KINDS = (IPV4, DUAL)


@dataclass
class Sample:
    """One command at one size: the best wall and CPU time of its runs, and their peak
    memory. Best, not median: on a shared machine other processes only ever add time,
    so the fastest run is the closest to the tool's own cost (as timeit reasons)."""

    tool: str  # "topoc" or "netlab"
    command: str  # check, build, reach, create, startup
    n: int
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)  # user + system seconds
    peak_kib: int = 0
    returncode: int = 0
    error: str = ""
    lab: str = IPV4  # which kind of lab (LAB_KINDS) it ran on

    @property
    def wall(self) -> float:
        return min(self.walls) if self.walls else float("nan")

    @property
    def cpu(self) -> float:
        return min(self.cpus) if self.cpus else float("nan")

    @property
    def label(self) -> str:
        return f"{self.tool} {self.command}"


# --- running and measuring ----------------------------------------------------------

def measure(argv: list[str], cwd: Path | None = None) -> tuple[float, float, int, int, str]:
    """Run argv; return (wall s, CPU s, peak RSS KiB of that child, exit code, stderr tail).

    wait4 gives the child's own rusage, so one command's peak never hides behind an
    earlier, bigger one (as RUSAGE_CHILDREN's running maximum would).
    """
    env = {**os.environ, "NO_COLOR": "1"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, env=env,
                                stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
        tail = lines[-3:]
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss, proc.returncode, "\n".join(tail)


def sample(tool: str, command: str, n: int, argv: list[str], repeat: int,
           cwd: Path | None = None, before=None, lab: str = IPV4) -> Sample:
    """Run argv `repeat` times (calling `before()` first each time, e.g. to empty an
    output directory) and keep the best times and the largest peak memory."""
    s = Sample(tool, command, n, lab=lab)
    for _ in range(repeat):
        if before is not None:
            before()
        wall, cpu, peak, rc, err = measure(argv, cwd)
        s.walls.append(wall)
        s.cpus.append(cpu)
        s.peak_kib = max(s.peak_kib, peak)
        if rc != 0:
            s.returncode, s.error = rc, err
    return s


def topoc_argv() -> list[str]:
    script = Path(sys.executable).parent / "topoc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "topoc"]


# --- the labs -----------------------------------------------------------------------

def write_labs(sizes: tuple[int, ...], workdir: Path, kind: str = IPV4) -> dict[int, Path]:
    from gen import generate_dual_stack_lab, generate_lab  # bench/gen.py

    generate = generate_dual_stack_lab if kind == DUAL else generate_lab
    labs = {}
    for n in sizes:
        path = workdir / f"lab-{n}.topo" if kind == IPV4 else workdir / f"lab-{kind}-{n}.topo"
        path.write_text(generate(n), encoding="utf-8")
        labs[n] = path
    return labs


def vm_names(path: Path) -> list[str]:
    """The lab's VM names in source order, read off the text (no need to compile it)."""
    return re.findall(r"^\s*vm\s+([A-Za-z_][\w-]*)", path.read_text(encoding="utf-8"), re.M)


def load_lab(path: Path):
    """The lab's IR (parse and lower only): for the reach pair and the netlab twin."""
    from topoc.compiler import compile_file

    result = compile_file(str(path), checks=False)
    if not result.ok:
        raise SystemExit(f"bench: {path} does not lower; bench/gen.py is broken?")
    return result.lab


def reach_pair(path: Path) -> tuple[str, str]:
    """The first and the last VM: different networks (and hosts) in any lab of > 50 VMs."""
    names = vm_names(path)
    if len(names) < 2:
        raise SystemExit(f"bench: {path} has fewer than two VMs to ask `topoc reach` about")
    return names[0], names[-1]


# --- the two tools ------------------------------------------------------------------

def run_topoc(labs_of: dict[str, dict[int, Path]], workdir: Path, repeat: int, log) -> list[Sample]:
    """check, build and reach on each lab of each kind (IPv4-only, dual-stack), and the
    startup floor. The kinds take turns run by run (IPv4, dual, IPv4, dual...) for each
    command and size, so the two figures of a ratio meet the same machine: on a shared
    one, the load of a minute later is another load."""
    topoc = topoc_argv()
    kinds = list(labs_of)
    samples = {(kind, "startup", 0): Sample("topoc", "startup", 0, lab=kind) for kind in kinds}
    for _ in range(repeat):
        for kind in kinds:
            _run(samples[(kind, "startup", 0)], [*topoc, "--version"])
    sizes = sorted({n for labs in labs_of.values() for n in labs})
    for n in sizes:
        for command in ("check", "build", "reach"):
            log(f"  topoc {command} N={n} ({', '.join(kinds)}) ...")
            runs = []
            for kind in kinds:
                path = labs_of[kind][n]
                out = workdir / (f"out-{n}" if kind == IPV4 else f"out-{kind}-{n}")
                argv = {"check": [*topoc, "check", str(path)],
                        "build": [*topoc, "build", str(path), "--target", "libvirt,host", "-o", str(out)],
                        "reach": [*topoc, "reach", str(path), *reach_pair(path)]}[command]
                s = samples[(kind, command, n)] = Sample("topoc", command, n, lab=kind)
                runs.append((s, argv, (lambda o=out: shutil.rmtree(o, ignore_errors=True))
                             if command == "build" else None))
            for _ in range(repeat):
                for s, argv, before in runs:
                    if before is not None:
                        before()
                    _run(s, argv)
    return list(samples.values())


def _run(s: Sample, argv: list[str]) -> None:
    """One more run of argv into `s` (as `sample` does it, one run at a time)."""
    wall, cpu, peak, rc, err = measure(argv)
    s.walls.append(wall)
    s.cpus.append(cpu)
    s.peak_kib = max(s.peak_kib, peak)
    if rc != 0:
        s.returncode, s.error = rc, err


def run_netlab(labs: dict[int, Path], workdir: Path, log) -> tuple[list[Sample], list[str]]:
    """netlab create on each lab's netlab twin; returns samples and what differs."""
    try:
        exe = netlab_bench.ensure_netlab(log)
    except netlab_bench.NetlabUnavailable as e:
        log(f"  netlab: {e}")
        return [], [f"netlab not measured: {e}"]
    log(f"  {netlab_bench.netlab_version(exe)}")
    samples, differs = [], []
    for n, path in labs.items():
        lab = load_lab(path)
        here = workdir / f"netlab-{n}"
        here.mkdir()
        topology = here / "topology.yml"
        topology.write_text(netlab_bench.netlab_topology(lab), encoding="utf-8")
        differs = netlab_bench.differences(lab)
        log(f"  netlab create N={n} ...")
        samples.append(sample("netlab", "create", n, netlab_bench.create_command(exe, topology),
                              1, cwd=here))
    return samples, differs


# --- the report ---------------------------------------------------------------------

def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "-"


def _targets(s: Sample, prev: Sample | None) -> str:
    """The issue's targets that apply to this row, each with met / MISSED."""
    if s.returncode:
        return "n/a: the command failed"
    parts = []
    limit = TIME_TARGETS.get((s.command, s.n))
    if s.tool == "topoc" and limit is not None:
        parts.append(f"< {limit:g} s " + _verdict(s.wall < limit, s.cpu < limit))
    if s.tool == "topoc" and s.n == max(SIZES):
        parts.append(f"< 1 GiB {'met' if s.peak_kib < MEMORY_TARGET_KIB else 'MISSED'}")
    if s.tool == "topoc" and prev is not None and s.n == 10 * prev.n == 10_000:
        parts.append(f"growth <= {GROWTH_TARGET:g}x " +
                     _verdict(s.wall / prev.wall <= GROWTH_TARGET, s.cpu / prev.cpu <= GROWTH_TARGET))
    return ", ".join(parts)


def _verdict(by_wall: bool, by_cpu: bool) -> str:
    """Targets are wall time; on a busy machine say when CPU time tells otherwise."""
    word = "met" if by_wall else "MISSED"
    if by_wall != by_cpu:
        word += f" ({'met' if by_cpu else 'MISSED'} on cpu s)"
    return word


def table(samples: list[Sample]) -> list[str]:
    head = ("command", "VMs", "wall s", "cpu s", "peak MiB", "time / prev", "mem / prev",
            "ms per VM", "target (not asserted)")
    order = ["topoc startup", "topoc check", "topoc build", "topoc reach", "netlab create"]
    ordered = sorted(samples, key=lambda s: (order.index(s.label) if s.label in order
                                             else len(order), s.n))
    rows = []
    prev: dict[str, Sample] = {}
    for s in ordered:
        p = prev.get(s.label)
        per_vm = f"{1000 * s.wall / s.n:.2f}" if s.n else "-"
        rows.append((s.label + (f" (exit {s.returncode})" if s.returncode else ""),
                     f"{s.n:,}" if s.n else "-", f"{s.wall:.2f}", f"{s.cpu:.2f}", _mib(s.peak_kib),
                     _ratio(s.wall, p.wall) if p else "-",
                     _ratio(s.peak_kib, p.peak_kib) if p else "-",
                     per_vm, _targets(s, p)))
        prev[s.label] = s
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(line(r) for r in rows)]


def comparison(samples: list[Sample]) -> list[str]:
    """topoc build vs netlab create, per size both ran at."""
    by = {(s.label, s.n): s for s in samples}
    out = []
    for n in NETLAB_SIZES:
        t, nl = by.get(("topoc build", n)), by.get(("netlab create", n))
        if t is None or nl is None:
            continue
        speedup = nl.wall / t.wall
        verdict = ""
        if n == 1_000:
            met = speedup >= NETLAB_SPEEDUP_TARGET
            verdict = f"   target >= {NETLAB_SPEEDUP_TARGET:g}x faster: {'met' if met else 'MISSED'}"
        out.append(f"N={n:>5,}: topoc build {t.wall:6.2f} s {_mib(t.peak_kib):>4} MiB | netlab "
                   f"create {nl.wall:6.2f} s {_mib(nl.peak_kib):>4} MiB | time topoc/netlab "
                   f"{t.wall / nl.wall:.3f} (topoc {speedup:.0f}x faster), memory topoc/netlab "
                   f"{t.peak_kib / nl.peak_kib:.2f}{verdict}")
    return out


def dual_stack_table(samples: list[Sample]) -> list[str]:
    """Each topoc command on the dual-stack lab next to the same command on its IPv4-only
    twin: times, peak memory, their ratios, and the target (<= 1.5x). `net` is the CPU
    ratio without the interpreter's startup, which both pay once and which hides a
    difference at small sizes."""
    by = {(s.lab, s.command, s.n): s for s in samples if s.tool == "topoc"}
    startup = by.get((IPV4, "startup", 0)) or by.get((DUAL, "startup", 0))
    base = startup.cpu if startup is not None else 0.0
    head = ("command", "VMs", "IPv4 wall s", "dual wall s", "wall ratio", "IPv4 cpu s",
            "dual cpu s", "cpu ratio", "net cpu ratio", "IPv4 MiB", "dual MiB", "mem ratio",
            f"target <= {DUAL_STACK_TARGET:g}x (not asserted)")
    rows = []
    for command in ("check", "build", "reach"):
        for n in sorted({n for (lab, c, n) in by if c == command}):
            v4, v6 = by.get((IPV4, command, n)), by.get((DUAL, command, n))
            if v4 is None or v6 is None:
                continue
            wall, cpu = v6.wall / v4.wall, v6.cpu / v4.cpu
            net4, net6 = v4.cpu - base, v6.cpu - base
            net = f"{net6 / net4:.2f}x" if net4 > 0 and net6 > 0 else "-"
            verdict = ("n/a: a command failed" if v4.returncode or v6.returncode else
                       _verdict(wall <= DUAL_STACK_TARGET, cpu <= DUAL_STACK_TARGET))
            rows.append((f"topoc {command}", f"{n:,}", f"{v4.wall:.2f}", f"{v6.wall:.2f}",
                         f"{wall:.2f}x", f"{v4.cpu:.2f}", f"{v6.cpu:.2f}", f"{cpu:.2f}x", net,
                         _mib(v4.peak_kib), _mib(v6.peak_kib),
                         f"{v6.peak_kib / v4.peak_kib:.2f}x" if v4.peak_kib else "-", verdict))
    if not rows:
        return []
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(line(r) for r in rows)]


def linearity(samples: list[Sample]) -> list[str]:
    """CPU time per VM net of interpreter startup, per size: flat means linear growth.
    CPU, not wall: it does not move with the machine's other load."""
    startup = next((s.cpu for s in samples if s.command == "startup"), 0.0)
    out = []
    for label in ("topoc check", "topoc build", "topoc reach", "netlab create"):
        rows = sorted((s for s in samples if s.label == label and s.n and not s.returncode),
                      key=lambda s: s.n)
        if len(rows) < 2:
            continue
        base = startup if label.startswith("topoc") else 0.0
        per = [(s.n, 1000 * max(s.cpu - base, 0.0) / s.n) for s in rows]
        growth = per[-1][1] / per[-2][1] if per[-2][1] > 0 else float("nan")
        # Below 1: fixed costs (imports, the grammar) still weigh at the smaller size.
        shape = ("linear or better" if growth <= 1.15 else
                 "superlinear" if growth > 1.3 else "near-linear")
        cells = ", ".join(f"{v:.3f} ms at {n:,}" for n, v in per)
        out.append(f"{label:<14} {cells}  ({shape}: x{growth:.2f} per VM from "
                   f"{per[-2][0]:,} to {per[-1][0]:,})")
    return out


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    return (f"{os.cpu_count()} cores, load average {load}, Python "
            f"{sys.version.split()[0]}, topoc at {commit}")


def errors(samples: list[Sample]) -> list[str]:
    return [f"{s.label} N={s.n:,} ({s.lab}) exited {s.returncode}: "
            f"{' / '.join(s.error.splitlines())}" for s in samples if s.returncode]


def report(samples: list[Sample], differs: list[str], log) -> None:
    """The table of one kind of lab (the IPv4 one when there are both: the figures the
    targets and netlab compare), then dual-stack against IPv4 when both ran."""
    kinds = {s.lab for s in samples}
    main_kind = IPV4 if IPV4 in kinds else DUAL
    both = samples
    samples = [s for s in both if s.lab == main_kind]
    log("" if main_kind == IPV4 else "\n(dual-stack labs)")
    for line in table(samples):
        log(line)
    lin = linearity(samples)
    if lin:
        log("\nCPU time per VM, net of interpreter startup (the growth's shape):")
        for line in lin:
            log("  " + line)
    cmp = comparison(samples)
    if cmp:
        log("\ntopoc vs netlab (the same lab; differences below)")
        for line in cmp:
            log("  " + line)
    if differs:
        log("\nwhat the netlab twin describes differently:")
        for line in differs:
            log("  - " + line)
    dual = dual_stack_table(both)
    if dual:
        log("\ndual-stack labs (bench/gen.py generate_dual_stack_lab) against their IPv4-only twins")
        for line in dual:
            log(line)
    log(f"\nmachine: {machine()}")
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        log("  (busy: other processes compete for the cores, so wall times are inflated; "
            "cpu s is the steadier figure)")
    errs = errors(both)
    if errs:
        log("\ncommands that failed (their figures are not comparable):")
        for line in errs:
            log("  - " + line)


# --- profiling ----------------------------------------------------------------------

def profile(labs: dict[int, Path], workdir: Path, top: int, log, kind: str = IPV4) -> None:
    """cProfile topoc check, build and reach on the largest lab; print the hotspots."""
    n = max(labs)
    path = labs[n]
    WORK.mkdir(exist_ok=True)
    suffix = "" if kind == IPV4 else f"-{kind}"
    src, dst = reach_pair(path)
    runs = {
        "check": ["check", str(path)],
        "build": ["build", str(path), "--target", "libvirt,host", "-o", str(workdir / f"prof-out{suffix}")],
        "reach": ["reach", str(path), src, dst],
    }
    for name, args in runs.items():
        prof = WORK / f"{name}-{n}{suffix}.prof"
        prof.unlink(missing_ok=True)
        argv = [sys.executable, "-c", _PROFILE_CHILD, str(prof), *args]
        wall, _, _, rc, err = measure(argv)
        log(f"\n== topoc {name} N={n:,} ({kind} lab) under cProfile: {wall:.2f} s (exit {rc}), {prof}")
        if rc not in (0, 1) or not prof.exists():
            log(f"   failed: {err}")
            continue
        stats = pstats.Stats(str(prof))
        log("-- own time by module (where the time really goes, libraries included) --")
        _print_modules(stats, log)
        for order in ("cumulative", "tottime"):
            log(f"-- top {top} by {order} (topoc's own functions) --")
            _print_top(stats, order, top, log)
        _print_gc_cost(args, log)


# `python -m cProfile -m topoc` would write nothing: topoc's main() ends with os._exit
# (it skips freeing the heap). So the child profiles the click command itself.
_PROFILE_CHILD = """
import cProfile, sys
from topoc.cli import cli
profile = cProfile.Profile()
profile.enable()
try:
    cli.main(args=sys.argv[2:], prog_name="topoc", standalone_mode=True)
except SystemExit as done:
    code = done.code
finally:
    profile.disable()
    profile.dump_stats(sys.argv[1])
"""


def _module_of(file: str) -> str:
    """A profile row's file as a short module name: topoc/front/parser.py, lark, jinja2 ..."""
    if "/topoc/" in file:
        return "topoc/" + file.split("/topoc/", 1)[1]
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1].split("/", 1)[0]
    if file.startswith("<") or file == "~":
        return "builtins (C)"
    return "stdlib " + Path(file).stem


def _print_modules(stats: pstats.Stats, log, top: int = 14) -> None:
    own: dict[str, float] = {}
    for (file, _, _), (_, _, tt, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        own[_module_of(file)] = own.get(_module_of(file), 0.0) + tt
    total = sum(own.values()) or 1.0
    for module, tt in sorted(own.items(), key=lambda kv: kv[1], reverse=True)[:top]:
        log(f"   {tt:7.3f} s {100 * tt / total:5.1f}%  {module}")


def _print_gc_cost(args: list[str], log) -> None:
    """The same command with Python's cyclic garbage collector off: the difference is
    what the collector costs (cProfile cannot see it; it charges whoever allocated)."""
    code = ("import gc, sys; from topoc.cli import main; sys.argv = ['topoc', *sys.argv[1:]]; "
            "gc.disable() if sys.argv[1] == 'nogc' else None; sys.argv.pop(1); main()")
    cpu = {mode: min(measure([sys.executable, "-c", code, mode, *args])[1] for _ in range(2))
           for mode in ("gc", "nogc")}
    log(f"-- cyclic GC: {cpu['gc']:.2f} s cpu with it, {cpu['nogc']:.2f} s without "
        f"({cpu['gc'] - cpu['nogc']:.2f} s is the collector's) --")


def _print_top(stats: pstats.Stats, order: str, top: int, log) -> None:
    key = 3 if order == "cumulative" else 2  # pstats rows: (cc, nc, tt, ct, callers)
    rows = [(func, row) for func, row in stats.stats.items()  # type: ignore[attr-defined]
            if "/topoc/" in func[0]]
    rows.sort(key=lambda fr: fr[1][key], reverse=True)
    log(f"   {'cum s':>7} {'own s':>7} {'calls':>9}  function")
    for (file, line, fn), (cc, nc, tt, ct, _) in rows[:top]:
        where = file.split("/topoc/", 1)[1]
        log(f"   {ct:7.3f} {tt:7.3f} {nc:9d}  topoc/{where}:{line} {fn}")


# --- stages: where the time goes, size by size -----------------------------------

STAGES = ("parse", "lower", "checks", "libvirt", "host", "write")


def stage_times(path: Path, outdir: Path) -> dict[str, float]:
    """CPU seconds of each pipeline stage on one lab, in this (fresh) process, with the
    cyclic GC as `topoc build` has it: paused while compiling, on for backends and the
    writer. The stages are the pipeline's own functions, called in the CLI's order."""
    import gc

    from topoc.backends import backend
    from topoc.checks import run_checks
    from topoc.front.lower import lower
    from topoc.front.parser import parse
    from topoc.backends.writer import write_artifacts
    from topoc.model.analysis import Analysis

    text = path.read_text(encoding="utf-8")
    times: dict[str, float] = {}

    def timed(stage, fn):
        start = time.process_time()
        result = fn()
        times[stage] = time.process_time() - start
        return result

    gc.disable()
    tree, _ = timed("parse", lambda: parse(text, str(path)))
    lowered = timed("lower", lambda: lower(tree))
    lab = lowered.lab
    timed("checks", lambda: run_checks(Analysis(lab, lowered.poisoned)))
    gc.enable()
    artifacts: dict[str, str] = {}
    for target in ("libvirt", "host"):
        artifacts.update(timed(target, lambda t=target: backend(t)(lab)))
    # The file system's cost of creating 10,000 files swings several-fold from one run to
    # the next on this VM (ext4, online discard): keep the best of three writes.
    writes = []
    for i in range(3):
        timed("write", lambda i=i: write_artifacts(artifacts, outdir / str(i), str(path)))
        writes.append(times["write"])
    times["write"] = min(writes)
    return times


def stages(labs: dict[int, Path], workdir: Path, log, kind: str = IPV4) -> None:
    """Each size in a fresh interpreter (no warm caches, no heap left from the last)."""
    rows = {}
    for n, path in labs.items():
        out = workdir / (f"stages-{n}" if kind == IPV4 else f"stages-{kind}-{n}")
        code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import run; "
                "from pathlib import Path; "
                "print(json.dumps(run.stage_times(Path(sys.argv[2]), Path(sys.argv[3]))))")
        result = subprocess.run([sys.executable, "-c", code, str(BENCH), str(path), str(out)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            log(f"  stages N={n:,} failed: {result.stderr.strip().splitlines()[-1:]}")
            continue
        rows[n] = json.loads(result.stdout.strip().splitlines()[-1])
    sizes = list(rows)
    log("\nCPU seconds per stage (fresh process per size; x = growth from the previous size)")
    log(f"  {'stage':<8}" + "".join(f"{n:>8,} {'':<6}" for n in sizes))
    for stage in (*STAGES, "total"):
        cells = []
        for i, n in enumerate(sizes):
            value = sum(rows[n].values()) if stage == "total" else rows[n][stage]
            prev = (sum(rows[sizes[i - 1]].values()) if stage == "total"
                    else rows[sizes[i - 1]][stage]) if i else None
            grow = f"x{value / prev:.1f}" if prev else ""
            cells.append(f"{value:8.3f} {grow:<6}")
        log(f"  {stage:<8}" + "".join(cells))


# --- main ---------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=",".join(map(str, SIZES)),
                   help="comma-separated lab sizes in VMs (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs per topoc command; the best time is reported (default: %(default)s)")
    p.add_argument("--no-netlab", action="store_true", help="skip netlab create")
    p.add_argument("--labs", choices=(*LAB_KINDS, "both"), default="both",
                   help="IPv4-only labs, their dual-stack twins, or both side by side "
                        "(default: %(default)s)")
    p.add_argument("--profile", action="store_true",
                   help="profile check and build on the largest lab instead of timing")
    p.add_argument("--stages", action="store_true",
                   help="CPU time of each pipeline stage per size, instead of timing")
    p.add_argument("--top", type=int, default=15, help="hotspots to show with --profile")
    p.add_argument("--keep", action="store_true",
                   help="work in bench/work/ and keep labs and outputs")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sizes = tuple(int(s.replace("_", "")) for s in args.sizes.split(","))

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.keep:
        WORK.mkdir(exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    else:
        tmp = tempfile.TemporaryDirectory(prefix="topoc-bench-")
        workdir = Path(tmp.name)
    log(f"topoc bench: labs of {', '.join(f'{n:,}' for n in sizes)} VMs in {workdir}")
    log(f"machine: {machine()}")
    kinds = LAB_KINDS if args.labs == "both" else (args.labs,)
    labs_of = {kind: write_labs(sizes, workdir, kind) for kind in kinds}
    if args.profile:
        for kind in kinds:
            profile(labs_of[kind], workdir, args.top, log, kind)
        return 0
    if args.stages:
        for kind in kinds:
            log(f"\n{kind} labs:")
            stages(labs_of[kind], workdir, log, kind)
        return 0
    samples = run_topoc(labs_of, workdir, args.repeat, log)
    differs: list[str] = []
    if not args.no_netlab and IPV4 in labs_of:
        netlab_labs = {n: p for n, p in labs_of[IPV4].items() if n in NETLAB_SIZES}
        netlab_samples, differs = run_netlab(netlab_labs, workdir, log)
        samples += netlab_samples
    report(samples, differs, log)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
