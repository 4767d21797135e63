"""The parser: .topo text -> topoc.front.syntax tree plus syntax-error diagnostics.

It is the only module that knows lark. The grammar (grammar/topo.lark, shipped inside
the package as topoc/grammar/topo.lark) is compiled once per process into an LALR(1)
parser with the contextual lexer and positions.

Recovery: lark's LALR parser stops at the first error, so after each error this module
repairs the text *without moving anything* and parses again: a broken line is blanked
out (a broken block header together with its whole block), a missing `}` is put at
the end of the line before the place it was missed, a `{` alone on the line after its
header joins the header, and a statement cut short by `}` is blanked up to the brace. Every later line keeps its line
and column, so every error is reported where it really is, all at once.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import replace
from importlib import resources
from typing import TYPE_CHECKING, Any

from lark import Lark, Tree
from lark import Token as LarkToken
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import Lexer

from topoc.diagnostics import SYNTAX_ERROR, TOO_MANY_ERRORS, Diagnostic, diagnostic
from topoc.front.span import Span
from topoc.front.statements import BLOCKS, STATEMENT_HOME, TOP_LEVEL_KEYWORDS, USAGE
from topoc.front.syntax import Block, Comment, Item, Statement, SyntaxTree, Token

MAX_ERRORS = 50

# What each statement looks like and where it belongs: the one table in topoc.front.statements.
BLOCK_KEYWORDS = BLOCKS
STATEMENT_KEYWORDS = frozenset(TOP_LEVEL_KEYWORDS) | frozenset(STATEMENT_HOME)

if TYPE_CHECKING:
    class _LexedToken(LarkToken):
        """A lark token as both lexers of this module make it: every position is set.
        lark types them Optional (a token made by hand may lack them); ours never do,
        and test_parser.py checks the two lexers' tokens are the same. Type-only: at
        run time it is lark's Token itself, so the hot loops pay nothing for it. A token
        in a lark error is typed LarkToken and its positions are asserted where used."""

        line: int
        column: int
        end_line: int
        end_column: int
        start_pos: int
else:
    _LexedToken = LarkToken


_TERMINAL_WORDS = {
    "WORD": "a name or value",
    "STRING": 'a "quoted string"',
    "URI": "a libvirt URI",
    "_NL": "end of line",
    "$END": "end of file",
}


@functools.cache
def _lark() -> Lark:
    grammar = resources.files("topoc.grammar").joinpath("topo.lark").read_text(encoding="utf-8")
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        # Positions come from the tokens (every one is kept); lark's own per-tree
        # position tracking is unused and costs a quarter of the parse at 10,000 VMs.
        propagate_positions=False,
        keep_all_tokens=True,
        maybe_placeholders=False,
    )


@functools.cache
def _literal_terminals() -> dict[str, str]:
    """Terminal name -> its literal text, for every keyword and punctuation mark."""
    return {
        t.name: t.pattern.value
        for t in _lark().terminals
        if t.pattern.type == "str"
    }


def _is_keyword(text: str) -> bool:
    """A keyword is letters, possibly joined by `-` (`ssh-key`); `->` and `{` are not."""
    return text.replace("-", "").isalpha() and text[0] != "-" and text[-1] != "-"


@functools.cache
def _keyword_texts() -> frozenset[str]:
    return frozenset(v for v in _literal_terminals().values() if _is_keyword(v))


def _describe_terminal(name: str) -> str:
    literal = _literal_terminals().get(name)
    if literal is not None:
        return f"`{literal}`"
    return _TERMINAL_WORDS.get(name, name.lower())


def _join_alternatives(names: set[str]) -> str:
    described = sorted({_describe_terminal(n) for n in names}, key=lambda s: (not s.startswith("`"), s))
    if len(described) == 1:
        return described[0]
    return ", ".join(described[:-1]) + " or " + described[-1]


# --- the text repairs that make recovery possible --------------------------------------

_CODE_AND_COMMENT = re.compile(r'^((?:[^#"\n]|"(?:[^"\\\n]|\\.)*"?)*)(#.*)?$')


def _code_part(line: str) -> str:
    """The line without its comment (a `#` inside a quoted string is not a comment)."""
    match = _CODE_AND_COMMENT.match(line)
    return match.group(1) if match else line


def _brace_balance(line: str) -> int:
    code = re.sub(r'"(?:[^"\\\n]|\\.)*"?', "", _code_part(line))
    return code.count("{") - code.count("}")


def _blank(line: str) -> str:
    return " " * len(line)


def _blank_from(lines: list[str], index: int) -> None:
    """Blank line `index`; if it opens a block, blank the block up to its `}` too."""
    depth = _brace_balance(lines[index])
    if depth < 0:  # a line that only closes blocks keeps its closing braces
        lines[index] = re.sub(r"[^}]", " ", _code_part(lines[index])).ljust(len(lines[index]))
        return
    starts_with_brace = _code_part(lines[index]).lstrip().startswith("{")
    lines[index] = _blank(lines[index])
    if starts_with_brace:
        return  # a stray `{` heads no block: skipping "its" body would eat a real `}`
    i = index + 1
    while depth > 0 and i < len(lines):
        depth += _brace_balance(lines[i])
        lines[i] = _blank(lines[i])
        i += 1


def _close_block_before(lines: list[str], index: int) -> bool:
    """Put ` }` after the code of the last line of code before line `index`."""
    for i in range(index - 1, -1, -1):
        code = _code_part(lines[i]).rstrip()
        if code.strip():
            lines[i] = code + " }" + lines[i][len(code):]
            return True
    return False


def _open_block_header(lines: list[str], before: int) -> int | None:
    """The index of the innermost block header still open at line `before`."""
    stack: list[int] = []
    for i in range(before):
        for ch in re.sub(r'"(?:[^"\\\n]|\\.)*"?', "", _code_part(lines[i])):
            if ch == "{":
                stack.append(i)
            elif ch == "}" and stack:
                stack.pop()
    return stack[-1] if stack else None


# --- describing an error --------------------------------------------------------------


def _line_keyword(lines: list[str], index: int) -> str | None:
    words = _code_part(lines[index]).split()
    return words[0] if words else None


def _header_span(file: str, lines: list[str], index: int) -> Span:
    line = lines[index]
    start = len(line) - len(line.lstrip())
    end = len(_code_part(line).rstrip())
    return Span(file, index + 1, start + 1, index + 1, max(end, start + 1) + 1)


def _error(span: Span, message: str, hint: str | None) -> Diagnostic:
    return diagnostic(SYNTAX_ERROR, span, message, hint)


def _usage_hint(lines: list[str], index: int) -> str | None:
    keyword = _line_keyword(lines, index)
    return f"usage: {USAGE[keyword]}" if keyword in USAGE else None


_CHAR_NAMES = {"\r": "a carriage return", "\x00": "a NUL byte", "\ufeff": "a byte order mark",
               "\u00a0": "a no-break space", "\u200b": "a zero-width space", "\x0b": "a vertical tab"}


def _show_char(char: str) -> str:
    """A character for a message: itself in backticks, or its code point when invisible."""
    if char.isprintable() and not char.isspace():
        return f"`{char}`"
    name = _CHAR_NAMES.get(char) or unicodedata.name(char, "").lower() or "a control character"
    return f"U+{ord(char):04X} ({name})"


# The statements of a network block that apply to its mode (topoc.front.lower refuses the
# others): "did you mean" never suggests one that is an error in that block.
_NETWORK_STATEMENTS_OF_MODE = {"external": {"mode", "subnet"}, "bridged": {"mode", "bridge"}}


def _applicable(keywords: list[str], lines: list[str], index: int) -> list[str]:
    header = _open_block_header(lines, index)
    if header is None or _line_keyword(lines, header) != "network":
        return keywords
    for line in lines[header + 1:]:
        words = _code_part(line).split()
        if "}" in line and words[:1] != ["mode"]:
            break
        if words[:1] == ["mode"] and len(words) > 1 and words[1] in _NETWORK_STATEMENTS_OF_MODE:
            allowed = _NETWORK_STATEMENTS_OF_MODE[words[1]]
            return [k for k in keywords if k in allowed or k not in STATEMENT_KEYWORDS]
    return keywords


def _unexpected_token_hint(token: LarkToken, expected: set[str], lines: list[str], index: int,
                           at_line_start: bool) -> str | None:
    """The most useful hint for a token the grammar did not expect here."""
    assert token.column is not None  # the lexer gave the token its position
    word = str(token.value)
    keywords = sorted(v for n, v in _literal_terminals().items() if n in expected and _is_keyword(v))
    applicable = _applicable(keywords, lines, index)
    guess = difflib.get_close_matches(word, applicable, n=1, cutoff=0.6) if token.type == "WORD" else []
    if guess:
        return f"did you mean `{guess[0]}`?"
    near = difflib.get_close_matches(word, keywords, n=1, cutoff=0.6) if token.type == "WORD" else []
    if near:  # a statement this network's mode refuses: suggesting it would be a circle
        allowed = " and ".join(f"`{k}`" for k in sorted(set(keywords) - set(keywords).difference(applicable)))
        return (f"`{near[0]}` would not apply here either (this network's mode takes {allowed}): "
                "remove the line")
    if _line_keyword(lines, index) == "memory" and re.fullmatch(r"[KMGT]i?B?", word, re.I):
        number = lines[index][: token.column - 1].split()[-1]
        return f"write the number and its unit together: `{number}{word}`"
    if not at_line_start and expected <= {"_NL", "RBRACE"} and word in STATEMENT_KEYWORDS:
        return f"one statement a line: start `{word}` on a line of its own"
    if at_line_start and word in STATEMENT_HOME and word not in keywords:
        return f"`{word}` belongs inside {STATEMENT_HOME[word]} block"
    missing = [k for k in keywords if k in ("on", "to")]
    if token.type == "WORD" and len(missing) == 1 and expected <= {"ON", "TO", "LBRACE"}:
        code = _code_part(lines[index])
        fixed = code[: token.column - 1] + f"{missing[0]} " + code[token.column - 1:]
        return f"did you forget `{missing[0]}`? `{' '.join(fixed.split())}`"
    if at_line_start and "{" in _code_part(lines[index]) and "NETWORK" in expected:
        return ("the blocks are `network`, `host` (the hypervisor), `vm` and `external` "
                "(a machine outside the host, such as a router or a LAN PC)")
    return _usage_hint(lines, index)


def _repair_block_header(lines: list[str], index: int, token: LarkToken) -> bool:
    """In a block header with the right keyword (`vm web kvm1 {`), blank only the tokens
    from the bad one to the `{`, so the block's body is still parsed (and its errors
    reported). A header with a misspelt keyword is not repaired: its body would be read
    as the wrong kind of block."""
    assert token.column is not None  # the lexer gave the token its position
    code = _code_part(lines[index])
    start = token.column - 1
    brace = code.find("{", start)
    if _line_keyword(lines, index) not in BLOCK_KEYWORDS or start < len(code) - len(code.lstrip()) + 1 \
            or brace <= start or _brace_balance(code) != 1:
        return False
    lines[index] = lines[index][:start] + _blank(lines[index][start:brace]) + lines[index][brace:]
    return True


def _next_code_line(lines: list[str], start: int) -> int | None:
    for i in range(start, len(lines)):
        if _code_part(lines[i]).strip():
            return i
    return None


def _brace_on_next_line(file: str, lines: list[str], header: int, brace: int) -> Diagnostic:
    """`network n` with its `{` alone on the next line: say so, and join them (the header
    line gains ` {` at its end and the `{` line is blanked, so nothing else moves)."""
    code = _code_part(lines[header]).rstrip()
    column = _code_part(lines[brace]).index("{") + 1
    lines[header] = code + " {" + lines[header][len(code):]
    lines[brace] = _blank(lines[brace])
    span = Span(file, brace + 1, column, brace + 1, column + 1)
    return _error(span, f"the `{{` of a block goes on the line of its header, `{code.strip()}`",
                  f"write `{code.strip()} {{`")


def _cut_short_by_brace(file: str, lines: list[str], index: int, token: LarkToken,
                        expected: set[str]) -> Diagnostic:
    """A `}` that ends a block in the middle of a statement (`{ mode nat via }`): the
    statement is incomplete. Blank the statement, keep the braces."""
    assert token.line is not None and token.column is not None  # the lexer gave the token its position
    before = lines[index][: token.column - 1]
    start = before.rfind("{") + 1
    words = before[start:].split()
    column = len(before.rstrip()) + 1
    lines[index] = before[:start] + _blank(before[start:]) + lines[index][token.column - 1:]
    span = Span(file, token.line, column, token.line, column + 1)
    hint = f"usage: {USAGE[words[0]]}" if words and words[0] in USAGE else None
    return _error(span, f"this statement is incomplete; expected {_join_alternatives(expected)}", hint)


def _recover(e: UnexpectedInput, file: str, lines: list[str]) -> tuple[Diagnostic, bool]:
    """Describe the error and repair `lines` in place. Returns (diagnostic, repaired)."""
    if isinstance(e, UnexpectedCharacters):
        index = e.line - 1
        char = lines[index][e.column - 1] if e.column - 1 < len(lines[index]) else "?"
        span = Span(file, e.line, e.column, e.line, e.column + 1)
        hint: str | None
        if char == '"':
            message, hint = "this string is not closed before the end of the line", 'end it with `"`'
        else:
            message = f"unexpected character {_show_char(char)}"
            allowed = getattr(e, "allowed", None) or set()
            hint = f"expected {_join_alternatives(set(allowed))}" if allowed else _usage_hint(lines, index)
            if char == "\r":
                hint = "a carriage return without a line feed: save the file with LF (or CRLF) line endings"
            elif not char.isascii() or not char.isprintable():
                hint = ("names and values are plain ASCII; other characters may appear only in "
                        "comments and \"quoted strings\"")
        _blank_from(lines, index)
        return _error(span, message, hint), True

    assert isinstance(e, (UnexpectedToken, UnexpectedEOF))
    token = e.token
    expected: set[str] = set(getattr(e, "accepts", None) or e.expected or ())

    if token.type == "$END":
        header = _open_block_header(lines, len(lines))
        if "RBRACE" in expected and header is not None:
            keyword = _line_keyword(lines, header) or "block"
            span = _header_span(file, lines, header)
            repaired = _close_block_before(lines, len(lines))
            return _error(span, f"this `{keyword}` block is never closed",
                          "add `}` on a line of its own where the block ends"), repaired
        last = max((i for i, text in enumerate(lines) if text.strip()), default=0)
        span = _header_span(file, lines, last)
        return _error(span, f"unexpected end of file; expected {_join_alternatives(expected)}", None), False

    # Past end of file, every token the lexer made has its position.
    assert token.line is not None and token.column is not None
    index = token.line - 1
    if token.type == "_NL" and "LBRACE" in expected:
        brace = _next_code_line(lines, index + 1)
        if brace is not None and _code_part(lines[brace]).strip() == "{":
            return _brace_on_next_line(file, lines, index, brace), True
    if token.type == "_NL":
        # The statement ended too early: point just past its last token.
        line = lines[index]
        column = len(_code_part(line).rstrip()) + 1
        span = Span(file, token.line, column, token.line, column + 1)
        message = f"this statement is incomplete; expected {_join_alternatives(expected)}"
        words = _code_part(line).split()
        if expected == {"WORD"} and words and words[-1] in _keyword_texts():
            message = f"`{words[-1]}` needs a value after it"
        hint = _usage_hint(lines, index)
        _blank_from(lines, index)
        return _error(span, message, hint), True

    span = Span(file, token.line, token.column, token.end_line or token.line,
                token.end_column or token.column + len(token.value))
    found = f"`{token.value}`"
    at_line_start = not lines[index][: token.column - 1].strip()
    if "RBRACE" in expected and token.value in TOP_LEVEL_KEYWORDS and at_line_start:
        header = _open_block_header(lines, index)
        if header is not None:
            keyword = _line_keyword(lines, header) or "block"
            message = f"expected `}}` before {found}: the `{keyword}` block on line {header + 1} is not closed"
            if _close_block_before(lines, index):
                return _error(span, message, "add `}` on a line of its own where the block ends"), True

    if token.type == "RBRACE" and "RBRACE" not in expected:
        before = lines[index][: token.column - 1]
        if _brace_balance(before) > 0 or _open_block_header(lines, index) is not None:
            return _cut_short_by_brace(file, lines, index, token, expected), True

    message = f"unexpected {found}; expected {_join_alternatives(expected)}"
    hint = _unexpected_token_hint(token, expected, lines, index, at_line_start)
    if token.type == "RBRACE" and not expected & {"RBRACE"}:
        message = "unexpected `}`: no block is open here"
        hint = "remove it, or open the block it was meant to close"
        lines[index] = lines[index][: token.column - 1] + " " + lines[index][token.column:]
    elif not _repair_block_header(lines, index, token):
        _blank_from(lines, index)
    return _error(span, message, hint), True


# --- building the syntax tree ---------------------------------------------------------


_VALUE_KINDS = frozenset(("WORD", "STRING", "URI"))


def _token(file: str, t: _LexedToken) -> Token:
    kind = t.type if t.type in _VALUE_KINDS else t.value
    return Token(t.value, kind, Span(file, t.line, t.column, t.end_line, t.end_column))


def _code_tokens(file: str, children: list[Any], newlines: list[_LexedToken]) -> list[Token]:
    """The children that are tokens of code, as syntax tokens; the newline tokens (which
    carry the comments) go to `newlines`. Hot: one call per statement, so it avoids
    helper calls per token."""
    tokens = []
    for t in children:
        if type(t) is _LexedToken:
            if t.type[0] != "_":
                value = t.value
                tokens.append(Token(value, t.type if t.type in _VALUE_KINDS else value,
                                    Span(file, t.line, t.column, t.end_line, t.end_column)))
            elif t.type == "_NL":
                newlines.append(t)
    return tokens


def _statement(file: str, tree: Tree, newlines: list[_LexedToken]) -> Statement:
    tokens = _code_tokens(file, tree.children, newlines)
    first, last = tokens[0].span, tokens[-1].span
    return Statement(tokens[0].text, tuple(tokens),
                     Span(file, first.line, first.column, last.end_line, last.end_column))


def _block(file: str, tree: Tree, newlines: list[_LexedToken]) -> Block:
    header: list[Token] = []
    body: list[Statement] = []
    close: Span | None = None
    for child in tree.children:
        if isinstance(child, Tree):  # lark makes plain Trees: the same test as `type(child) is Tree`
            if child.data == "on_clause":
                header.extend(_code_tokens(file, child.children, newlines))
            else:
                body.append(_statement(file, child, newlines))
        elif child.type == "RBRACE":
            close = _token(file, child).span
        elif child.type == "_NL":
            newlines.append(child)
        elif child.type != "LBRACE" and child.type[0] != "_":
            header.append(_token(file, child))
    assert close is not None
    return Block(header[0].text, tuple(header), tuple(body), header[0].span.until(close), close)


def _item(file: str, tree: Tree, newlines: list[_LexedToken]) -> Item:
    if tree.data in ("network_decl", "host_decl", "vm_decl", "external_decl"):
        return _block(file, tree, newlines)
    return _statement(file, tree, newlines)


_COMMENT_IN_NL = re.compile(r"#[^\n]*")


def _comments(file: str, text: str, newline_tokens: list[_LexedToken]) -> tuple[Comment, ...]:
    comments = []
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    for t in newline_tokens:
        for m in _COMMENT_IN_NL.finditer(t.value):
            offset = t.start_pos + m.start()
            line = _line_of(line_starts, offset)
            column = offset - line_starts[line - 1] + 1
            body = m.group(0).rstrip()
            own_line = not text[line_starts[line - 1]: offset].strip()
            span = Span(file, line, column, line, column + len(body))
            comments.append(Comment(body, span, own_line))
    return tuple(comments)


def _line_of(line_starts: list[int], offset: int) -> int:
    return bisect.bisect_right(line_starts, offset)


def parse(text: str, file: str) -> tuple[SyntaxTree | None, list[Diagnostic]]:
    """Parse a whole file: the tree and the syntax errors. After errors the tree holds
    every statement that survived recovery (SyntaxTree.recovered); it is None only when
    the text could not be repaired into something parseable at all."""
    source = text.replace("\r\n", "\n")
    if not source.endswith("\n"):
        source += "\n"
    lines = source.split("\n")
    original = list(lines)  # recovery repairs `lines`; diagnostics point into these
    diagnostics: list[Diagnostic] = []
    seen: set[tuple[int, int]] = set()
    while True:
        working = "\n".join(lines)
        try:
            tree = _parse_text(working)
        except UnexpectedInput as e:
            diag, repaired = _recover(e, file, lines)
            where = (diag.span.line, diag.span.column)
            if where not in seen:
                diagnostics.append(within(diag, original))
            if not repaired or where in seen:
                break
            seen.add(where)
            if len(diagnostics) >= MAX_ERRORS:
                diagnostics.append(diagnostic(TOO_MANY_ERRORS, diag.span,
                                              f"stopping after {MAX_ERRORS} syntax errors"))
                break
            continue
        newlines: list[_LexedToken] = []  # in source order, as the tree holds them
        items = []
        for child in tree.children:
            if isinstance(child, Tree):
                items.append(_item(file, child, newlines))
            elif child.type == "_NL":
                newlines.append(child)
        comments = _comments(file, source, newlines)
        if not diagnostics:
            return SyntaxTree(file, tuple(items), comments), []
        lost_lines, lost_names, lost_keywords = _losses(source.split("\n"), lines)
        return SyntaxTree(file, tuple(items), comments, True, lost_lines, lost_names, lost_keywords), diagnostics
    return None, diagnostics


def within(diag: Diagnostic, lines: list[str]) -> Diagnostic:
    """The diagnostic with its span inside the original text: a span found on a repaired
    line (a header that gained its `{`) must not reach past what the user wrote."""
    s = diag.span
    line = min(max(s.line, 1), len(lines))
    end_line = min(max(s.end_line, line), len(lines))
    column = min(max(s.column, 1), len(lines[line - 1]) + 1)
    end_column = min(s.end_column, len(lines[end_line - 1]) + 1)
    if (end_line, end_column) <= (line, column):
        end_line, end_column = line, column + 1
    span = Span(s.file, line, column, end_line, end_column)
    return diag if span == s else replace(diag, span=span)


_HEADER = re.compile(r"\s*(network|host|vm|external|lab)\s+([A-Za-z_][A-Za-z0-9_-]*)")


def _losses(original: list[str], repaired: list[str]
            ) -> tuple[frozenset[int], frozenset[str], frozenset[str]]:
    """The lines whose code recovery removed (1-based; not those it only added a brace
    to, nor a lone brace), the names the removed block headers and `lab` lines would
    have declared (a misspelt keyword counts: `netwrok lan {` meant `lan`), and the
    first words of the removed top-level lines."""
    lost: set[int] = set()
    names: set[str] = set()
    keywords: set[str] = set()
    depth = 0  # blocks open before the line, as the original text has them
    for number, (before, after) in enumerate(zip(original, repaired, strict=False), 1):
        top_level = depth <= 0
        if "{" in before or "}" in before:
            depth = max(0, depth + _brace_balance(before))
        code = _code_part(before).rstrip()
        if before == after or not code.strip() or _code_part(after).startswith(code):
            continue
        if not code.replace("{", "").replace("}", "").strip():
            continue
        lost.add(number)
        if not top_level or after.strip():
            continue  # inside a block, or a header recovery only trimmed
        words = code.split()
        keywords.add(words[0])
        header = _HEADER.match(code)
        if header:
            names.add(header.group(2))
        elif len(words) >= 2 and ("{" in words[-1] or words[0] == "lab") \
                and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", words[1]):
            names.add(words[1])
    return frozenset(lost), frozenset(names), frozenset(keywords)


class _FastPathMiss(Exception):
    """The fast lexer met something it leaves to lark's own lexer."""


