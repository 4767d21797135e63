"""`topoc graph`: formats, where the output goes, exit codes, and --reach."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import ROOT, require_tool
from test_diagram import compiled
from topoc.backends import diagram
from topoc.backends.diagram_dot import dot_source
from topoc.backends.diagram_mermaid import mermaid_source
from topoc.cli import cli

NAT = str(ROOT / "examples" / "nat.topo")
MIXED = str(ROOT / "examples" / "mixed.topo")


def graph(*args: str) -> Result:
    return CliRunner().invoke(cli, ["graph", *args], catch_exceptions=False)


def test_dot_and_mermaid_go_to_stdout() -> None:
    scene = diagram.scene_for(compiled(Path(NAT)))
    dot = graph(NAT, "-f", "dot")
    assert dot.exit_code == 0 and dot.stdout == dot_source(scene)
    mermaid = graph(NAT, "-f", "mermaid")
    assert mermaid.exit_code == 0 and mermaid.stdout == mermaid_source(scene)


@pytest.mark.parametrize("name, check", [
    ("d.svg", lambda data: ET.fromstring(data).tag == "{http://www.w3.org/2000/svg}svg"),
    ("d.png", lambda data: data.startswith(b"\x89PNG\r\n\x1a\n")),
    ("d.dot", lambda data: data.startswith(b"// natlab: drawn by topoc")),
    ("d.gv", lambda data: b"digraph natlab {" in data),
    ("d.mmd", lambda data: b"\nflowchart LR\n" in data),
])
def test_format_from_the_extension(tmp_path: Path, name: str, check) -> None:
    require_tool("dot")
    out = tmp_path / name
    result = graph(NAT, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert check(out.read_bytes())
    assert "wrote" in result.stdout


def test_format_flag_wins_over_the_extension(tmp_path: Path) -> None:
    out = tmp_path / "diagram.txt"
    assert graph(NAT, "-f", "mermaid", "-o", str(out)).exit_code == 0
    assert out.read_text(encoding="utf-8").startswith("%% natlab")


def test_svg_without_output_goes_to_lab_named_file(tmp_path: Path, monkeypatch) -> None:
    require_tool("dot")
    monkeypatch.chdir(tmp_path)
    result = graph(NAT)
    assert result.exit_code == 0
    ET.parse(tmp_path / "natlab.svg")


def test_unknown_extension_is_a_usage_error(tmp_path: Path) -> None:
    result = graph(NAT, "-o", str(tmp_path / "diagram.txt"))
    assert result.exit_code == 2
    assert "cannot tell the format" in result.stderr and "-f svg|png|dot|mermaid" in result.stderr


def test_missing_dot_exits_2_with_a_clear_message(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no `dot` anywhere
    result = graph(NAT, "-o", str(tmp_path / "d.svg"))
    assert result.exit_code == 2
    assert "graphviz's `dot` is not installed" in result.stderr
    assert not (tmp_path / "d.svg").exists()
    # the formats that need no layout still work
    assert graph(NAT, "-f", "mermaid").exit_code == 0


def test_build_without_dot_exits_2(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(cli, ["build", NAT, "-o", str(tmp_path / "out"),
                                      "--target", "diagram"], catch_exceptions=False)
    assert result.exit_code == 2
    assert "dot" in result.stderr


def test_errors_in_the_lab_exit_1_and_draw_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.topo"
    bad.write_text("lab bad\nvm v on nowhere {\n    nic eth0 on nothing\n}\n", encoding="utf-8")
    out = tmp_path / "bad.svg"
    result = graph(str(bad), "-o", str(out))
    assert result.exit_code == 1
    assert "undefined" in result.stderr
    assert not out.exists()


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = graph(str(tmp_path / "nope.topo"), "-f", "dot")
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_reach_overlay_marks_uplinks_as_the_models_promise() -> None:
    """DESIGN.md's table: NAT reaches out but not in; routed with the route back both
    ways; bridged both ways; host-only neither (nothing beyond the host)."""
    expected = {
        "nat": "LAN: out ✓, in ✗",
        "routed": "LAN: out ✓, in ✓",
        "bridged": "LAN: out ✓, in ✓",
        "hostonly": "LAN: out ✗, in ✗",
    }
    for example, line in expected.items():
        dot = graph(str(ROOT / "examples" / f"{example}.topo"), "-f", "dot", "--reach").stdout
        assert line in dot, (example, line)
    nat = graph(NAT, "-f", "dot", "--reach").stdout
    # out: an arrow at the host's end; in: a bar at the network's end
    assert "arrowhead=tee" in nat and "arrowtail=normal" in nat and "dir=both" in nat


def test_reach_table_matches_the_engine() -> None:
    from topoc.model.reach import predict

    lab = compiled(Path(MIXED))
    scene = diagram.scene_for(lab, reach=True)
    assert scene.reach is not None
    matrix = predict(lab)
    for src in scene.reach.names:
        for dst in scene.reach.names:
            if src != dst:
                assert scene.reach.reaches(src, dst) == matrix.get(src, dst).reachable
    mermaid = graph(MIXED, "-f", "mermaid", "--reach").stdout
    # Mermaid: the uplink keeps its direction; the label says NAT egress is one way
    assert 'h4_kvm1 ===|"via eth0<br/>natbr0 188.64.100.1/24<br/>LAN#58; out ✓, in ✗"| n1_front' \
        in mermaid
    assert 'h4_kvm1 <==>|"via eth0<br/>br1 10.10.101.100/24<br/>LAN#58; out ✓, in ✓"| n2_svc' \
        in mermaid
