"""Nothing lives at module level between compilations: compiling different labs
alternately in one process, a thousand times, gives exactly what a fresh process gives
(the diagnostics as JSON, every build artifact), as a long-lived process holding
several files (an editor's language server) needs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from conftest import EXAMPLES, GOLDEN
from topoc.backends import generate
from topoc.backends.writer import MANIFEST
from topoc.compiler import compile_source
from topoc.diagnostics import render_json

TOPOC = [sys.executable, "-m", "topoc"]
LABS = [EXAMPLES / "mixed.topo", EXAMPLES / "routed.topo",
        GOLDEN / "diagnostics" / "multi-stage-01" / "input.topo"]
TARGETS = ["libvirt", "host"]
ROUNDS = 1000


def _digest(files: dict[str, str]) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return h.hexdigest()


def _fresh(path: Path, out: Path) -> tuple[str, str | None]:
    """(diagnostics JSON, digest of the build's artifacts or None) from new processes."""
    check = subprocess.run([*TOPOC, "check", "--format", "json", str(path)], capture_output=True,
                           text=True, timeout=120)
    build = subprocess.run([*TOPOC, "build", str(path), "--target", ",".join(TARGETS), "-o", str(out)],
                           capture_output=True, text=True, timeout=120)
    if build.returncode != 0:
        return check.stdout, None
    files = {str(p.relative_to(out)): p.read_text(encoding="utf-8") for p in out.rglob("*")
             if p.is_file() and p.name != MANIFEST}
    return check.stdout, _digest(files)


def _in_process(path: Path, source: str) -> tuple[str, str | None]:
    result = compile_source(source, str(path))
    diagnostics = render_json(result.diagnostics)
    if not result.ok:
        return diagnostics, None
    assert result.lab is not None
    return diagnostics, _digest(generate(result.lab, TARGETS))


def test_alternating_compilations_match_fresh_processes(tmp_path: Path) -> None:
    fresh = {path: _fresh(path, tmp_path / f"out-{i}") for i, path in enumerate(LABS)}
    assert fresh[LABS[0]][1] is not None and fresh[LABS[1]][1] is not None  # two labs build
    assert json.loads(fresh[LABS[2]][0])["diagnostics"]  # and one has errors to report
    sources = {path: path.read_text(encoding="utf-8") for path in LABS}
    for round_ in range(ROUNDS):
        path = LABS[round_ % len(LABS)]
        assert _in_process(path, sources[path]) == fresh[path], (round_, path.name)


def test_an_analysis_computes_each_fact_once_and_shares_nothing() -> None:
    from topoc.model.analysis import Analysis

    source = LABS[0].read_text(encoding="utf-8")
    one = compile_source(source, "a.topo")
    two = compile_source(source, "a.topo")
    assert one.analysis is not None and two.analysis is not None
    assert one.analysis.lab is one.lab
    # Built lazily, once per analysis, never shared between two compilations.
    assert one.analysis.topology is one.analysis.topology
    assert one.analysis.engine is one.analysis.engine
    assert one.analysis.engine.topo is one.analysis.topology
    assert one.analysis.topology is not two.analysis.topology
    # A bare Lab gets a fresh analysis of its own.
    assert Analysis(one.lab).topology is not one.analysis.topology


def test_no_module_keeps_a_cache_keyed_on_object_identity() -> None:
    """The state the compile path kept at module level (the parser's newline tokens,
    topology's and reach's caches, the address checks' caches) is gone for good."""
    import topoc.checks.addresses as addresses
    import topoc.front.parser as parser
    import topoc.model.reach as reach
    import topoc.model.topology as topology

    for module, names in ((parser, ("_newline_tokens",)), (topology, ("_CACHE", "topology")),
                          (reach, ("_ENGINES", "engine")), (addresses, ("_CLAIMS", "_TAKEN"))):
        for name in names:
            assert not hasattr(module, name), f"{module.__name__}.{name}"