# One pass of the whole text through one regular expression. Order matters: the arrows
# before WORD (so `a->b` is `a`, `->`, `b`), WORD before a lone `-` (so `-1` is a value).
_FAST_TOKENS = re.compile(r"""
      (?P<WS>[\t\f ]+)
    | (?P<NL>(?:\n[\t ]*|\#[^\n]*)+)
    | (?P<STRING>"(?:[^"\\\n]|\\.)*")
    | (?P<ARROW>!->|->)
    | (?P<WORD>-?[A-Za-z0-9_.:/+~@%,=]+(?:-[A-Za-z0-9_.:/+~@%,=]+)*)
    | (?P<PUNCT>[{}-])
    | (?P<OTHER>.)
""", re.VERBOSE | re.DOTALL)


class _FastLexer(Lexer):
    """The contextual lexer's tokens for well-formed input, at a fraction of its cost.

    lark's contextual lexer runs a state-specific regex per token; this one scans the
    text with one regex and makes a word a keyword exactly when the parser state accepts
    that keyword, which is what the contextual lexer decides. Anything unusual (a
    character it does not know, a word the state does not accept) raises _FastPathMiss,
    and parse() runs lark's own lexer instead, which also produces every diagnostic.
    tests/test_parser.py checks both give the same tokens on every file in the repo and
    on fuzzed input.
    """

    __future_interface__ = 1

    def __init__(self, lexer_conf: Any) -> None:
        literals = {t.pattern.value: t.name for t in lexer_conf.terminals if t.pattern.type == "str"}
        self.keywords = {text: name for text, name in literals.items() if _is_keyword(text)}
        self.punctuation = {text: name for text, name in literals.items() if not _is_keyword(text)}

    def lex(self, lexer_state: Any, parser_state: Any) -> Iterator[LarkToken]:
        text = lexer_state.text
        if not isinstance(text, str):  # lark may hand over a (complete) TextSlice
            text = text.text
        states = parser_state.parse_conf.parse_table.states
        keywords, punctuation = self.keywords, self.punctuation
        line, line_start = 1, 0
        for m in _FAST_TOKENS.finditer(text):
            kind = m.lastgroup
            assert kind is not None  # every alternative of _FAST_TOKENS is a named group
            if kind == "WS":
                continue
            value = m.group()
            start = m.start()
            if kind == "WORD":
                keyword = keywords.get(value)
                kind = keyword if keyword is not None and keyword in states[parser_state.position] else "WORD"
                if "://" in value and "URI" in states[parser_state.position]:
                    kind = "URI"  # as the contextual lexer decides: URI outranks WORD
            elif kind == "NL":
                kind = "_NL"
            elif kind in ("PUNCT", "ARROW"):
                kind = punctuation[value]
            elif kind == "OTHER":
                raise _FastPathMiss(value)
            if kind not in states[parser_state.position]:
                raise _FastPathMiss(value)
            column = start - line_start + 1
            end = m.end()
            if kind == "_NL":
                newlines = value.count("\n")
                end_line = line + newlines
                last = value.rfind("\n")
                token = LarkToken(kind, value, start, line, column, end_line,
                                  len(value) - last if newlines else column + len(value), end)
                line, line_start = end_line, (start + last + 1 if newlines else line_start)
            else:
                token = LarkToken(kind, value, start, line, column, line, column + len(value), end)
            yield token


@functools.cache
def _fast_lark() -> Lark:
    grammar = resources.files("topoc.grammar").joinpath("topo.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer=_FastLexer, propagate_positions=False,
                keep_all_tokens=True, maybe_placeholders=False)


def _parse_text(text: str) -> Tree:
    """Parse: the fast lexer first, lark's contextual lexer when the fast one steps aside
    or the text has an error (so every diagnostic comes from one place). No state lives
    between calls: the newline tokens that carry the comments are read off the tree."""
    try:
        return _fast_lark().parse(text)
    except (_FastPathMiss, UnexpectedInput):
        pass  # lark's own lexer decides, and describes any error
    return _lark().parse(text)
