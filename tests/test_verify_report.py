"""The verify report's text and JSON (topoc.verify.report), without a kernel: an
IPv4-only lab's report is what it was before IPv6 (no family anywhere), a dual-stack
lab's shows one matrix per family under its title, names the family of a mismatch and
explains it in that family alone, and gives every JSON pair its family.

The reports are built from reach's own prediction with one pair observed the other way
(as a tampered script would make it), so every part of the rendering shows."""

from __future__ import annotations

import json

from conftest import ROOT
from topoc.compiler import compile_file
from topoc.model.family import IPV4, IPV6, Family
from topoc.model.reach import forward_reach, forward_target, predict_by_family
from topoc.model.topology import node_addresses
from topoc.verify.report import ForwardObservation, Observation, Report, render_json, render_text


def _report(path: str, flipped: tuple[str, str, Family]):
    result = compile_file(str(ROOT / path))
    analysis = result.analysis
    assert analysis is not None
    dual = analysis.families != (IPV4,)
    pairs = []
    for matrix in predict_by_family(analysis):
        for r in matrix:
            addresses = tuple(str(a) for a in node_addresses(analysis, r.dst, matrix.family))
            observed = r.reachable != ((r.src, r.dst, matrix.family) == flipped)
            pairs.append(Observation(r.src, r.dst, r.reachable, observed, addresses,
                                     () if observed else addresses,
                                     family=matrix.family if dual else None))
    forwards = []
    for family in analysis.families:
        for fwd, src, predicted in forward_reach(analysis, family):
            target = forward_target(analysis.lab, fwd, src, family)
            shown = f"[{target}]" if family is IPV6 else str(target)
            forwards.append(ForwardObservation(fwd, src, f"{shown}:{fwd.port}", predicted, predicted,
                                               family=family if dual else None))
    report = Report(analysis.lab.name, pairs, forwards)
    report.notes.append("a note")
    return report, analysis


def test_an_ipv4_only_report_has_no_family(golden):
    report, analysis = _report("examples/nat.topo", ("vm0", "win10", IPV4))
    assert report.families == ()
    text = render_text(report, analysis)
    assert "IPv4" not in text and "IPv6" not in text
    golden.check("verify/ipv4-only.txt", text)
    document = render_json(report)
    assert all("family" not in pair for pair in document["pairs"] + document["forwards"])
    assert document["forwards"]
    golden.check("verify/ipv4-only.json", json.dumps(document, indent=2) + "\n")


def test_a_dual_stack_report_shows_each_family_on_its_own(golden):
    report, analysis = _report("tests/reach_labs_dual/nat.topo", ("pc", "vm0", IPV6))
    assert report.families == (IPV4, IPV6)
    text = render_text(report, analysis)
    lines = text.splitlines()
    # One matrix per family, under its title, IPv4's first.
    assert lines.index("IPv4:") < lines.index("IPv6:")
    assert "mismatch (IPv6): pc -> vm0: predicted reachable, observed unreachable" in text
    # The explanation is of vm0's IPv6 address alone.
    assert "to fd00:64::2:" in text and "to 188.64.100.2:" not in text
    names = len(analysis.lab.nodes)
    checks = 2 * names * (names - 1) + len(report.forwards)
    assert f"{checks - 1} of {checks} checks agree; 1 mismatch" in text
    # A forward is tried in each family, at the host's address of that family.
    assert "forward tcp 2222 -> vm0:22 from pc via 192.168.101.11:2222: predicted open" in text
    assert "forward tcp 2222 -> vm0:22 from pc via [2001:db8:101::11]:2222: predicted open" in text
    golden.check("verify/dual-stack.txt", text)
    document = render_json(report)
    assert {pair["family"] for pair in document["pairs"]} == {"IPv4", "IPv6"}
    assert {forward["family"] for forward in document["forwards"]} == {"IPv4", "IPv6"}
    assert [p for p in document["pairs"] if p["predicted"] != p["observed"]] == [
        {"src": "pc", "dst": "vm0", "family": "IPv6", "predicted": True, "observed": False}]
    golden.check("verify/dual-stack.json", json.dumps(document, indent=2) + "\n")
