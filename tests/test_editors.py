"""The highlighting shipped in editors/: the TextMate grammar (VS Code and the editors
that read TextMate grammars) and the Vim syntax file.

Both must know every keyword of grammar/topo.lark: the tests read the keywords from the
grammar's text and look each one up in the highlighting rules. Vim itself loads the
syntax file headless and reports the highlight group at known places.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from conftest import ROOT, example_files, require_tool

from topoc.model.ir import Mode

EDITORS = ROOT / "editors"
TM = EDITORS / "vscode" / "syntaxes" / "topo.tmLanguage.json"
VIM = EDITORS / "vim" / "syntax" / "topo.vim"
GRAMMAR = (ROOT / "grammar" / "topo.lark").read_text(encoding="utf-8")


def _grammar_literals() -> set[str]:
    """Every quoted literal of the grammar's rules and terminals (comments left out)."""
    code = "\n".join(line.split("//", 1)[0] for line in GRAMMAR.splitlines())
    return set(re.findall(r'"([^"\\]+)"', code))


KEYWORDS = sorted(w for w in _grammar_literals() if w.isalpha())
ARROWS = sorted(w for w in _grammar_literals() if ">" in w)


def test_the_grammar_has_the_keywords_we_expect_to_find():
    assert {"network", "vm", "nic", "expect", "via", "gateway"} <= set(KEYWORDS)
    assert ARROWS == ["!->", "->"]


# --- TextMate ------------------------------------------------------------------------------


def _rules(node: object) -> list[dict]:
    """Every rule with a `match` in the grammar, wherever it is nested."""
    found = []
    if isinstance(node, dict):
        if "match" in node:
            found.append(node)
        for value in node.values():
            found += _rules(value)
    elif isinstance(node, list):
        for value in node:
            found += _rules(value)
    return found


def _scopes_of(rule: dict, text: str) -> list[tuple[str, str]]:
    """(matched text, scope) for each scope the rule gives on `text`. The patterns are
    written in the common subset of Oniguruma and Python's `re`."""
    m = re.search(rule["match"], text)
    if m is None:
        return []
    found = []
    if "name" in rule:
        found.append((m.group(0), rule["name"]))
    for group, capture in rule.get("captures", {}).items():
        if m.group(int(group)) is not None and "name" in capture:
            found.append((m.group(int(group)), capture["name"]))
    return found


@pytest.fixture(scope="module")
def tm() -> dict:
    return json.loads(TM.read_text(encoding="utf-8"))


def test_textmate_grammar_is_valid_and_registered(tm):
    assert tm["scopeName"] == "source.topo" and "topo" in tm["fileTypes"]
    for include in tm["patterns"]:
        assert include["include"].removeprefix("#") in tm["repository"]
    package = json.loads((EDITORS / "vscode" / "package.json").read_text(encoding="utf-8"))
    [language] = package["contributes"]["languages"]
    [grammar] = package["contributes"]["grammars"]
    assert language["extensions"] == [".topo"] and grammar["language"] == language["id"]
    assert grammar["scopeName"] == tm["scopeName"]
    assert (EDITORS / "vscode" / grammar["path"]).resolve() == TM.resolve()
    json.loads((EDITORS / "vscode" / language["configuration"]).read_text(encoding="utf-8"))
    for rule in _rules(tm):
        re.compile(rule["match"])


@pytest.mark.parametrize("keyword", KEYWORDS)
def test_textmate_covers_every_keyword_of_the_grammar(tm, keyword):
    scopes = [scope for rule in _rules(tm) for text, scope in _scopes_of(rule, f"{keyword} x")
              if text == keyword]
    assert any(s.startswith(("keyword.", "storage.type.")) for s in scopes), (keyword, scopes)


def test_textmate_scopes_arrows_modes_comments_and_values(tm):
    rules = _rules(tm)

    def scopes(text: str) -> set[tuple[str, str]]:
        return {pair for rule in rules for pair in _scopes_of(rule, text)}

    for arrow in ARROWS:
        assert (arrow, "keyword.operator.arrow.topo") in scopes(f"expect a {arrow} b")
    for mode in Mode:
        assert (mode.value, "constant.language.mode.topo") in scopes(f"    mode {mode.value} via eth0")
    assert ("# a comment", "comment.line.number-sign.topo") in scopes("nic on lan  # a comment")
    assert ("10.0.0.1/24", "constant.numeric.address.topo") in scopes("    address 10.0.0.1/24")
    assert ("52:54:00:6b:3c:58", "constant.numeric.mac.topo") in scopes("mac 52:54:00:6b:3c:58")
    assert ("natnet", "entity.name.type.topo") in scopes("network natnet on kvm1 {")


# --- Vim -------------------------------------------------------------------------------------


@pytest.mark.parametrize("keyword", KEYWORDS)
def test_vim_syntax_lists_every_keyword_of_the_grammar(keyword):
    rules = [line for line in VIM.read_text(encoding="utf-8").splitlines() if line.startswith("syn ")]
    assert any(re.search(rf"(^syn keyword \w+ .*\b|\\\(|\\\||\s){keyword}\b", line) for line in rules), keyword


def _vim_groups(path, places: list[tuple[int, int]]) -> list[str]:
    """The syntax group Vim gives each (line, column), with only editors/vim on the
    runtime path; fails on any error message."""
    vim = require_tool("vim")
    out = path.parent / "groups.txt"
    calls = ", ".join(f'synIDattr(synID({line}, {col}, 1), "name")' for line, col in places)
    run = subprocess.run(
        [vim, "-Es", "-N", "-u", "NONE", "-i", "NONE", "--cmd", f"set rtp^={EDITORS / 'vim'}",
         "-c", "filetype on", "-c", "syntax on", "-c", f"edit {path}",
         "-c", f'call writefile([&filetype, get(b:, "current_syntax", ""), v:errmsg, {calls}], "{out}")',
         "-c", "qa!"], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    filetype, syntax, errmsg, *groups = out.read_text(encoding="utf-8").split("\n")[:3 + len(places)]
    assert (filetype, syntax, errmsg) == ("topo", "topo", "")
    return groups


@pytest.mark.parametrize("example", example_files(), ids=lambda p: p.name)
def test_vim_loads_the_syntax_headless_and_highlights_an_example(tmp_path, example):
    text = example.read_text(encoding="utf-8")
    path = tmp_path / example.name
    path.write_text(text, encoding="utf-8")
    places, expected = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            if line.strip():
                places.append((number, line.index("#") + 1))
                expected.append("topoComment")
            continue
        first = words[0]
        column = line.index(first) + 1
        if first in ("network", "host", "vm", "external", "lab"):
            places.append((number, column))
            expected.append("topoBlock")
            places.append((number, line.index(words[1], column + len(first)) + 1))
            expected.append("topoName")
        elif first in KEYWORDS:
            places.append((number, column))
            expected.append("topoStatement")
        if len(words) >= 2 and first == "mode":
            places.append((number, line.index(words[1], column + 4) + 1))
            expected.append("topoModeValue")
        for arrow in ("!->", "->"):
            if f" {arrow} " in line:
                places.append((number, line.index(f" {arrow} ") + 2))
                expected.append("topoArrow")
                break
    assert places
    assert _vim_groups(path, places) == expected
