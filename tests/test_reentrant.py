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
