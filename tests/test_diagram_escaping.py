"""Hostile strings render literally in DOT, SVG and Mermaid.

tests/diagram_inputs/hostile.topo names its nodes after DOT and Mermaid keywords
(`end`, `graph`, `subgraph`, `node`) and gives disk paths every character DOT strings,
HTML-like labels, graphviz's backslash escapes (`\\N`, `\\G`, `\\l`), SVG and Mermaid
(`#quot;`, `%%{init}%%`, `-->`, backticks) could read as syntax. The SVG must show each
path exactly, and decoding the Mermaid entities must give each path back.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_tool
from test_diagram import compiled, svg_texts
from topoc.backends import diagram
from topoc.backends.diagram_dot import dot_source, visible
from topoc.backends.diagram_mermaid import esc as mermaid_esc
from topoc.backends.diagram_mermaid import mermaid_source

HOSTILE = Path(__file__).resolve().parent / "diagram_inputs" / "hostile.topo"


def mermaid_decoded(label: str) -> str:
    """What a reader sees of a Mermaid label: #NN; entities decoded, and the invisible
    word joiner that keeps Mermaid from reading `\\n` as a line break gone."""
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), label).replace("\u2060", "")


def test_hostile_input_is_what_we_think() -> None:
    lab = compiled(HOSTILE)
    disks = [vm.disk or "" for vm in lab.vms]
    assert '"quoted" <b>bold</b> &amp; \\N \\G \\l' in disks[0]
    assert "#quot;" in disks[0] and "%%{init" in disks[0] and "😀" in disks[0]
    assert disks[1] == "C:\\images\\node.qcow2\ttab"


def test_svg_shows_hostile_strings_literally() -> None:
    dot = require_tool("dot")
    lab = compiled(HOSTILE)
    source = dot_source(diagram.scene_for(lab, reach=True))
    run = subprocess.run([dot, "-Tsvg"], input=source, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    texts = svg_texts(run.stdout)
    for vm in lab.vms:
        assert visible(vm.disk or "") in texts, f"{vm.disk!r} not shown literally"
    # a tab cannot show as itself: it shows as \x09, and the rest stays as written
    assert "C:\\images\\node.qcow2\\x09tab" in texts
    for name in ("end", "graph", "subgraph", "node", "lan", "hostile"):
        assert name in texts


def test_mermaid_labels_decode_to_the_literal_strings() -> None:
    lab = compiled(HOSTILE)
    text = mermaid_source(diagram.scene_for(lab))
    for vm in lab.vms:
        line = next(l for l in text.splitlines() if f"<b>{vm.name}</b>" in l)
        label = line[line.index('"') + 1:line.rindex('"')]
        # Nothing in a label can end the string, open markup or start a directive ...
        assert '"' not in label and "%%" not in label and "`" not in label
        assert "<" not in label.replace("<b>", "").replace("</b>", "").replace("<br/>", "")
        # ... and a reader gets the path back.
        assert visible(vm.disk or "") in mermaid_decoded(label).split("<br/>")


def test_control_characters_stay_visible_and_the_svg_stays_xml(tmp_path: Path) -> None:
    """Invisible characters the front end lets through (it rejects C0 controls but tab)
    are drawn as \\xNN, never raw."""
    require_tool("dot")
    source = HOSTILE.read_text(encoding="utf-8").replace(
        'disk "C:\\\\images\\\\node.qcow2\ttab"', 'disk "bell del\x7f zwsp\u200b end"')
    assert "bell" in source
    path = tmp_path / "control.topo"
    path.write_text(source, encoding="utf-8")
    svg = diagram.generate(compiled(path))["diagram.svg"]
    assert "bell del\\x7f zwsp\\u200b end" in svg_texts(svg)
    assert "\x7f" not in svg and "\u200b" not in svg


def test_mermaid_escape_leaves_plain_text_alone() -> None:
    assert mermaid_esc("vm0 10.0.0.2/24 (1 GiB)") == "vm0 10.0.0.2/24 (1 GiB)"
    assert mermaid_esc('a"b#c') == "a#34;b#35;c"
    assert mermaid_esc("é ✓") == "é ✓"
    # `\n` in a path must not become a line break in Mermaid's HTML labels
    assert mermaid_esc("C:\\node") == "C#58;#92;#8288;node"
    assert mermaid_esc("C:\\Node \\") == "C#58;#92;Node #92;"


def topo_string(text: str) -> str:
    """`text` as a .topo quoted string: backslash and quote escaped with a backslash."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Any text a disk path can hold: no line break, and no C0 control but tab (the front
# end rejects those, since libvirt's XML could not store them).
DISK_TEXT = st.text(st.characters(blacklist_characters="".join(chr(c) for c in range(32) if c != 9),
                                  blacklist_categories=("Cs",)),
                    min_size=1, max_size=40)


@settings(max_examples=40, deadline=None)
@given(disk=DISK_TEXT)
def test_any_disk_path_renders_literally(disk: str, tmp_path_factory) -> None:
    dot = require_tool("dot")
    source = HOSTILE.read_text(encoding="utf-8").replace(
        'disk "C:\\\\images\\\\node.qcow2\ttab"', f"disk {topo_string(disk)}")
    path = tmp_path_factory.mktemp("prop") / "prop.topo"
    path.write_text(source, encoding="utf-8")
    lab = compiled(path)
    assert lab.vms[1].disk == disk
    scene = diagram.scene_for(lab)
    run = subprocess.run([dot, "-Tsvg"], input=dot_source(scene), capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    shown = visible(disk)
    # SVG keeps the text; only a line's outer spaces may go (XML text nodes keep them,
    # but graphviz centres each line by its trimmed width).
    assert any(t.strip() == shown.strip() for t in svg_texts(run.stdout)), shown
    line = next(l for l in mermaid_source(scene).splitlines() if "<b>node</b>" in l)
    label = line[line.index('"') + 1:line.rindex('"')]
    assert shown in mermaid_decoded(label).split("<br/>")
