"""`topoc fmt`: the canonical layout, idempotent, meaning- and comment-preserving.

Messy inputs live in tests/golden/fmt/<case>/input.topo with their formatted form in
expected.topo (regenerate with `pytest --update-golden`, then read them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import GOLDEN, example_files
from topoc.cli import cli
from topoc.compiler import compile_source
from topoc.front.fmt import format_source
from topoc.front.parser import parse

FMT_CASES = sorted(p.parent.name for p in (GOLDEN / "fmt").glob("*/input.topo"))
DIAGNOSTIC_INPUTS = sorted((GOLDEN / "diagnostics").glob("*/input.topo"))


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")  # as on disk, CRs included


def _every_input() -> list[Path]:
    return [*example_files(), *DIAGNOSTIC_INPUTS, *(GOLDEN / "fmt" / c / "input.topo" for c in FMT_CASES)]


@pytest.mark.parametrize("case", FMT_CASES)
def test_messy_input_formats_to_golden(case, golden):
    formatted, diagnostics = format_source(_read(GOLDEN / "fmt" / case / "input.topo"), "input.topo")
    assert diagnostics == [] and formatted is not None
    golden.check(Path("fmt", case, "expected.topo"), formatted)


@pytest.mark.parametrize("path", _every_input(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_format_is_idempotent_and_keeps_meaning_and_comments(path):
    source = _read(path)
    once, diagnostics = format_source(source, path.name)
    if once is None:
        assert diagnostics and all(d.code == "syntax-error" for d in diagnostics)
        return
    twice, _ = format_source(once, path.name)
    assert twice == once, "formatting twice must equal formatting once"
    before = compile_source(source, path.name, checks=False)
    after = compile_source(once, path.name, checks=False)
    assert after.lab == before.lab
    assert [d.code for d in after.diagnostics] == [d.code for d in before.diagnostics]
    assert [c.text for c in after.tree.comments] == [c.text for c in before.tree.comments]


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_examples_are_already_canonical(path):
    source = path.read_text(encoding="utf-8")
    assert format_source(source, path.name)[0] == source


def test_layout_rules():
    formatted, _ = format_source("lab x\nnetwork n { mode isolated\n\n\n\n  subnet 10.0.0.0/24 }\n"
                                 "expect a -> b   # why\n", "t.topo")
    assert formatted == ("lab x\n\nnetwork n {\n    mode isolated\n\n    subnet 10.0.0.0/24\n}\n"
                         "\nexpect a -> b  # why\n")


def test_a_file_with_syntax_errors_is_not_formatted():
    formatted, diagnostics = format_source("lab x\nnetwork n {\n", "t.topo")
    assert formatted is None and [d.code for d in diagnostics] == ["syntax-error"]


# --- the command ----------------------------------------------------------------------


@pytest.fixture
def messy(tmp_path) -> Path:
    path = tmp_path / "messy.topo"
    path.write_text("lab m\nnetwork   n {\nmode isolated}\n", encoding="utf-8")
    return path


def test_fmt_check_exits_1_and_changes_nothing(messy):
    before = messy.read_text()
    result = CliRunner().invoke(cli, ["fmt", "--check", str(messy)])
    assert result.exit_code == 1, result.output
    assert f"would reformat {messy}" in result.output
    assert messy.read_text() == before


def test_fmt_diff_prints_a_unified_diff(messy):
    result = CliRunner().invoke(cli, ["fmt", "--diff", str(messy)])
    assert result.exit_code == 1
    assert result.output.splitlines()[:2] == [f"--- {messy} (original)", f"+++ {messy} (formatted)"]
    assert "-network   n {\n" in result.output and "+network n {\n" in result.output
    assert "+    mode isolated\n" in result.output


def test_fmt_rewrites_then_check_is_clean(messy):
    assert CliRunner().invoke(cli, ["fmt", str(messy)]).exit_code == 0
    assert messy.read_text() == "lab m\n\nnetwork n {\n    mode isolated\n}\n"
    result = CliRunner().invoke(cli, ["fmt", "--check", str(messy)])
    assert (result.exit_code, result.output) == (0, "")


def test_fmt_on_a_broken_file_reports_and_exits_1(tmp_path):
    path = tmp_path / "broken.topo"
    path.write_text("lab b\nnetwork n {\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["fmt", str(path)])
    assert result.exit_code == 1
    assert "block is never closed  [syntax-error]" in result.output
    assert path.read_text() == "lab b\nnetwork n {\n"


def test_fmt_on_a_missing_file_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["fmt", str(tmp_path / "nope.topo")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_parse_of_formatted_examples_keeps_every_comment():
    for path in example_files():
        source = path.read_text(encoding="utf-8")
        tree, _ = parse(source, path.name)
        assert len(tree.comments) == source.count("#"), path.name
