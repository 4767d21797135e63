"""The package imports without libvirt, and every example checks clean."""

import subprocess
import sys

import pytest

from conftest import ROOT, example_files
from topoc.compiler import compile_file


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_example_checks_without_errors(path):
    result = compile_file(str(path))
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.lab.networks, "every example has networks"


def test_compiling_never_imports_libvirt():
    code = ("import sys, topoc.cli, topoc.compiler; "
            "topoc.compiler.compile_file(sys.argv[1]); "
            "assert 'libvirt' not in sys.modules, 'libvirt was imported'")
    subprocess.run([sys.executable, "-c", code, str(ROOT / "examples/nat.topo")], check=True)
