"""The inputs the host backend's tests share: every example plus the extra cases under
tests/golden/host/<case>/input.topo, compiled, with the artifacts they produce."""

from __future__ import annotations

from pathlib import Path

from conftest import GOLDEN, example_files

from topoc.backends import host as host_backend
from topoc.compiler import compile_file, compile_source
from topoc.model.ir import Lab

HOST_GOLDEN = GOLDEN / "host"


def case_files() -> list[Path]:
    return [*example_files(), *sorted(HOST_GOLDEN.glob("*/input.topo"))]


def case_name(path: Path) -> str:
    return path.parent.name if path.name == "input.topo" else path.stem


def compile_case(path: Path) -> Lab:
    result = compile_file(str(path))
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.lab is not None
    return result.lab


def compile_text(text: str, file: str = "case.topo") -> Lab:
    result = compile_source(text, file)
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.lab is not None
    return result.lab


def artifacts(lab: Lab) -> dict[str, str]:
    return host_backend.generate(lab)
