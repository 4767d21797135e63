"""`pip install .` (a real, non-editable install) gives a working `topoc` anywhere.

The package is built from a copy of the tree (so the build leaves nothing in the
checkout), installed with its dependencies into a fresh, plain virtualenv (pip fetches
them normally; its cache makes that quick after the first run), and then run from a
directory that holds no source: it must find its grammar inside the installed package
(topoc/grammar/topo.lark) and check every example clean.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, example_files

# What a source distribution of topoc holds: the build needs nothing else.
SOURCES = ("pyproject.toml", "README.md", "topoc", "grammar")


def _copy_sources(dest: Path) -> Path:
    dest.mkdir()
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with topoc installed from a copy of the tree; its bin directory."""
    base = tmp_path_factory.mktemp("install")
    source = _copy_sources(base / "src")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                             str(source)], capture_output=True, text=True, env=_clean_env(),
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return venv / "bin"


def test_installed_package_ships_its_grammar(installed):
    code = ("import importlib.resources as r, topoc, pathlib; "
            "g = r.files('topoc.grammar').joinpath('topo.lark'); "
            "print(topoc.__file__); print(g); assert g.is_file()")
    result = subprocess.run([str(installed / "python"), "-c", code], capture_output=True,
                            text=True, cwd="/", env=_clean_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    package_file, grammar = result.stdout.split()
    assert "site-packages" in package_file and not package_file.startswith(str(ROOT))
    assert grammar.endswith("site-packages/topoc/grammar/topo.lark")


def test_installed_topoc_checks_examples_from_another_directory(installed, tmp_path):
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    copies = []
    for path in example_files():
        shutil.copy2(path, workdir / path.name)
        copies.append(path.name)
    result = subprocess.run([str(installed / "topoc"), "check", *copies], capture_output=True,
                            text=True, cwd=workdir, env=_clean_env(), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"in {len(copies)} files" in result.stdout
    (workdir / "broken.topo").write_text("lab x\nnetwrok n {\n}\n", encoding="utf-8")
    broken = subprocess.run([str(installed / "topoc"), "check", "broken.topo"],
                            capture_output=True, text=True, cwd=workdir, env=_clean_env(),
                            timeout=60)
    assert broken.returncode == 1 and "did you mean `network`?" in broken.stdout
    module = subprocess.run([str(installed / "python"), "-m", "topoc", "--version"],
                            capture_output=True, text=True, cwd=workdir, env=_clean_env(),
                            timeout=60)
    assert module.returncode == 0 and "topoc, version" in module.stdout
