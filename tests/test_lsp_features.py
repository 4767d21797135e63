"""The language server's pure functions (topoc.lsp.analysis, index, features,
completion), without a client: positions in the client's units, broken files, the
keywords completion takes from the grammar, rename's refusals, and that no input and no
position makes any of them raise.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GOLDEN, ROOT, example_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lsprotocol import types

from topoc.lsp import features
from topoc.lsp.analysis import UTF8, UTF16, UTF32, analyse
from topoc.lsp.completion import completions

MIXED = (ROOT / "examples" / "mixed.topo").read_text(encoding="utf-8")
GRAMMAR = (ROOT / "grammar" / "topo.lark").read_text(encoding="utf-8")


def _at(text: str, needle: str, offset: int = 0) -> types.Position:
    for i, line in enumerate(text.split("\n")):
        j = line.find(needle)
        if j >= 0:
            return types.Position(i, j + offset)
    raise AssertionError(needle)


# --- positions ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding, expected", [(UTF16, 13), (UTF8, 16), (UTF32, 12)])
def test_columns_are_in_the_clients_units(encoding, expected):
    # Before "here": 10 ASCII characters, `é` (one UTF-16 unit, two UTF-8 bytes) and an
    # emoji (two units, four bytes).
    a = analyse('lab x  # é😀 here\n', "x.topo", encoding=encoding)
    column = a.lines[0].index("here") + 1  # topoc's 1-based column, in characters
    position = a.position(1, column)
    assert position == types.Position(0, expected)
    assert a.from_position(position) == (1, column)


def test_positions_past_the_end_are_clamped():
    a = analyse("lab x\n", "x.topo")
    assert a.position(99, 1) == a.end
    assert a.from_position(types.Position(0, 999)) == (1, len("lab x") + 1)
    assert a.from_position(types.Position(42, 0)) == (43, 1)


# --- broken files keep their names --------------------------------------------------------


def test_a_half_typed_line_keeps_navigation_and_every_syntax_error():
    broken = MIXED.replace("    memory 2GiB\n", "    memory 2GiB\n    nic eth9 on\n").replace(
        "expect proxy -> router", "expect proxy ->")
    a = analyse(broken, "x.topo")
    assert a.tree is not None and not a.stale  # the parser's, or one read around the broken lines
    assert [d.span.line for d in a.compilation.diagnostics if d.code == "syntax-error"] == \
        [_at(broken, "nic eth9 on").line + 1, _at(broken, "expect proxy ->").line + 1]
    found = features.definition(a, "u", _at(broken, "on svc", 4))
    assert [loc.range.start.line for loc in found] == [_at(broken, "network svc").line]
    assert features.hover(a, _at(broken, "vm proxy", 4)) is not None  # the block's text
    assert features.document_symbols(a)


def test_a_file_broken_beyond_repair_uses_the_previous_index_and_refuses_rename():
    good = analyse(MIXED, "x.topo")
    broken = MIXED.replace("vm proxy on kvm1 {", "vm proxy on kvm1 {{{")
    worse = analyse(broken, "x.topo", previous=good)
    if worse.compilation.tree is None and worse.tree is not None and worse.tree is good.tree:
        assert worse.stale and worse.index is good.index
    # A stale index navigates but never renames: its positions are the previous text's.
    stale = dataclasses.replace(worse, tree=good.tree, stale=True, _index=good.index)
    assert features.definition(stale, "u", _at(MIXED, "on back", 4))
    with pytest.raises(features.RenameRefused, match="syntax errors"):
        features.rename(stale, "u", _at(MIXED, "vm proxy", 4), "other")
    assert features.prepare_rename(stale, _at(MIXED, "vm proxy", 4)) is None


def test_hover_on_a_lab_that_does_not_lower_shows_the_text():
    text = MIXED.replace("memory 2GiB", "memory lots")
    a = analyse(text, "x.topo")
    shown = features.hover(a, _at(text, "vm api", 4))
    assert shown is not None and "`api`" in str(shown.contents)
    if a.compilation.lab is None or a.compilation.lab.node("api") is None:
        assert "memory lots" in str(shown.contents)  # the block as written


# --- rename ------------------------------------------------------------------------------


def test_rename_refuses_taken_and_invalid_names():
    a = analyse(MIXED, "x.topo")
    where = _at(MIXED, "network svc", 9)
    with pytest.raises(features.RenameRefused, match="already exists"):
        features.rename(a, "u", where, "back")
    with pytest.raises(features.RenameRefused, match="not a valid name"):
        features.rename(a, "u", where, "a b")
    with pytest.raises(features.RenameRefused, match="no network"):
        features.rename(a, "u", _at(MIXED, "mode routed"), "x")
    # A network and a node may share a name: renaming the network leaves the node alone.
    edit = features.rename(a, "u", where, "api")
    assert edit.changes is not None and len(edit.changes["u"]) == 2


# --- completion: keywords from the grammar -------------------------------------------------


def _grammar_statements(rule: str) -> set[str]:
    """The statement keywords a block rule of grammar/topo.lark allows, read from the
    grammar's text (not from the server): `_vm_stmt: memory_stmt | ...` -> {memory, ...}."""
    body = re.search(rf"^{rule}:(.*?)(?=^\S)", GRAMMAR, re.S | re.M)
    assert body is not None, rule
    # A keyword with a `-` (`ssh-key`) has a rule with `_` (ssh_key_stmt): keywords hold no `_`.
    return {name.removesuffix("_stmt").replace("_", "-") for name in re.findall(r"(\w+_stmt)", body.group(1))}


