"""Scene -> DOT text for graphviz's `dot`: the layout, the look, and DOT escaping.

Every label is an HTML-like label (https://graphviz.org/doc/info/shapes.html#html):
there `&`, `<`, `>` and quotes written as entities and backslashes doubled (see `esc`)
make any text literal, so a disk path like `C:\\N"<b>` shows exactly as written.
Node ids are built from names the grammar restricts to identifiers, and the graphviz
package quotes them.

The layout runs left to right: external machines, the LANs, each host (a cluster with
the hypervisor, its networks and its VMs); the legend sits at the bottom left.
"""

from __future__ import annotations

import html

import graphviz

from topoc.backends.diagram_reach import ReachTable
from topoc.backends.diagram_scene import STYLES, Box, Link, Scene

# DejaVu Sans first: Debian's fontconfig depends on it, so every machine lays out (and
# renders PNGs) with the same metrics and the same bytes, whatever other fonts it has
# (with "Helvetica" first, fonts-liberation, once installed, changes the picture). SVG
# viewers without DejaVu fall back to narrower Helvetica or Arial, so the text fits.
FONT = "DejaVu Sans,Helvetica,Arial,sans-serif"
INK = "#333333"
MUTED = "#6b6b6b"
CABLE = "#555555"
YES, NO = "#1a7f37", "#cf222e"
LEGEND_WIDTH = "2.9"
# Space between a label and its shape: boxes need some; hexagons, octagons and ellipses
# already grow well beyond their label and need none.
MARGINS = {"box": "0.12,0.06", "box3d": "0.16,0.1", "cylinder": "0.14,0.16"}


def visible(text: str) -> str:
    """Control and other invisible characters as `\\xNN`/`\\uNNNN`, so they show (and
    stay valid in XML, which forbids most of them); every other character is kept."""
    out = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def esc(text: str) -> str:
    """Text for an HTML-like label: literal, whatever it holds. Entities for markup;
    and backslashes doubled, because graphviz expands `\\N`, `\\G`, `\\E`... (the node's,
    graph's, edge's name) even in HTML-like labels, after decoding entities, and reads
    `\\\\` as one backslash."""
    return html.escape(visible(text).replace("\\", "\\\\"), quote=True)


def comment_text(text: str) -> str:
    """Text for a `//` comment: on one line."""
    return visible(text)


def node_id(key: tuple[str, str]) -> str:
    # Kinds are fixed words, names are identifiers: "network.natnet" cannot clash.
    return f"{key[0]}.{key[1]}"


# --- labels ---------------------------------------------------------------------------


def box_label(box: Box) -> str:
    parts = [f"<b>{esc(box.lines[0])}</b>"]
    for i, line in enumerate(box.lines[1:], start=1):
        if box.muted_from is not None and i >= box.muted_from:
            parts.append(f'<font point-size="9" color="{MUTED}">{esc(line)}</font>')
        else:
            parts.append(esc(line))
    return "<" + "<br/>".join(parts) + ">"


def host_label(box: Box) -> str:
    """A table: the host's name, then one row per nic and forward; edges attach to the
    rows, so the uplink of a NAT network visibly leaves through its `via` nic."""
    title = f'<font color="white"><b>{esc(box.lines[0])}</b></font>'
    rows = [f'<tr><td bgcolor="{INK}">{title}</td></tr>']
    for port, text in box.ports:
        rows.append(f'<tr><td port="{port}" align="left">{esc(text)}</td></tr>')
    return ('<<table border="1" cellborder="0" cellspacing="0" cellpadding="4" '
            f'color="{INK}" bgcolor="white">' + "".join(rows) + "</table>>")


def edge_label(lines: tuple[str, ...]) -> str:
    return "<" + "<br/>".join(esc(line) for line in lines) + ">"


