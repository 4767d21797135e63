"""Scene -> Mermaid flowchart text (`flowchart LR`) for Markdown pages, with escaping.

GitHub and GitLab render ```mermaid blocks. Every label is a quoted string, and every
character in it that Mermaid or the HTML it renders into could read as syntax is
written as a Mermaid entity (`#quot;`, `#35;`...):
https://mermaid.js.org/syntax/flowchart.html#entity-codes-to-escape-characters.
Entities also keep `%%{...}%%` directives, `:`/`#` pairs (Mermaid's own style
pre-processing) and `<...>` markup out of user text. Node ids are a kind letter, a
counter and the name's identifier characters, so no Mermaid keyword (`end`, `graph`)
and no two nodes can collide.
"""

from __future__ import annotations

import re

from topoc.backends.diagram_dot import visible
from topoc.backends.diagram_scene import STYLES, Box, Link, Scene

# Mermaid's node shapes: opening and closing brackets around a quoted label.
SHAPES: dict[str, tuple[str, str]] = {
    "rectangle": ("[", "]"),
    "rounded": ("(", ")"),
    "stadium": ("([", "])"),
    "subroutine": ("[[", "]]"),
    "cylinder": ("[(", ")]"),
    "hexagon": ("{{", "}}"),
    "parallelogram": ("[/", "/]"),
    "trapezoid": ("[/", "\\]"),
}

CLUSTER_FILL, CLUSTER_STROKE = "#f7f9fb", "#8a9aa9"  # as in the DOT drawing

# Link syntax per link kind: a plain cable, a thick uplink, a dotted arrow for a port
# forward, and Mermaid's invisible link for layout only.
ARROWS = {"nic": "---", "uplink": "===", "tunnel": "-.-", "forward": "-.->", "layout": "~~~"}

# Characters left as they are; every other ASCII character becomes an entity.
_SAFE = re.compile(r"[A-Za-z0-9 ._/+,=@~()'*!?-]")


# U+2060 WORD JOINER: invisible, and it keeps a backslash apart from a following `n`.
WORD_JOINER = "#8288;"


def esc(text: str) -> str:
    """Text for a quoted Mermaid label: literal, whatever it holds. Non-ASCII letters
    stay as they are (Mermaid files are UTF-8); ASCII punctuation becomes #NN;.

    One more trap: in a label with markup (ours have <br/>), Mermaid turns the two
    characters `\\n` into a line break even after decoding #92;, so `C:\\node` would
    print as `C:` and `ode`. A word joiner between them keeps them on one line and
    invisible (checked with mermaid-cli 11)."""
    shown = visible(text)
    out = []
    for ch, after in zip(shown, shown[1:] + " ", strict=True):
        out.append(ch if ord(ch) > 0x7F or _SAFE.fullmatch(ch) else f"#{ord(ch)};")
        if ch == "\\" and after == "n":
            out.append(WORD_JOINER)
    return "".join(out)


def class_name(style: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", style)


def make_ids(scene: Scene) -> dict[tuple[str, str], str]:
    ids: dict[tuple[str, str], str] = {}
    for i, box in enumerate(scene.boxes):
        ids[box.key] = f"{box.kind[0]}{i}_{re.sub(r'[^A-Za-z0-9_]', '_', box.name)}"
    return ids


def label(lines: list[str] | tuple[str, ...], bold_first: bool = True) -> str:
    parts = [esc(line) for line in lines]
    if bold_first and parts:
        parts[0] = f"<b>{parts[0]}</b>"
    return '"' + "<br/>".join(parts) + '"'


def box_line(box: Box, node: str) -> str:
    lines = list(box.lines) + [text for _, text in box.ports]
    opening, closing = SHAPES[STYLES[box.style].mermaid_shape]
    return f"{node}{opening}{label(lines)}{closing}:::{class_name(box.style)}"


def link_line(link: Link, ids: dict[tuple[str, str], str]) -> str:
    arrow = ARROWS[link.kind]
    if link.kind == "uplink" and (link.reach_out or link.reach_in):
        # --reach: Mermaid draws only links with the same mark at both ends (one-sided
        # marks lose the other end and the thickness, and turning the link around
        # would move the network left of its host), so: both heads when both ways
        # reach in full, crosses when neither does; the label says the rest.
        ends = (link.reach_out, link.reach_in)
        both: dict[tuple[str | None, str | None], str] = {("all", "all"): "<==>", ("none", "none"): "x==x"}
        arrow = both.get(ends, arrow)
    text = ""
    if link.lines and link.kind != "layout":
        text = f"|{label(link.lines, bold_first=False)}|"
    return f"{ids[link.src]} {arrow}{text} {ids[link.dst]}"


def class_defs(scene: Scene) -> list[str]:
    """A classDef for each style the picture uses (boxes and legend), in STYLES order."""
    used = {b.style for b in scene.boxes} | set(scene.legend)
    out = []
    for key, style in STYLES.items():
        if key not in used:
            continue
        extra = ",stroke-dasharray:5 3" if style.dashed else ""
        out.append(f"    classDef {class_name(key)} fill:{style.fill},stroke:{style.stroke},"
                   f"color:#333333{extra}")
    return out


def link_styles(scene: Scene) -> list[str]:
    """Colour uplinks and forwards like their network model (linkStyle counts links in
    the order they appear, from 0)."""
    out = []
    for i, link in enumerate(scene.links):
        if link.kind in ("uplink", "tunnel", "forward") and link.style:
            out.append(f"    linkStyle {i} stroke:{STYLES[link.style].stroke},stroke-width:2px")
    return out


def legend_lines(scene: Scene) -> list[str]:
    if not scene.legend:
        return []
    out = ['    subgraph legend["legend"]']
    for i, key in enumerate(scene.legend):
        style = STYLES[key]
        opening, closing = SHAPES[style.mermaid_shape]
        out.append(f"        legend{i}{opening}{label([style.title, style.meaning])}{closing}"
                   f":::{class_name(key)}")
    out.append("    end")
    out.append("    style legend fill:#ffffff,stroke:#bbbbbb")
    return out


def mermaid_source(scene: Scene) -> str:
    ids = make_ids(scene)
    out = [f"%% {esc(scene.lab)}: drawn by topoc from {esc(scene.source)}"]
    out += [f"%% {esc(note)}" for note in scene.notes]
    out.append("flowchart LR")
    out += [f"    {box_line(b, ids[b.key])}" for b in scene.boxes if b.host is None]
    for i, cluster in enumerate(scene.clusters):
        sub = f"c{i}_{cluster.host.replace('-', '_')}"
        out.append(f"    subgraph {sub}[{label([cluster.title])}]")
        out.append("        direction LR")
        out += [f"        {box_line(b, ids[b.key])}" for b in scene.boxes if b.host == cluster.host]
        out.append("    end")
        out.append(f"    style {sub} fill:{CLUSTER_FILL},stroke:{CLUSTER_STROKE}")
    out += [f"    {link_line(link, ids)}" for link in scene.links]
    out += legend_lines(scene)
    out += class_defs(scene)
    out += link_styles(scene)
    return "\n".join(out) + "\n"
