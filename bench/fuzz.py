"""Fuzzing the front end: generated and mutated .topo files through `topoc check
--format json` and `topoc fmt --check`, in process (click's test runner), fast.

For every input it asserts what a user of the command line relies on: no exception
(no traceback), an exit code of 0, 1 or 2 only, stdout of `check --format json` one
valid JSON document of the documented shape, and every diagnostic's position inside the
file (its file is the one checked; line and column, start and end, point at a character
of it or just past a line's last one; the end is not before the start). `fmt --check`
exits 0 (canonical) or 1 (would change, or does not parse); when it would change a file,
formatting the result again changes nothing.

Inputs are of two kinds, half each: *generated* labs (random statements of the grammar
with random, often hostile values: shell keywords, huge numbers, unicode, odd addresses)
and *mutated* ones (the examples and golden inputs, with lines, tokens and characters
deleted, duplicated, swapped or replaced). Everything comes from one seed, so a failure
is reproduced by its seed and index.

    python bench/fuzz.py --count 100000 --seed 1     # prints inputs/s and the time taken

tests/test_fuzz.py runs a seeded 5,000-input version in the normal suite.
Responsibility: finding inputs that break the command line's promises; it fixes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from click.testing import CliRunner  # noqa: E402

from topoc.cli import cli  # noqa: E402
from topoc.front.fmt import format_source  # noqa: E402


def seed_sources() -> list[str]:
    """The corpus the mutator starts from: every example and every golden input."""
    paths = sorted((ROOT / "examples").glob("*.topo")) + sorted((ROOT / "tests").rglob("*.topo"))
    texts = []
    for path in paths:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue  # a deliberately broken golden input: the mutator makes its own
    return texts


# --- generated inputs -------------------------------------------------------------------

KEYWORDS = ["lab", "network", "host", "vm", "external", "forward", "expect", "mode", "bridge",
            "address", "subnet", "dhcp", "dns", "domain", "mtu", "stp", "nic", "on", "route",
            "via", "to", "memory", "vcpus", "disk", "mac", "model", "gateway", "default"]
SHELL_WORDS = ["do", "done", "if", "fi", "then", "else", "elif", "case", "esac", "for", "while",
               "until", "in", "function", "select", "time", "coproc"]
DISKS = ["/var/lib/x.qcow2", "rel.qcow2", '"a b.qcow2"', '""', "../x", '"a\\"b"']
MODES = ["nat", "routed", "isolated", "open", "external", "bridged to eth0", "nat via eth0",
         "routed via eth1", "bridged", "bridged to", "nat via", "bogus", "bridged to eth9"]


def _number(rng: random.Random) -> str:
    if rng.random() < 0.03:
        return "9" * rng.choice([4300, 4301, 6000])  # around CPython's int() digit limit
    return rng.choice([
        str(rng.randint(0, 70000)), "0", "-1", "1", "65536", "9" * rng.randint(10, 40),
        "0" * rng.randint(1, 50) + "7", "1e3", "0x10", "\u0663", "12abc", "4096", "4097",
    ])


def _name(rng: random.Random) -> str:
    if rng.random() < 0.08:  # names the lexer or the name rules refuse
        return rng.choice(["a--b", "-a", "a-", "1abc", "a.b", "ü", "a/b", "a$b", "`x`", "$(id)"])
    return rng.choice([
        rng.choice(SHELL_WORDS), rng.choice(KEYWORDS), "a" * rng.choice([1, 15, 16, 64, 300]),
        f"n{rng.randint(0, 30)}", "x-y", "_a", "virbr0", "virbr10", "virbra", "br0", "eth0", "lo",
    ])


def _address(rng: random.Random, prefix: bool | None = None) -> str:
    octets = [str(rng.choice([0, 1, 10, 127, 192, 255, 256, rng.randint(0, 300)])) for _ in range(4)]
    if rng.random() < 0.1:
        octets = octets[: rng.randint(1, 3)]
    text = ".".join(octets)
    if rng.random() < 0.05:
        text = rng.choice(["::1", "fe80::1/64", "1.2.3.4.5", "", "1..2.3", "a.b.c.d"])
    if prefix or (prefix is None and rng.random() < 0.5):
        text += "/" + rng.choice([str(rng.randint(0, 40)), "24", "9" * rng.randint(5, 40), ""])
    return text or "0"


def _value(rng: random.Random) -> str:
    return rng.choice([_number, _name, _address])(rng)


def _network(rng: random.Random, name: str, hosts: list[str]) -> list[str]:
    on = f" on {rng.choice(hosts)}" if hosts and rng.random() < 0.7 else ""
    lines = [f"network {name}{on} {{"]
    statements = [
        f"mode {rng.choice(MODES)}", f"bridge {_name(rng)}", f"address {_address(rng, True)}",
        f"subnet {_address(rng, True)}", f"dhcp {_address(rng, False)} - {_address(rng, False)}",
        f"dns {rng.choice(['on', 'off', 'maybe'])}", f"domain {rng.choice(['lab.example', 'x', '-a.b', 'a..b'])}",
        f"mtu {_number(rng)}", f"stp {rng.choice(['on', 'off', '1'])}",
    ]
    lines += [f"    {s}" for s in rng.sample(statements, rng.randint(0, len(statements)))]
    return lines + ["}"]


def _nic(rng: random.Random, networks: list[str]) -> str:
    iface = rng.choice(["", "eth0 ", "eth1 ", f"{_name(rng)} "])
    net = rng.choice(networks) if networks and rng.random() < 0.9 else _name(rng)
    options = rng.sample([f"address {_address(rng)}", f"mac {rng.choice(['52:54:00:00:00:01', '01:00:5e:00:00:01', 'zz'])}",
                          f"model {rng.choice(['virtio', 'e1000e', 'a b'])}", f"gateway {_address(rng, False)}"],
                         rng.randint(0, 3))
    return f"    nic {iface}on {net} {' '.join(options)}".rstrip()


def generate(rng: random.Random) -> str:
    """A random lab: a lab line, networks, hosts, VMs, externals, forwards, expects."""
    networks = [_name(rng) if rng.random() < 0.3 else f"net{i}" for i in range(rng.randint(0, 3))]
    hosts = [_name(rng) if rng.random() < 0.3 else f"kvm{i}" for i in range(rng.randint(0, 2))]
    vms = [_name(rng) if rng.random() < 0.3 else f"vm{i}" for i in range(rng.randint(0, 3))]
    externals = [f"ext{i}" for i in range(rng.randint(0, 2))]
    lines = [] if rng.random() < 0.05 else [f"lab {_name(rng) if rng.random() < 0.5 else 'fuzz'}"]
    for name in networks:
        lines += _network(rng, name, hosts)
    for name in hosts:
        lines += [f"host {name} {{"] + [_nic(rng, networks) for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.3:
            lines.append(f"    route {rng.choice(['default', _address(rng, True)])} via {_address(rng, False)}")
        lines.append("}")
    for name in vms:
        on = f" on {rng.choice(hosts)}" if hosts and rng.random() < 0.8 else ""
        lines.append(f"vm {name}{on} {{")
        if rng.random() < 0.6:
            lines.append(f"    memory {rng.choice([_number(rng) + rng.choice(['MiB', 'GiB', 'G', 'x', '']), '1GiB'])}")
        if rng.random() < 0.5:
            lines.append(f"    vcpus {_number(rng)}")
        if rng.random() < 0.4:
            lines.append("    disk " + rng.choice(DISKS))
        lines += [_nic(rng, networks) for _ in range(rng.randint(0, 3))]
        lines.append("}")
    for name in externals:
        lines += [f"external {name} {{", _nic(rng, networks), "}"]
    for _ in range(rng.randint(0, 3)):
        target = rng.choice(vms) if vms else _name(rng)
        lines.append(f"forward {rng.choice(['tcp', 'udp', 'icmp'])} {_number(rng)} to {target}:{_number(rng)}")
    nodes = hosts + vms + externals or ["x"]
    for _ in range(rng.randint(0, 4)):
        dst = rng.choice(nodes) if rng.random() < 0.8 else _address(rng, False)
        lines.append(f"expect {rng.choice(nodes)} {rng.choice(['->', '!->'])} {dst}")
    if rng.random() < 0.3:
        rng.shuffle(lines)
    return "\n".join(lines) + rng.choice(["\n", "", "\n\n", "\r\n"])


# --- mutated inputs ---------------------------------------------------------------------

SPLICE = ["{", "}", "\n", " ", "#", "->", "!->", "-", '"', "\\", "\t", "\r", "\x0c", "\u00a0",
          "\u200b", "é", "on", "to", "via", "9" * 4400, "a" * 300, "\ufeff", "//", ":", "/", "\x7f"]


def mutate(rng: random.Random, text: str) -> str:
    """One to four random edits of a seed: lines, words or characters."""
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(7)
        lines = text.split("\n")
        if kind == 0 and lines:  # delete a line
            del lines[rng.randrange(len(lines))]
            text = "\n".join(lines)
        elif kind == 1 and lines:  # duplicate a line somewhere
            text = "\n".join(lines[:(i := rng.randrange(len(lines) + 1))] + [rng.choice(lines)] + lines[i:])
        elif kind == 2:  # replace a word
            words = text.split(" ")
            if words:
                words[rng.randrange(len(words))] = rng.choice([_name(rng), _number(rng), _address(rng),
                                                                rng.choice(KEYWORDS), ""])
                text = " ".join(words)
        elif kind == 3 and text:  # delete a run of characters
            i = rng.randrange(len(text))
            text = text[:i] + text[i + rng.randint(1, 20):]
        elif kind == 4:  # insert a piece
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice(SPLICE) + text[i:]
        elif kind == 5 and text:  # truncate
            text = text[: rng.randrange(len(text))]
        elif kind == 6 and len(lines) > 1:  # swap two lines
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


# --- the oracle -------------------------------------------------------------------------


@dataclass
class Failure:
    index: int
    command: str
    problem: str
    source: str


@dataclass
class Result:
    count: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    exit_codes: dict[str, dict[int, int]] = field(default_factory=dict)


def _positions_problem(document: object, path: str, source: str) -> str | None:
    if not isinstance(document, dict) or list(document) != ["diagnostics"] \
            or not isinstance(document["diagnostics"], list):
        return f"not a {{'diagnostics': [...]}} document: {str(document)[:200]}"
    lines = source.split("\n")
    starts = [0]
    for text in lines:
        starts.append(starts[-1] + len(text) + 1)
    for d in document["diagnostics"]:
        if d.get("file") != path:
            return f"diagnostic in another file {d.get('file')!r}: {d}"
        if d.get("severity") not in ("error", "warning", "info") or not d.get("code") or not d.get("message"):
            return f"malformed diagnostic: {d}"
        offsets = []
        for ln, col in ((d["line"], d["column"]), (d["end_line"], d["end_column"])):
            # A column may be one past a line's last character: its line break, or the
            # end of the file.
            if not 1 <= ln <= len(lines) or not 1 <= col <= len(lines[ln - 1]) + 2:
                return f"position {ln}:{col} outside the file ({len(lines)} lines): {d}"
            offsets.append(starts[ln - 1] + col - 1)
        start, end = offsets
        # The start is a character of the file or its end; the (exclusive) end is at most
        # one past the start's character when the start is the end of the file (a caret).
        if not start <= len(source) or not start < end <= max(len(source), start + 1):
            return f"span {start}..{end} outside the file ({len(source)} characters): {d}"
    return None


def check_one(runner: CliRunner, path: Path, source: str, index: int, result: Result) -> None:
    data = source.encode("utf-8", errors="surrogatepass")
    path.write_bytes(data)
    name = str(path)
    for command in (["check", "--format", "json", name], ["fmt", "--check", name]):
        label = " ".join(command[:-1])
        outcome = runner.invoke(cli, command, catch_exceptions=True)
        codes = result.exit_codes.setdefault(label, {})
        codes[outcome.exit_code] = codes.get(outcome.exit_code, 0) + 1
        problem = None
        if outcome.exception is not None and not isinstance(outcome.exception, SystemExit):
            problem = "".join(traceback.format_exception(outcome.exception))
        elif outcome.exit_code not in (0, 1, 2):
            problem = f"exit code {outcome.exit_code}"
        elif "Traceback" in outcome.output:
            problem = f"a traceback in the output:\n{outcome.output[-2000:]}"
        elif command[0] == "check" and outcome.exit_code != 2:
            try:
                problem = _positions_problem(json.loads(outcome.stdout), name, _as_read(source))
            except ValueError as e:
                problem = f"invalid JSON ({e}): {outcome.stdout[:300]!r}"
        elif command[0] == "fmt" and outcome.exit_code == 1 and "would reformat" in outcome.stdout:
            formatted, _ = format_source(_as_read(source), name)
            if formatted is not None and format_source(formatted, name)[0] != formatted:
                problem = "formatting the formatted file changes it again"
        if problem is not None:
            result.failures.append(Failure(index, label, problem, source))


def _as_read(source: str) -> str:
    return source.removeprefix("\ufeff")


def run(seed: int, count: int, *, progress: bool = False, stop_after: int = 20) -> Result:
    result = Result()
    runner = CliRunner()
    started = time.perf_counter()
    rng = random.Random(seed)
    seeds = seed_sources()
    with tempfile.TemporaryDirectory(prefix="topoc-fuzz-") as directory:
        path = Path(directory) / "input.topo"
        for index in range(count):
            source = generate(rng) if index % 2 == 0 else mutate(rng, rng.choice(seeds))
            check_one(runner, path, source, index, result)
            result.count += 1
            if progress and index and index % 5000 == 0:
                rate = index / (time.perf_counter() - started)
                print(f"  {index:,} inputs, {rate:,.0f}/s, {len(result.failures)} failures", flush=True)
            if len(result.failures) >= stop_after:
                break
    result.seconds = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--save", type=Path, help="write failing inputs to this folder")
    args = parser.parse_args()
    print(f"topoc fuzz: {args.count:,} inputs, seed {args.seed}, pid {os.getpid()}", flush=True)
    result = run(args.seed, args.count, progress=True)
    print(f"{result.count:,} inputs (x2 commands) in {result.seconds:,.1f} s "
          f"({result.count / result.seconds:,.0f} inputs/s); {len(result.failures)} failures")
    for label, codes in result.exit_codes.items():
        print(f"  {label}: exit codes {dict(sorted(codes.items()))}")
    for failure in result.failures:
        print(f"--- input {failure.index} ({failure.command}): {failure.problem[:2000]}")
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            (args.save / f"{args.seed}-{failure.index}.topo").write_text(failure.source, encoding="utf-8",
                                                                         errors="surrogatepass")
    sys.exit(1 if result.failures else 0)


if __name__ == "__main__":
    main()
