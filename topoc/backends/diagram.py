"""The `diagram` target: the lab as a picture, in DOT, SVG and Mermaid.

`generate(lab)` returns diagram.dot (graphviz), diagram.svg (that DOT laid out by
graphviz's `dot`) and diagram.mmd (a Mermaid flowchart for Markdown pages). What to
draw is decided once in topoc.backends.diagram_scene; diagram_dot and diagram_mermaid
write it down. `render` pipes DOT through `dot` (no files touched); when `dot` is not
installed it raises ToolMissing, which the CLI turns into exit code 2.
"""

from __future__ import annotations

import subprocess

import graphviz

from topoc.backends import ToolMissing
from topoc.backends.diagram_dot import dot_source
from topoc.backends.diagram_mermaid import mermaid_source
from topoc.backends.diagram_scene import Scene, build_scene
from topoc.model.analysis import Analysis
from topoc.model.ir import Lab

FORMATS = ("svg", "png", "dot", "mermaid")

# File extensions `topoc graph -o` recognises, for when -f is not given.
EXTENSIONS = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot",
              ".mmd": "mermaid", ".mermaid": "mermaid"}

__all__ = ["EXTENSIONS", "FORMATS", "ToolMissing", "draw", "generate", "render", "scene_for"]


def scene_for(subject: Lab | Analysis, *, reach: bool = False, expand: bool = False) -> Scene:
    """What to draw; `reach` adds the reachability overlay (topoc.model.reach's prediction),
    `expand` draws every VM of a large lab instead of collapsing them into groups."""
    if expand:
        lab = subject.lab if isinstance(subject, Analysis) else subject
        return build_scene(subject, reach=reach, collapse_above=len(lab.vms))
    return build_scene(subject, reach=reach)


def render(dot: str, fmt: str) -> bytes:
    """Lay out DOT text with graphviz's `dot` into `fmt` ("svg" or "png") bytes."""
    try:
        return graphviz.pipe("dot", fmt, dot.encode("utf-8"), quiet=True)
    except graphviz.ExecutableNotFound:
        raise ToolMissing("graphviz's `dot` is not installed (Debian: apt-get install "
                          "graphviz); `-f dot` and `-f mermaid` work without it") from None
    except subprocess.CalledProcessError as e:  # our DOT is wrong: a bug, not user error
        raise RuntimeError(f"dot failed on the generated diagram: {e.stderr!r}") from e


def draw(scene: Scene, fmt: str) -> bytes:
    """The scene in one format of FORMATS, as the bytes of the file."""
    if fmt == "mermaid":
        return mermaid_source(scene).encode("utf-8")
    dot = dot_source(scene)
    if fmt == "dot":
        return dot.encode("utf-8")
    return render(dot, fmt)


def generate(lab: Lab) -> dict[str, str]:
    scene = scene_for(lab)
    dot = dot_source(scene)
    return {
        "diagram.dot": dot,
        "diagram.svg": render(dot, "svg").decode("utf-8"),
        "diagram.mmd": mermaid_source(scene),
    }
