"""The engine's own model labs (tests/reach_labs/) on a real kernel: `topoc verify`
builds each in network namespaces with the generated host scripts and libvirt's rules,
pings every pair, tries every forward, and must agree with `predict` on every one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import require_root, require_tool
from topoc.compiler import compile_file

LABS = sorted((Path(__file__).resolve().parent / "reach_labs").glob("*.topo"))
PREFIX = f"trk{os.getpid()}x"


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)}


@pytest.fixture
def kernel(monkeypatch):
    require_root()
    for tool in ("ip", "nft", "fping", "sysctl"):
        require_tool(tool)
    # verify names everything it makes with this prefix and removes it, also on failure.
    monkeypatch.setenv("TOPOC_VERIFY_PREFIX", PREFIX)
    yield
    assert _namespaces() == set(), "verify left network namespaces behind"


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.stem)
def test_prediction_holds_on_a_real_kernel(path: Path, kernel) -> None:
    from topoc.verify import verify

    lab = compile_file(str(path)).lab
    assert lab is not None
    report, _ = verify(lab)
    wrong = [(o.src, o.dst, o.predicted, o.observed) for o in report.pairs if not o.agrees]
    wrong += [(f.src, f.forward.vm, f.predicted, f.observed) for f in report.forwards if not f.agrees]
    assert wrong == []
    assert len(report.pairs) == len(lab.nodes) * (len(lab.nodes) - 1)
    # Both outcomes occur in every lab: the kernel really refused what we said it would.
    assert {o.observed for o in report.pairs} == {True, False}