@pytest.mark.parametrize("block, rule", [("network n on h", "_network_stmt"), ("host h", "_host_stmt"),
                                         ("vm v on h", "_vm_stmt"), ("external e", "_external_stmt")])
def test_statement_keywords_come_from_the_grammar(block, rule):
    text = f"{block} {{\n    \n}}\n"
    a = analyse(text, "x.topo")
    labels = {item.label for item in completions(a, types.Position(1, 4))}
    assert labels == _grammar_statements(rule)


def test_top_level_keywords_come_from_the_grammar():
    items = re.search(r"^_item:(.*?)(?=^\S)", GRAMMAR, re.S | re.M)
    assert items is not None
    expected = {name.removesuffix("_decl") for name in re.findall(r"(\w+)_decl", items.group(1))}
    a = analyse("lab x\n\n", "x.topo")
    assert {item.label for item in completions(a, types.Position(1, 0))} == expected


def test_nic_options_and_arrows():
    text = "network n on h {\n    mode nat\n}\nhost h {\n    nic eth0 on n \n}\nexpect h \n"
    a = analyse(text, "x.topo")
    nic = {item.label for item in completions(a, _at(text, "on n ", 5))}
    assert nic == {"address", "mac", "model", "gateway"}
    assert {item.label for item in completions(a, _at(text, "expect h ", 9))} == {"->", "!->"}


# --- nothing raises, whatever the text and the position --------------------------------


def _every_input() -> list[Path]:
    return [*example_files(), *sorted(GOLDEN.glob("*/*/input.topo"))]


def _ask_everything(a, position: types.Position) -> None:
    features.hover(a, position)
    features.definition(a, "u", position)
    features.references(a, "u", position)
    features.highlights(a, position)
    features.prepare_rename(a, position)
    try:
        features.rename(a, "u", position, "renamed")
    except features.RenameRefused:
        pass
    completions(a, position)


@pytest.mark.parametrize("path", _every_input(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_position_of_every_input_answers(path):
    text = path.read_bytes().decode("utf-8")
    a = analyse(text, str(path))
    features.diagnostics(a)
    features.document_symbols(a)
    features.formatting(a)
    for line, content in enumerate(text.split("\n")[:120]):
        for character in sorted({0, 1, len(content) // 2, len(content), len(content) + 3}):
            _ask_everything(a, types.Position(line, character))


_EDIT_CHARS = st.sampled_from(list("{}\n #\"-> !abc1.:/") + ["nic ", "on ", "vm ", "expect ", "\r", "é"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(MIXED)), st.integers(0, 3), _EDIT_CHARS), max_size=6),
       st.integers(0, 80), st.integers(0, 60))
def test_random_edits_never_raise(edits, line, character):
    text = MIXED
    for offset, deleted, inserted in edits:
        text = text[:offset] + inserted + text[offset + deleted:]
    previous = analyse(MIXED, "x.topo")
    a = analyse(text, "x.topo", previous=previous)
    features.diagnostics(a)
    features.document_symbols(a)
    _ask_everything(a, types.Position(line, character))


def test_other_commands_do_not_import_the_language_server():
    code = ("import sys, topoc.cli; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('pygls', 'lsprotocol') or m.startswith('topoc.lsp')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


# --- hover on `expect`: the same verdict as the check -------------------------------------


@pytest.mark.parametrize("path", [*example_files(), *sorted(GOLDEN.glob("*/*/input.topo"))],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_expect_hover_agrees_with_the_expect_check(path):
    text = path.read_bytes().decode("utf-8")
    a = analyse(text, str(path))
    if a.compilation.lab is None:
        return
    failed = {d.span.line for d in a.compilation.diagnostics if d.code == "expect-failed"}
    broken = {d.span.line for d in a.compilation.diagnostics if d.code == "syntax-error"}
    for line, content in enumerate(text.split("\n"), start=1):
        if not content.startswith("expect ") or line in broken:
            continue
        shown = features.hover(a, types.Position(line - 1, 1))
        assert shown is not None and isinstance(shown.contents, types.MarkupContent)
        head = shown.contents.value.split("\n", 1)[0]
        if "holds" in head or "not judged" in head:
            assert ("does not hold" in head) == (line in failed), (line, head)
            assert "not judged" not in head or a.compilation.analysis.poisoned, (line, head)


def test_expect_hover_from_an_address():
    text = (ROOT / "examples" / "nat.topo").read_text(encoding="utf-8") + "expect 188.64.100.2 -> win10\n"
    a = analyse(text, "x.topo")
    shown = features.hover(a, _at(text, "expect 188.64.100.2", 2))
    assert shown is not None and "holds" in str(shown.contents) and "vm0 -> win10: reachable" in str(shown.contents)
