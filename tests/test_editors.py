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


# Words, with the grammar's inner hyphens and digits: `ssh-key-file`, `nat6`.
KEYWORDS = sorted(w for w in _grammar_literals() if re.fullmatch(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*", w))
ARROWS = sorted(w for w in _grammar_literals() if ">" in w)


def test_the_grammar_has_the_keywords_we_expect_to_find():
    assert {"network", "vm", "nic", "expect", "via", "gateway", "nat6", "ssh-key-file"} <= set(KEYWORDS)
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
    assert ("nat6", "keyword.other.topo") in scopes("    nat6 on")
    assert ("natnet", "entity.name.type.topo") in scopes("network natnet on kvm1 {")


# IPv6 literals as the language writes them (README, examples), and look-alikes that are not.
IPV6_LITERALS = ["fd00:64::1/64", "2001:db8:101::20", "::/0", "::1", "fd00:64::1:ff", "2001:db8:1:0::1/64",
                 "2001:0db8:0000:0000:0000:ff00:0042:8329", "fe80::1"]
NOT_IPV6 = ["vm0:22", "cafe:22", "52:54:00:6b:3c:58"]


def _tokens(tm: dict, line: str) -> list[tuple[str, str]]:
    """(text, scope) of one line as a TextMate engine scans it: from each position, the
    rule whose match starts first wins, ties going to the rule listed first (the top
    patterns, with a pattern group's members in order); the scan goes on after it."""
    ordered: list[dict] = []
    for include in tm["patterns"]:
        node = tm["repository"][include["include"].removeprefix("#")]
        ordered += node["patterns"] if "match" not in node and "begin" not in node else [node]
    found, pos = [], 0
    while pos < len(line):
        best = None
        for rule in ordered:
            m = re.compile(rule.get("match") or rule["begin"]).search(line, pos)
            if m is not None and (best is None or m.start() < best[1].start()):
                best = (rule, m)
        if best is None:
            break
        rule, m = best
        end = m.end()
        if "begin" in rule:  # a string: to its end pattern
            closing = re.compile(rule["end"]).search(line, end)
            end = closing.end() if closing else len(line)
        if "name" in rule:
            found.append((line[m.start():end], rule["name"]))
        for group, capture in rule.get("captures", {}).items():
            if m.group(int(group)) is not None and "name" in capture:
                found.append((m.group(int(group)), capture["name"]))
        pos = max(end, pos + 1)
    return found


@pytest.mark.parametrize("literal", IPV6_LITERALS)
def test_textmate_scopes_an_ipv6_literal_whole(tm, literal):
    for line in (f"    address {literal}", f"    route {literal} via fd00::1", f"expect a -> {literal}  # x",
                 f"    dhcp {literal}-{literal}"):
        tokens = _tokens(tm, line)
        assert (literal, "constant.numeric.address.topo") in tokens, (line, tokens)
        assert not [t for t, scope in tokens if scope == "constant.numeric.topo"], (line, tokens)


@pytest.mark.parametrize("text", NOT_IPV6)
def test_textmate_leaves_ports_and_macs_alone(tm, text):
    tokens = _tokens(tm, f"forward tcp 22 to {text}")
    assert not [t for t, scope in tokens if scope == "constant.numeric.address.topo"], tokens


def test_textmate_tokens_of_a_dual_stack_nic(tm):
    tokens = _tokens(tm, "    nic eth0 on natnet address 188.64.100.2 address fd00:64::2 mac 52:54:00:6b:3c:58")
    assert [(t, s) for t, s in tokens if s.startswith("constant.")] == [
        ("188.64.100.2", "constant.numeric.address.topo"), ("fd00:64::2", "constant.numeric.address.topo"),
        ("52:54:00:6b:3c:58", "constant.numeric.mac.topo")]


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


def test_vim_highlights_ipv6_addresses_and_nat6(tmp_path):
    lines = ["lab t", "network n on h {", "    nat6 on", "    address fd00:64::1/64",
             "    dhcp fd00:64::1:10 - fd00:64::1:ff", "}",
             "vm v on h { nic on n address 2001:db8::5 mac 52:54:00:6b:3c:58 }",
             "forward tcp 22 to cafe:22", "expect v -> ::1"]
    path = tmp_path / "v6.topo"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def at(number: int, text: str, nth: int = 0) -> tuple[int, int]:
        line = lines[number - 1]
        column = -1
        for _ in range(nth + 1):
            column = line.index(text, column + 1)
        return number, column + 1

    places = [at(3, "nat6"), at(4, "fd00"), at(4, "/64"), at(5, "fd00"), at(5, "fd00", 1), at(5, ":ff"),
              at(7, "2001"), at(7, "52:54"), at(8, "cafe"), at(9, "::1")]
    assert _vim_groups(path, places) == ["topoStatement", "topoAddress", "topoAddress", "topoAddress",
                                         "topoAddress", "topoAddress", "topoAddress", "topoMac", "", "topoAddress"]