def title_label(scene: Scene) -> str:
    parts = [f'<font point-size="16"><b>{esc(scene.lab)}</b></font>',
             f'<font point-size="10" color="{MUTED}">from {esc(scene.source)}</font>']
    parts += [f'<font point-size="10" color="{MUTED}">{esc(note)}</font>' for note in scene.notes]
    return "<" + '<br align="left"/>'.join(parts) + '<br align="left"/>>'


# --- nodes and edges ------------------------------------------------------------------


def box_attrs(box: Box) -> dict[str, str]:
    style = STYLES[box.style]
    if box.kind == "host":
        return {"shape": "plain", "label": host_label(box)}
    look = ["filled"] + (["dashed"] if style.dashed else [])
    if style.dot_shape == "box":
        look.append("rounded")
    return {"shape": style.dot_shape, "style": ",".join(look), "fillcolor": style.fill,
            "color": style.stroke, "label": box_label(box),
            "margin": MARGINS.get(style.dot_shape, "0.02,0.02")}


def link_attrs(link: Link) -> dict[str, str]:
    attrs: dict[str, str] = {}
    # A cable into a host's nic row needs no label: the row says interface and address.
    if link.lines and not (link.kind == "nic" and link.dst_port is not None):
        attrs["label"] = edge_label(link.lines)
    if link.kind == "layout":
        attrs["style"] = "invis"
    elif link.kind == "uplink":
        attrs.update(color=STYLES[link.style or "vm"].stroke, penwidth="2.2")
        if link.reach_out or link.reach_in:
            attrs.update(reach_arrows(link))
    elif link.kind == "tunnel":
        # A VXLAN tunnel: the network's colour, dashed and double-lined like a pipe.
        stroke = STYLES[link.style or "vm"].stroke
        attrs.update(color=f"{stroke}:invis:{stroke}", style="dashed", penwidth="1.6",
                     fontcolor=stroke)
    elif link.kind == "forward":
        attrs.update(color=STYLES["nat"].stroke, style="dashed", dir="forward",
                     arrowhead="vee", fontcolor=STYLES["nat"].stroke)
    return attrs


# --reach on an uplink (tail: the host, toward the LAN; head: the network): an arrow
# where that way reaches, a hollow one where only some of it does, a bar where it is
# blocked. https://graphviz.org/docs/attr-types/arrowType/
ARROWS = {"all": "normal", "some": "onormal", "none": "tee", None: "none"}


def reach_arrows(link: Link) -> dict[str, str]:
    return {"dir": "both", "arrowtail": ARROWS[link.reach_out],
            "arrowhead": ARROWS[link.reach_in], "arrowsize": "0.9"}


def add_link(graph: graphviz.Digraph, link: Link) -> None:
    tail = node_id(link.src)
    if link.src_port is not None:
        tail += ":" + link.src_port
    head = node_id(link.dst)
    if link.dst_port is not None:
        head += ":" + link.dst_port
    graph.edge(tail, head, **link_attrs(link))


def add_legend(graph: graphviz.Digraph, scene: Scene) -> None:
    """One sample of each network model used, in its shape and colour and saying what it
    means, stacked in one column; with --reach, the overlay's key and table above it."""
    if not scene.legend and not scene.overlay:
        return
    with graph.subgraph(name="cluster_legend") as legend:
        legend.attr(label="<<b>legend</b>>", style="rounded", color="#bbbbbb", fontsize="10",
                    rank="same")
        if scene.overlay:
            legend.node("legend.reach", label=reach_label(scene), shape="plain")
        for key in scene.legend:
            style = STYLES[key]
            look = ["filled"] + (["dashed"] if style.dashed else [])
            text = (f'<b>{esc(style.title)}</b><br/>'
                    f'<font point-size="8">{esc(style.meaning)}</font>')
            legend.node(f"legend.{key}", label=f"<{text}>", shape=style.dot_shape,
                        style=",".join(look), fillcolor=style.fill, color=style.stroke,
                        fontsize="9", width=LEGEND_WIDTH, height="0.5", fixedsize="true")


