"""The diagram backend on every example: real `dot`, real XML parsing, golden files.

For each example (and each lab in tests/diagram_inputs/): the DOT lays out with
graphviz's `dot` without a single warning, the SVG parses as XML and shows every
network, host, VM and external machine, the Mermaid text has a node for each of them and
a link for every nic, and DOT and Mermaid match their golden files
(tests/golden/diagram/<name>/). The same lab gives the same bytes, also across
processes with different hash seeds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import ROOT, example_files, require_tool
from topoc.backends import diagram
from topoc.backends.diagram_dot import dot_source
from topoc.backends.diagram_mermaid import esc, make_ids, mermaid_source
from topoc.compiler import compile_file
from topoc.model.ir import Lab

SVG = "{http://www.w3.org/2000/svg}"
INPUTS = Path(__file__).resolve().parent / "diagram_inputs"
# The examples, and labs for what they leave out: two hosts, the open model, a DHCP-only
# VM, host routes (twohosts), and strings that are syntax elsewhere (hostile).
CASES = example_files() + sorted(INPUTS.glob("*.topo"))


def compiled(path: Path) -> Lab:
    result = compile_file(str(path))
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.lab is not None
    return result.lab


def svg_texts(svg: str) -> list[str]:
    """Every <text> of an SVG, as a reader sees it (ElementTree decodes entities)."""
    root = ET.fromstring(svg)
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def all_names(lab: Lab) -> list[str]:
    return [n.name for n in lab.networks] + [n.name for n in lab.nodes]


@pytest.fixture(params=CASES, ids=[p.stem for p in CASES])
def example(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_dot_renders_without_warnings(example: Path) -> None:
    dot = require_tool("dot")
    for reach in (False, True):
        source = dot_source(diagram.scene_for(compiled(example), reach=reach))
        run = subprocess.run([dot, "-Tsvg"], input=source, capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stderr
        assert run.stderr == "", f"dot warned on {example.name} (reach={reach}):\n{run.stderr}"


def test_svg_parses_and_names_everything(example: Path) -> None:
    require_tool("dot")
    lab = compiled(example)
    artifacts = diagram.generate(lab)
    assert sorted(artifacts) == ["diagram.dot", "diagram.mmd", "diagram.svg"]
    texts = svg_texts(artifacts["diagram.svg"])
    # Each name is the bold first line of its box: a <text> of its own.
    missing = [name for name in all_names(lab) if name not in texts]
    assert not missing, f"the SVG of {example.name} does not show {missing}"
    # and the cluster of each host says which host it is
    for host in lab.hosts:
        assert any(t.startswith(f"host {host.name}") for t in texts)


def mermaid_nodes(text: str) -> dict[str, str]:
    """node id -> its label's source, for every node definition line."""
    nodes = {}
    for line in text.splitlines():
        m = re.match(r"\s+([A-Za-z][A-Za-z0-9_]*)[\[({>/]+\"(.*)\"[\])}/\\]+:::[a-z]+$", line)
        if m:
            nodes[m.group(1)] = m.group(2)
    return nodes


def mermaid_links(text: str) -> list[tuple[str, str, str]]:
    """(from, to, label) for every link line."""
    links = []
    for line in text.splitlines():
        m = re.match(r"\s+(\w+) (?:---|===|-\.->|~~~|==>|<==>)(?:\|\"(.*)\"\|)? (\w+)$", line)
        if m:
            links.append((m.group(1), m.group(3), m.group(2) or ""))
    return links


def test_mermaid_has_every_node_and_edge(example: Path) -> None:
    lab = compiled(example)
    scene = diagram.scene_for(lab)
    text = mermaid_source(scene)
    assert text.splitlines()[1] == "flowchart LR"
    ids = make_ids(scene)
    nodes = mermaid_nodes(text)
    for kind, group in (("network", lab.networks), ("host", lab.hosts), ("vm", lab.vms),
                        ("external", lab.externals)):
        for item in group:
            node = ids[(kind, item.name)]
            assert nodes[node].startswith(f"<b>{item.name}</b>"), (node, nodes.get(node))
    links = mermaid_links(text)
    for node in lab.nodes:
        for nic in node.nics:
            ends = {ids[(node.kind.value, node.name)], ids[("network", nic.network)]}
            label = "<br/>".join(esc(x) for x in [nic.name, *(str(a) for a in nic.addresses)])  # both families
            assert any({a, b} == ends and text_ == label for a, b, text_ in links), \
                f"no link for {node.name}'s {nic.name} on {nic.network}"
    for i, host in enumerate(lab.hosts):
        assert f'    subgraph c{i}_{host.name}["<b>host {host.name}' in text
    assert text.count("\n    subgraph ") == text.count("\n    end\n")


