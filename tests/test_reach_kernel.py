"""The engine's own model labs (tests/reach_labs/) on a real kernel: `topoc verify`
builds each in network namespaces with the generated host scripts and libvirt's rules,
pings every pair, tries every forward, and must agree with `predict` on every one.

The dual-stack labs (tests/reach_labs_dual/: isolated and host-only, routed with and
without the return route, NAT with and without nat6, bridged and open) must agree in
both families, each family's matrix on its own, and their `expect` lines of both
families hold in the prediction and on the kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from topoc.compiler import compile_file

HERE = Path(__file__).resolve().parent
LABS = sorted((HERE / "reach_labs").glob("*.topo"))
DUAL_STACK_LABS = sorted((HERE / "reach_labs_dual").glob("*.topo"))


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


def test_every_model_has_a_dual_stack_lab() -> None:
    from topoc.model.ir import Mode

    labs = [compile_file(str(path)).lab for path in DUAL_STACK_LABS]
    networks = [n for lab in labs if lab is not None for n in lab.networks]
    models = {n.mode for n in networks if n.managed}
    assert models == {Mode.ISOLATED, Mode.ROUTED, Mode.NAT, Mode.BRIDGED, Mode.OPEN}
    # Isolated with and without an address (host-only), NAT with and without nat6.
    assert {n.address is not None for n in networks if n.mode is Mode.ISOLATED} == {True, False}
    assert {n.nat6 for n in networks if n.mode is Mode.NAT} == {True, False}


@pytest.mark.parametrize("path", DUAL_STACK_LABS, ids=lambda p: p.stem)
def test_dual_stack_prediction_holds_on_a_real_kernel_in_both_families(
        path: Path, verify_environment) -> None:
    from topoc.model.family import FAMILIES, family_of, parse_address
    from topoc.verify.netns import verify

    result = compile_file(str(path))
    lab, analysis = result.lab, result.analysis
    assert lab is not None and analysis is not None
    assert analysis.families == FAMILIES
    # The lab is clean (warnings aside), and its `expect` lines hold in the prediction.
    assert result.ok, [d.message for d in result.diagnostics]
    report, _ = verify(analysis)
    wrong = [(o.family, o.src, o.dst, o.predicted, o.observed) for o in report.pairs if not o.agrees]
    wrong += [(f.family, f.src, f.forward.vm, f.predicted, f.observed)
              for f in report.forwards if not f.agrees]
    assert wrong == []
    assert report.families == FAMILIES
    pairs = len(lab.nodes) * (len(lab.nodes) - 1)
    for family in FAMILIES:
        observed = [o for o in report.pairs if o.family is family]
        assert len(observed) == pairs
        # Both outcomes in each family: the kernel refused what reach said it would.
        assert {o.observed for o in observed} == {True, False}, family
        assert all(parse_address(a) is not None and family_of(parse_address(a)) is family  # type: ignore[arg-type]
                   for o in observed for a in o.addresses)

    # The lab's `expect` lines, both families of them, hold on the kernel too: a node
    # means every address of both families, an address that address alone.
    answered = {(o.src, address): address not in o.failed
                for o in report.pairs for address in o.addresses}
    families_expected = set()
    for expect in lab.expects:
        address = parse_address(expect.dst)
        if address is None:
            got = all(o.observed for o in report.pairs if (o.src, o.dst) == (expect.src, expect.dst))
        else:
            families_expected.add(family_of(address))
            got = answered[(expect.src, str(address))]
        assert got == expect.reachable, (expect.src, expect.dst, expect.reachable)
    assert families_expected == set(FAMILIES)