REACH_KEY = ("<b>reach</b>, as topoc.model.reach predicts it. On an uplink: an arrow where",
             "the network reaches the LAN (out, at the host) or the LAN reaches",
             "it (in, at the network); hollow: only some; a bar: blocked.")


def reach_label(scene: Scene) -> str:
    """The overlay's key, then its table when there is one: a row per source, a column
    per destination."""
    names = scene.reach.names if scene.reach is not None else ()
    key = (f'<tr><td colspan="{len(names) + 1}" align="left">'
           + "".join(f'{line}<br align="left"/>' for line in REACH_KEY) + "</td></tr>")
    rows = reach_rows(scene.reach) if scene.reach is not None else []
    return ('<<table border="0" cellborder="0" cellspacing="0" cellpadding="2">'
            + key + "".join(rows) + "</table>>")


def reach_rows(table: ReachTable) -> list[str]:
    names = table.names
    rows = ['<tr><td align="right"><i>from \\ to</i></td>'
            + "".join(f"<td><b>{esc(n)}</b></td>" for n in names) + "</tr>"]
    for src in names:
        cells = []
        for dst in names:
            if src == dst:
                cells.append('<td><font color="#bbbbbb">·</font></td>')
            elif table.reaches(src, dst):
                cells.append(f'<td><font color="{YES}">✓</font></td>')
            else:
                cells.append(f'<td><font color="{NO}">✗</font></td>')
        rows.append(f'<tr><td align="right"><b>{esc(src)}</b> →</td>{"".join(cells)}</tr>')
    return rows


def cluster_order(scene: Scene, host: str) -> list[Box]:
    """The order to declare a host's boxes in. In a left-to-right layout dot stacks the
    VMs it reads first at the bottom, so they go in reverse to read top-down in source
    order. Networks go in source order: dot's crossing minimisation then untangles the
    examples fully (mixed.topo has one crossing more the other way round)."""
    boxes = [b for b in scene.boxes if b.host == host]
    vms = [b for b in boxes if b.kind == "vm"]
    return [b for b in boxes if b.kind != "vm"] + vms[::-1]


def dot_source(scene: Scene) -> str:
    graph = graphviz.Digraph(
        name=scene.lab,
        comment=comment_text(f"{scene.lab}: drawn by topoc from {scene.source}. "
                             "Render it with: dot -Tsvg diagram.dot -o diagram.svg"),
    )
    graph.attr("graph", rankdir="LR", newrank="true", label=title_label(scene), labelloc="t",
               labeljust="l", fontname=FONT, nodesep="0.25", ranksep="0.7", pad="0.3",
               bgcolor="white",
               # dot copies this into the SVG as an XML comment. Only the lab's name (an
               # identifier) goes in: a DOT string would read backslashes in a file name.
               comment=f"{scene.lab}: drawn by topoc graph from its .topo file; "
                       "regenerate it rather than edit it")
    graph.attr("node", fontname=FONT, fontsize="11", fontcolor=INK)
    graph.attr("edge", fontname=FONT, fontsize="9", fontcolor=MUTED, color=CABLE,
               arrowhead="none", penwidth="1.2")
    # Declared first, the legend lands at the bottom left (see the note on clusters).
    add_legend(graph, scene)
    for box in scene.boxes:
        if box.host is None:
            graph.node(node_id(box.key), **box_attrs(box))
    for cluster in scene.clusters:
        with graph.subgraph(name=f"cluster_host_{cluster.host}") as sub:
            sub.attr(label=f"<<b>{esc(cluster.title)}</b>>", style="rounded,filled",
                     fillcolor="#f7f9fb", color="#8a9aa9", fontsize="12", margin="14")
            for box in cluster_order(scene, cluster.host):
                sub.node(node_id(box.key), **box_attrs(box))
    for link in scene.links:
        add_link(graph, link)
    return graph.source
