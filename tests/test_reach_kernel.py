"""The engine's own model labs (tests/reach_labs/) on a real kernel: `topoc verify`
builds each in network namespaces with the generated host scripts and libvirt's rules,
pings every pair, tries every forward, and must agree with `predict` on every one."""

from __future__ import annotations

from pathlib import Path

import pytest

from topoc.compiler import compile_file

LABS = sorted((Path(__file__).resolve().parent / "reach_labs").glob("*.topo"))
@pytest.mark.parametrize("path", LABS, ids=lambda p: p.stem)
def test_prediction_holds_on_a_real_kernel(path: Path, verify_environment) -> None:
    from topoc.verify.netns import verify

    lab = compile_file(str(path)).lab
    assert lab is not None
    report, _ = verify(lab)
    wrong = [(o.src, o.dst, o.predicted, o.observed) for o in report.pairs if not o.agrees]
    wrong += [(f.src, f.forward.vm, f.predicted, f.observed) for f in report.forwards if not f.agrees]
    assert wrong == []
    assert len(report.pairs) == len(lab.nodes) * (len(lab.nodes) - 1)
    # Both outcomes occur in every lab: the kernel really refused what we said it would.
    assert {o.observed for o in report.pairs} == {True, False}
