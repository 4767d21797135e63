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

# Link syntax per link kind: a plain cable, a thick uplink, a dotted arrow for a port
# forward, and Mermaid's invisible link for layout only.
ARROWS = {"nic": "---", "uplink": "===", "forward": "-.->", "layout": "~~~"}

# Characters left as they are; every other ASCII character becomes an entity.
_SAFE = re.compile(r"[A-Za-z0-9 ._/+,=@~()'*!?-]")


def esc(text: str) -> str:
    """Text for a quoted Mermaid label: literal, whatever it holds. Non-ASCII letters
    stay as they are (Mermaid files are UTF-8); ASCII punctuation becomes #NN;."""
    return "".join(ch if ord(ch) > 0x7F or _SAFE.fullmatch(ch) else f"#{ord(ch)};"
                   for ch in visible(text))


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
    src, dst, arrow = ids[link.src], ids[link.dst], ARROWS[link.kind]
    if link.kind == "uplink" and (link.reach_out or link.reach_in):
        # --reach: arrowheads where the way reaches in full (Mermaid has no hollow or
        # bar heads; the label's "LAN: out ✓, in ✗" tells the rest).
        out, inbound = link.reach_out == "all", link.reach_in == "all"
        if out and inbound:
            arrow = "<==>"
        elif out:
            src, dst, arrow = dst, src, "==>"
        elif inbound:
            arrow = "==>"
    text = ""
    if link.lines and link.kind != "layout":
        text = f"|{label(link.lines, bold_first=False)}|"
    return f"{src} {arrow}{text} {dst}"


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
        if link.kind in ("uplink", "forward") and link.style:
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
    return out


def mermaid_source(scene: Scene) -> str:
    ids = make_ids(scene)
    out = [f"%% {esc(scene.lab)}: drawn by topoc from {esc(scene.source)}"]
    out += [f"%% {esc(note)}" for note in scene.notes]
    out.append("flowchart LR")
    out += [f"    {box_line(b, ids[b.key])}" for b in scene.boxes if b.host is None]
    for i, cluster in enumerate(scene.clusters):
        out.append(f"    subgraph c{i}_{cluster.host.replace('-', '_')}[{label([cluster.title])}]")
        out.append("        direction LR")
        out += [f"        {box_line(b, ids[b.key])}" for b in scene.boxes if b.host == cluster.host]
        out.append("    end")
    out += [f"    {link_line(link, ids)}" for link in scene.links]
    out += legend_lines(scene)
    out += class_defs(scene)
    out += link_styles(scene)
    return "\n".join(out) + "\n"
