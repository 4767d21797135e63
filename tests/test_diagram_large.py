"""Large labs: a 1,000-VM lab draws to SVG well under 30 s, collapsed by default and
in full with --expand (bench/diagram_bench.py prints the figures)."""

from __future__ import annotations

import importlib.util
import re
import time

import pytest

from conftest import ROOT, require_tool
from test_diagram import compiled, svg_texts
from topoc.backends import diagram
from topoc.backends.diagram_scene import COLLAPSE_ABOVE_VMS
from topoc.model.ir import Lab


def _bench_module():
    path = ROOT / "bench" / "diagram_bench.py"
    spec = importlib.util.spec_from_file_location("diagram_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lab_1000(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    path = tmp_path_factory.mktemp("large") / "lab1000.topo"
    path.write_text(_bench_module().lab_source(1000), encoding="utf-8")
    return compiled(path)


def test_a_large_lab_is_collapsed_and_says_so(lab_1000: Lab) -> None:
    require_tool("dot")
    start = time.perf_counter()
    scene = diagram.scene_for(lab_1000)
    svg = diagram.draw(scene, "svg").decode("utf-8")
    seconds = time.perf_counter() - start
    assert seconds < 10, f"collapsed 1,000-VM lab took {seconds:.1f} s"
    assert scene.collapsed and any("1000 VMs" in note for note in scene.notes)
    texts = svg_texts(svg)
    assert any(t.startswith("1000 VMs (over") for t in texts)  # said in the picture too
    counts = [int(m.group(1)) for t in texts if (m := re.fullmatch(r"(\d+) VMs", t))]
    assert sum(counts) == 1000 and len(counts) == 4  # one group per network
    for network in lab_1000.networks:
        assert network.name in texts


def test_a_1000_vm_lab_draws_in_full_under_30_seconds(lab_1000: Lab) -> None:
    require_tool("dot")
    start = time.perf_counter()
    scene = diagram.scene_for(lab_1000, expand=True)
    svg = diagram.draw(scene, "svg").decode("utf-8")
    seconds = time.perf_counter() - start
    assert seconds < 30, f"1,000-VM lab took {seconds:.1f} s to draw in full"
    assert not scene.collapsed
    texts = set(svg_texts(svg))
    assert all(vm.name in texts for vm in lab_1000.vms)


def test_small_labs_are_never_collapsed() -> None:
    for path in sorted((ROOT / "examples").glob("*.topo")):
        lab = compiled(path)
        assert len(lab.vms) <= COLLAPSE_ABOVE_VMS
        assert not diagram.scene_for(lab).collapsed


def test_reach_overlay_is_left_out_of_large_labs_with_a_note(lab_1000: Lab) -> None:
    scene = diagram.scene_for(lab_1000, reach=True)
    assert scene.reach is None
    assert any("reachability overlay left out" in note for note in scene.notes)


def test_a_mid_size_lab_keeps_the_uplink_overlay_but_not_the_table(tmp_path) -> None:
    """22 nodes: the uplinks still say who reaches the LAN; a 22 x 22 table would not
    be read, so it is left out, with a note."""
    path = tmp_path / "lab20.topo"
    path.write_text(_bench_module().lab_source(20), encoding="utf-8")
    scene = diagram.scene_for(compiled(path), reach=True)
    assert scene.overlay and scene.reach is None
    assert any("who-reaches-whom table left out: 22 nodes" in note for note in scene.notes)
    nat_uplink = next(link for link in scene.links
                      if link.kind == "uplink" and link.dst == ("network", "net0"))
    assert (nat_uplink.reach_out, nat_uplink.reach_in) == ("all", "none")
