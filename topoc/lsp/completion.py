"""Completion: the keywords the grammar accepts at the cursor, and names of the right
kind where a name goes (networks after a nic's `on`, hosts after a block's `on`, VMs
after `forward ... to`, nodes in an `expect`), and the modes after `mode`.

The keywords are not a hand-kept list: the grammar itself (grammar/topo.lark) says what
may come next. The text before the cursor (inside its enclosing block's header, so an
error elsewhere in the file does not matter) is fed to lark's interactive LALR parser,
whose `accepts()` is the set of terminals valid there. This module and topoc.front.parser
are the two that know lark: the syntax tree cannot say what is *missing* at a position.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from lark import Lark
from lark.exceptions import LarkError
from lsprotocol import types

from topoc.lsp.analysis import Analysis
from topoc.model.ir import Mode

BLOCK_KEYWORDS = ("network", "host", "vm", "external")

_PARTIAL = re.compile(r"[A-Za-z0-9_.:/+~@%,=!>-]*$")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"?')


@functools.cache
def _grammar() -> tuple[Lark, dict[str, str]]:
    """The shipped grammar as an LALR parser, and terminal name -> literal text. Built
    once per process; neither is ever changed."""
    text = resources.files("topoc.grammar").joinpath("topo.lark").read_text(encoding="utf-8")
    lark = Lark(text, parser="lalr", lexer="contextual")
    literals = {t.name: t.pattern.value for t in lark.terminals if t.pattern.type == "str"}
    return lark, literals


def _code(line: str) -> str:
    """The line without its comment (a `#` inside a string is not one), strings blanked."""
    blanked = _STRING.sub(lambda m: "_" * len(m.group()), line)
    cut = blanked.find("#")
    return line[:cut] if cut >= 0 else line


def _open_header(lines: list[str], before: int) -> int | None:
    """The 0-based index of the header line of the block still open above line `before`
    (0-based), scanning backwards from it."""
    need = 0
    for i in range(min(before, len(lines)) - 1, -1, -1):
        code = _STRING.sub("", _code(lines[i]))
        for ch in reversed(code):
            if ch == "}":
                need += 1
            elif ch == "{":
                if need == 0:
                    return i
                need -= 1
    return None


def accepted_terminals(text: str) -> set[str] | None:
    """The terminals the grammar accepts after `text`, or None when `text` has an error."""
    lark, _ = _grammar()
    try:
        parser = lark.parse_interactive(text)
        parser.exhaust_lexer()
        return set(parser.accepts())
    except LarkError:
        return None


def _context(analysis: Analysis, line: int, before: str) -> str:
    """The text to feed the grammar: the enclosing block's header (or a stand-in for a
    header that does not parse) and the current line up to the partial word."""
    header = _open_header(analysis.lines, line - 1)
    if header is None:
        return before
    header_code = _code(analysis.lines[header]).rstrip()
    words = header_code.split()
    keyword = words[0] if words else ""
    if keyword not in BLOCK_KEYWORDS:
        return before
    candidate = header_code + "\n" + before
    if accepted_terminals(header_code + "\n") is not None:
        return candidate
    return f"{keyword} x {{\n" + before


def _item(label: str, kind: types.CompletionItemKind, detail: str | None = None) -> types.CompletionItem:
    return types.CompletionItem(label=label, kind=kind, detail=detail)


def _names(analysis: Analysis, role: str) -> list[types.CompletionItem]:
    kind = types.CompletionItemKind.Interface if role == "network" else types.CompletionItemKind.Reference
    index = analysis.index
    return [_item(name, kind, "network" if role == "network" else index.kinds.get(name, "node"))
            for name in index.names(role)]


def _value_items(analysis: Analysis, statement: list[str]) -> list[types.CompletionItem]:
    """Names or values where the grammar wants a WORD, by the statement so far."""
    if not statement:
        return []
    keyword, last = statement[0], statement[-1]
    if last == "mode" and len(statement) == 1:
        return [_item(m.value, types.CompletionItemKind.EnumMember, "mode") for m in Mode]
    if last == "on" and keyword == "nic":
        return _names(analysis, "network")
    if last == "on" and keyword in ("network", "vm"):
        return _names(analysis, "host")
    if keyword == "forward" and last == "to":
        return _names(analysis, "vm")
    if keyword == "expect" and (len(statement) == 1 or last in ("->", "!->")):
        return _names(analysis, "node")
    return []


def completions(analysis: Analysis, position: types.Position) -> list[types.CompletionItem]:
    line, column = analysis.from_position(position)
    if line > len(analysis.lines):
        return []
    text = analysis.line_text(line)[: column - 1]
    if _code(text) != text:
        return []  # in a comment
    partial = _PARTIAL.search(text)
    before = text[: partial.start()] if partial else text
    accepts = accepted_terminals(_context(analysis, line, before))
    if accepts is None:
        return []
    _, literals = _grammar()
    items = []
    for name in sorted(accepts):
        literal = literals.get(name)
        # A keyword (`nat6`, `ssh-key`) or an arrow; not punctuation such as `{`.
        if literal is not None and ((literal[:1].isalpha() and literal.replace("-", "").isalnum()) or ">" in literal):
            items.append(_item(literal, types.CompletionItemKind.Keyword))
    if "WORD" in accepts:
        statement = before.rsplit("{", 1)[-1].split()
        items += _value_items(analysis, statement)
    return items
