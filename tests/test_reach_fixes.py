"""Fixes that lead somewhere: `topoc reach` and `expect` diagnostics offer a fix that
names a concrete edit only when the engine confirms, on a copy of the lab, that the edit
makes the pair reachable; and `topoc reach FILE SRC DST` explains a pair even when the
file's `expect` lines fail.

The end-to-end property: for every failing pair of every example and reach lab, each
fix offered is applied to the *source text* (not the IR), the file compiled again, and
the pair must now be reachable."""

from __future__ import annotations

import re
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from conftest import EXAMPLES

from topoc.compiler import compile_source
from topoc.model import reach

LABS = Path(__file__).resolve().parent / "reach_labs"
NAT = (EXAMPLES / "nat.topo").read_text(encoding="utf-8")

# The issue's reproducer: vm2 on a second NAT network, both `via eth0`.
TWO_NAT = NAT.replace("expect vm0 -> win10\nexpect vm0 -> vm1\nexpect win10 !-> vm0\n", "") + """
network natnet2 on kvm1 {
    mode nat via eth0
    bridge natbr2
    address 188.64.102.1/24
}

vm vm2 on kvm1 {
    nic eth0 on natnet2 address 188.64.102.2
}

expect vm2 -> vm0
"""


def _lab(source: str):  # type: ignore[no-untyped-def]
    result = compile_source(source, "lab.topo")
    assert result.lab is not None, [d.message for d in result.diagnostics]
    return result.lab


def test_the_wrong_fix_is_no_longer_offered() -> None:
    explained = reach.explain(_lab(TWO_NAT), "vm2", "vm0")
    assert "drop `via eth0`" not in explained
    assert "note: dropping `via eth0` from `natnet` alone would not make it reachable" in explained
    [d] = [d for d in compile_source(TWO_NAT, "lab.topo").diagnostics if d.code == "expect-failed"]
    assert "fix: " not in (d.hint or "") and "drop `via eth0`" not in (d.hint or "")


def test_a_fix_the_engine_confirms_is_offered() -> None:
    """natnet `via eth9` (a nic kvm1 lacks) blocks vm0 -> win10 out of eth0: dropping
    `via eth9` does make it reachable, so it is offered."""
    lab = _lab(NAT.replace("mode nat via eth0", "mode nat via eth9"))
    explained = reach.explain(lab, "vm0", "win10")
    assert "fix: `natnet` forwards out only through `eth9`" in explained and "note:" not in explained


def _apply_to_source(source: str, fix: str) -> str | None:
    """The fix's edit on the .topo text, or None for advice that names no edit."""
    if m := re.search(r"`([^`]+)` (?:accepts forwarded traffic only from|forwards out only through) "
                      r"`([^`]+)`.*drop `via \2`", fix):
        network, via = m.groups()
        block = re.search(rf"network {re.escape(network)}\b[^{{]*{{[^}}]*}}", source)
        assert block is not None
        text = block.group(0).replace(f" via {via}", "", 1)
        return source[: block.start()] + text + source[block.end():]
    if m := re.search(r"add `(route \S+ via [0-9.]+)` to \w+ `([^`]+)`", fix):
        route, node = m.groups()
        header = re.search(rf"^(host|vm|external) {re.escape(node)}\b[^\n]*{{\n", source, re.MULTILINE)
        assert header is not None
        return source[: header.end()] + f"    {route}\n" + source[header.end():]
    return None


def _sources() -> list[tuple[str, str]]:
    paths = sorted(EXAMPLES.glob("*.topo")) + sorted(LABS.glob("*.topo"))
    return [(p.name, p.read_text(encoding="utf-8")) for p in paths] + [("two-nat-via", TWO_NAT)]


CASES = []
for _name, _source in _sources():
    _l = _lab(_source)
    for _src in (n.name for n in _l.nodes):
        for _dst in (n.name for n in _l.nodes):
            if _src == _dst:
                continue
            _result, _probes = reach.pair(_l, _src, _dst)
            for _p in _probes:
                if not _p.ok and _p.fix and reach._remedy(_l, _p.fix) is not None:
                    CASES.append((_name, _src, str(_p.target), _source))
                    break


def test_there_are_concrete_fixes_to_try() -> None:
    assert len(CASES) >= 5, CASES


@pytest.mark.parametrize("name, src, target, source", CASES,
                         ids=[f"{c[0]}:{c[1]}->{c[2]}" for c in CASES])
def test_every_fix_offered_makes_the_pair_reachable_when_applied_to_the_file(name, src, target, source) -> None:
    lab = _lab(source)
    p = reach.probe(lab, src, IPv4Address(target))
    fix, note = reach.confirmed_fix(p)
    if not fix:
        assert note, "a concrete fix withheld says why"
        return
    edited = _apply_to_source(source, fix)
    assert edited is not None and edited != source, fix
    again = reach.probe(_lab(edited), src, IPv4Address(target))
    assert again.ok, f"the fix `{fix}` was applied to {name} and {src} -> {target} still fails: {again.failure}"


def test_reach_explains_a_pair_when_the_files_expects_fail(tmp_path: Path) -> None:
    path = tmp_path / "twonat.topo"
    path.write_text(TWO_NAT, encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "topoc", "reach", str(path), "vm2", "vm0"],
                         capture_output=True, text=True, check=False, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("vm2 -> vm0: unreachable\n")
    assert "1 `expect` line(s)" in run.stderr
    # Other errors still stop it, as before.
    path.write_text(TWO_NAT.replace("vcpus 1", "vcpus 0", 1), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "topoc", "reach", str(path), "vm2", "vm0"],
                         capture_output=True, text=True, check=False, timeout=60)
    assert run.returncode == 1 and "invalid-value" in run.stderr