def test_golden_dot_and_mermaid(example: Path, golden) -> None:
    scene = diagram.scene_for(compiled(example))
    golden.check(f"diagram/{example.stem}/diagram.dot", dot_source(scene))
    golden.check(f"diagram/{example.stem}/diagram.mmd", mermaid_source(scene))


def test_same_input_same_bytes(example: Path) -> None:
    require_tool("dot")
    first = diagram.generate(compiled(example))
    second = diagram.generate(compiled(example))
    assert first == second


def test_same_bytes_across_hash_seeds() -> None:
    """Set or dict iteration that leaks into the output shows up as a difference
    between two processes with different hash seeds."""
    require_tool("dot")
    script = ("import sys, hashlib; from topoc.compiler import compile_file; "
              "from topoc.backends import diagram; "
              "a = diagram.generate(compile_file(sys.argv[1]).lab); "
              "print(hashlib.sha256(repr(sorted(a.items())).encode()).hexdigest())")
    example = str(ROOT / "examples" / "mixed.topo")
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", script, example], capture_output=True,
                             text=True, env=env, check=True, timeout=60)
        digests.add(run.stdout)
    assert len(digests) == 1


def test_the_model_shows_in_shape_and_colour() -> None:
    """Each network model its own shape and fill in the DOT; host-only is not isolated."""
    mixed = dot_source(diagram.scene_for(compiled(ROOT / "examples" / "mixed.topo")))
    hostonly = dot_source(diagram.scene_for(compiled(ROOT / "examples" / "hostonly.topo")))
    assert re.search(r'"network\.front" \[.*shape=hexagon', mixed)
    assert re.search(r'"network\.svc" \[.*shape=octagon', mixed)
    assert re.search(r'"network\.back" \[.*shape=box', mixed)
    assert re.search(r'"network\.lan" \[.*shape=ellipse .*style="filled,dashed"', mixed)
    assert re.search(r'"network\.hostnet" \[.*shape=cylinder', hostonly)
    assert '"network.hostnet" [label=<<b>hostnet</b><br/>host-only<br/>' in hostonly
    assert "isolated" not in hostonly  # neither on the network nor in the legend


def test_uplinks_leave_through_the_via_nic_and_forwards_show_on_the_host() -> None:
    dot = dot_source(diagram.scene_for(compiled(ROOT / "examples" / "nat.topo")))
    assert ('"host.kvm1":"nic-eth0" -> "network.natnet" '
            '[label=<via eth0<br/>natbr0 188.64.100.1/24>') in dot
    # the cable from the LAN lands on the nic's row, which names it: no label twice
    assert '\t"network.lan" -> "host.kvm1":"nic-eth0"\n' in dot
    assert '<td port="fwd-0" align="left">forward tcp 2222 to vm0:22</td>' in dot
    assert '"host.kvm1":"fwd-0" -> "vm.vm0"' in dot


def test_isolated_network_has_no_link_to_the_host() -> None:
    """The host has no foot on an isolated segment: only an invisible layout edge."""
    dot = dot_source(diagram.scene_for(compiled(ROOT / "examples" / "isolated.topo")))
    edge = [line for line in dot.splitlines() if '"host.kvm1" -> "network.isonet"' in line]
    assert edge == ['\t"host.kvm1" -> "network.isonet" [style=invis]']


