"""Backends: pure functions from the IR to artifacts.

Each target is a module `topoc.backends.<target>` with `generate(lab: Lab) -> dict[str,
str]`: relative output path -> file text. A backend does no file I/O and reads only the
IR (and the model's topology), never the parse tree; it never checks (topoc.checks does) and
assumes a lab that checked clean. The writer (topoc.backends.writer) puts artifacts on disk.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from topoc.model.ir import Lab

Artifacts = dict[str, str]


class ToolMissing(Exception):
    """A system tool a backend needs (e.g. graphviz's `dot`) is not installed: an
    environment problem, which the CLI reports with exit code 2."""


# Target name -> module, in the order `topoc build` runs them.
TARGETS: dict[str, str] = {
    "libvirt": "topoc.backends.libvirt",
    "host": "topoc.backends.host",
    "cloud-init": "topoc.backends.cloudinit",
    "diagram": "topoc.backends.diagram",
}


def backend(target: str) -> Callable[[Lab], Artifacts]:
    module = importlib.import_module(TARGETS[target])
    return module.generate


def target_available(target: str) -> bool:
    """Whether the target's backend module exists in this installation. A module that
    exists but fails to import is a bug, and raises rather than quietly vanishing."""
    module = TARGETS[target]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        return False
    return True


def available_targets() -> list[str]:
    """The targets whose backend module exists in this installation, in build order."""
    return [target for target in TARGETS if target_available(target)]


def generate(lab: Lab, targets: list[str]) -> Artifacts:
    artifacts: Artifacts = {}
    for target in targets:
        for path, text in backend(target)(lab).items():
            if path in artifacts:
                raise ValueError(f"backends {target!r} and another both write {path!r}")
            artifacts[path] = text
    return artifacts
