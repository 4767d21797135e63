"""Every Mermaid diagram topoc writes parses with Mermaid's own parser.

The parser is the `mermaid` npm package (the one GitHub and GitLab render with), run by
tests/mermaid/check.mjs under Node with jsdom. `make test` installs it (`npm ci
--prefix tests/mermaid`); run by hand without it, the test skips and says how to get it
(in CI it fails instead); test_diagram.py checks the Mermaid text's structure either way.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import IN_CI, ROOT
from test_diagram import CASES, compiled
from topoc.backends import diagram
from topoc.backends.diagram_mermaid import mermaid_source

CHECKER = ROOT / "tests" / "mermaid"


def _missing(reason: str) -> None:
    # `make test` installs it, so in CI a missing parser is a broken set-up, not a skip.
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def mermaid_checker() -> list[str]:
    node = shutil.which("node")
    if node is None:
        _missing("node is not installed (Debian: apt-get install nodejs)")
    if not (CHECKER / "node_modules" / "mermaid").is_dir():
        _missing("Mermaid's parser is not installed: npm ci --prefix tests/mermaid (make test does)")
    return [node, str(CHECKER / "check.mjs")]


def test_mermaids_parser_accepts_every_diagram(tmp_path: Path) -> None:
    command = mermaid_checker()
    files = []
    for path in CASES:
        lab = compiled(path)
        for reach in (False, True):
            out = tmp_path / f"{path.stem}{'-reach' if reach else ''}.mmd"
            out.write_text(mermaid_source(diagram.scene_for(lab, reach=reach)), encoding="utf-8")
            files.append(str(out))
    run = subprocess.run([*command, *files], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("flowchart") == len(files)


def test_mermaids_parser_rejects_a_broken_diagram(tmp_path: Path) -> None:
    """The checker is a real parser: it fails on what is not Mermaid."""
    command = mermaid_checker()
    broken = tmp_path / "broken.mmd"
    broken.write_text('flowchart LR\n    a["x"] --- |"y\n', encoding="utf-8")
    run = subprocess.run([*command, str(broken)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "FAIL" in run.stdout