def test_a_dual_stack_lab_shows_both_families_in_dot_and_mermaid() -> None:
    """Each network's IPv4 and IPv6 subnet (and DHCP ranges, and how a nat network
    treats IPv6), each nic's two addresses: in the scene, the SVG dot draws and the
    Mermaid text."""
    lab = compiled(INPUTS / "dualstack.topo")
    scene = diagram.scene_for(lab)
    boxes = {b.key: b for b in scene.boxes}
    natnet = boxes[("network", "natnet")].lines
    assert ("188.64.100.0/24" in natnet and "fd00:64::/64" in natnet
            and "DHCPv6 fd00:64::100 - fd00:64::1ff" in natnet and "IPv6 routed, not NATed" in natnet)
    assert "IPv6 NATed (nat6)" in boxes[("network", "masqnet")].lines
    assert boxes[("network", "v6only")].style == "host-only"  # its IPv6 address is the host's
    assert boxes[("vm", "web")].lines[1:4] == ("188.64.100.2", "fd00:64::2", "fd00:6::2")
    assert boxes[("vm", "dyn")].lines[1:3] == ("DHCP", "DHCPv6")
    assert boxes[("host", "kvm1")].ports[0][1] == "eth0 192.168.101.11/24, 2001:db8:101::11/64"
    assert scene.clusters[0].title == "host kvm1 · 192.168.101.11, 2001:db8:101::11"
    dot = require_tool("dot")
    svg = subprocess.run([dot, "-Tsvg"], input=dot_source(scene), capture_output=True, text=True,
                         timeout=60, check=True).stdout
    texts = svg_texts(svg)
    for shown in ("fd00:64::/64", "fd00:64::2", "2001:db8:a::5/64", "IPv6 NATed (nat6)"):
        assert any(shown in t for t in texts), shown
    mermaid = mermaid_source(scene)
    assert esc("fd00:66::5/64") in mermaid and esc("2001:db8:101::/64") in mermaid


def test_an_ipv4_only_lab_is_drawn_as_before() -> None:
    """The IPv4-only examples' goldens are unchanged (test_golden_dot_and_mermaid); here:
    no line of an IPv4-only lab's scene mentions IPv6."""
    lab = compiled(ROOT / "examples" / "mixed.topo")
    scene = diagram.scene_for(lab)
    assert not any("IPv6" in line or "DHCPv6" in line for b in scene.boxes for line in b.lines)


def test_a_collapsed_dual_stack_group_gives_its_ipv6_span_too(tmp_path: Path) -> None:
    vms = "\n".join(f"vm v{i} on h {{\n    nic on n address 10.0.0.{i + 10} address fd00::{i + 10:x}\n}}"
                    for i in range(70))
    path = tmp_path / "big.topo"
    path.write_text("lab big\nhost h {\n}\nnetwork n on h {\n    mode nat\n    address 10.0.0.1/24\n"
                    f"    address fd00::1/64\n}}\n{vms}\n", encoding="utf-8")
    scene = diagram.scene_for(compiled(path))
    [group] = [b for b in scene.boxes if b.kind == "vm"]
    assert group.lines == ("70 VMs", "v0 … v69", "10.0.0.10 - 10.0.0.79", "fd00::a - fd00::4f")


def test_the_reach_overlay_of_a_dual_stack_lab_gives_each_family_its_line() -> None:
    """A nat network's IPv6 is routed unless nat6: the LAN answers its VMs in IPv4 (NAT)
    but not in IPv6 (no route back to fd00:64::/64), while nat6 masquerades IPv6 too."""
    lab = compiled(INPUTS / "dualstack.topo")
    scene = diagram.scene_for(lab, reach=True)
    uplinks = {link.dst[1]: link for link in scene.links if link.kind == "uplink"}
    assert uplinks["natnet"].lines[-2:] == ("LAN IPv4: out 1 of 2, in ✗", "LAN IPv6: out ✗, in ✗")
    assert uplinks["masqnet"].lines[-2:] == ("LAN IPv4: out ✓, in ✗", "LAN IPv6: out ✓, in ✗")
    # An IPv4-only lab keeps its one line.
    nat = diagram.scene_for(compiled(ROOT / "examples" / "nat.topo"), reach=True)
    assert [line for link in nat.links if link.kind == "uplink" for line in link.lines
            if line.startswith("LAN")] == ["LAN: out ✓, in ✗"]
