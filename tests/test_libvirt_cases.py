"""The topologies the libvirt tests run on: every example, plus the cases under
tests/golden/build/<case>/input.topo. Each compiles clean; the other test_libvirt_*
and test_build_* modules import `CASES` and `compiled` from here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from conftest import EXAMPLES, GOLDEN, ROOT, example_files
from topoc.backends import libvirt as backend
from topoc.compiler import compile_source
from topoc.model.ir import Lab

GOLDEN_BUILD = GOLDEN / "build"


def _cases() -> dict[str, str]:
    """case id -> source path relative to the repository (the path the lab records)."""
    cases = {p.stem: str(p.relative_to(ROOT)) for p in example_files()}
    for p in sorted(GOLDEN_BUILD.glob("*/input.topo")):
        assert p.parent.name not in cases, f"test case {p.parent.name} shadows an example"
        cases[p.parent.name] = str(p.relative_to(ROOT))
    return cases


CASES = _cases()


@lru_cache(maxsize=None)
def compiled(case: str) -> Lab:
    """The case's lab, compiled from its relative path so output names it portably."""
    relative = CASES[case]
    result = compile_source((ROOT / relative).read_text(encoding="utf-8"), relative)
    assert result.ok, [f"{d.span.line}: {d.message}" for d in result.diagnostics]
    assert result.lab is not None
    return result.lab


@lru_cache(maxsize=None)
def artifacts(case: str) -> dict[str, str]:
    return backend.generate(compiled(case))


def xml_artifacts(case: str) -> dict[str, str]:
    return {p: t for p, t in artifacts(case).items() if p.endswith(".xml")}


def test_there_are_cases_of_every_kind():
    assert {p.stem for p in EXAMPLES.glob("*.topo")} <= set(CASES)
    assert {"models", "hostile"} <= set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_compiles_clean_with_networks_and_vms(case):
    lab = compiled(case)
    assert any(n.managed for n in lab.networks) and lab.vms, f"{case} exercises little"


def golden_dir(case: str) -> Path:
    return GOLDEN_BUILD / case


@lru_cache(maxsize=None)
def other_clean_topologies() -> dict[str, dict[str, str]]:
    """Every other .topo file under tests/ (other stages' cases) that compiles clean:
    relative path -> its libvirt XML files. The backend must handle them all."""
    from topoc.compiler import compile_file

    found = {}
    for path in sorted((ROOT / "tests").rglob("*.topo")):
        if GOLDEN_BUILD in path.parents:
            continue
        result = compile_file(str(path))
        if result.ok and result.lab is not None:
            xml = {p: t for p, t in backend.generate(result.lab).items() if p.endswith(".xml")}
            if xml:
                found[str(path.relative_to(ROOT))] = xml
    return found
