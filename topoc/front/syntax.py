"""The concrete syntax tree the parser hands on: tokens, statements, blocks, comments.

It keeps every token of every statement, in source order and with its span, and every
comment, so `topoc fmt` can print a file back and `topoc.front.lower` can point at the exact
value a diagnostic is about. It has no lark types: lark stays inside topoc.front.parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from topoc.front.span import Span


class Token(NamedTuple):
    """One token (a NamedTuple, like Span: the parser makes one per token)."""

    text: str
    kind: str  # WORD, STRING, URI, or the keyword itself ("on", "via", "address", "->", ...)
    span: Span

    @property
    def is_value(self) -> bool:
        return self.kind in ("WORD", "STRING", "URI")


@dataclass(frozen=True, slots=True)
class Statement:
    """One line: `kind` is the statement keyword (mode, nic, route, lab, forward...)."""

    kind: str
    tokens: tuple[Token, ...]  # every token, the keyword first
    span: Span

    @property
    def args(self) -> tuple[Token, ...]:
        return self.tokens[1:]

    @property
    def value(self) -> Token:
        """The token after the statement's keyword (`bridge br0`: `br0`)."""
        return self.tokens[1]

    @property
    def values(self) -> tuple[Token, ...]:
        """The values written before any option keyword (`dhcp A - B`: A, B)."""
        found = []
        for t in self.tokens[1:]:
            if t.is_value:
                found.append(t)
            elif t.kind != "-":
                break
        return tuple(found)

    def options(self) -> list[tuple[Token, Token]]:
        """Every option keyword with the value after it, in order (`nic on lan address
        10.0.0.2`: (on, lan), (address, 10.0.0.2)); a keyword may appear twice."""
        tokens = self.tokens
        return [(t, tokens[i + 1]) for i, t in enumerate(tokens[1:-1], 1)
                if not t.is_value and t.kind != "-" and tokens[i + 1].is_value]

    def after(self, keyword: str) -> Token | None:
        """The value after the option keyword `keyword`, if it is written."""
        return next((value for option, value in self.options() if option.kind == keyword), None)


@dataclass(frozen=True, slots=True)
class Block:
    """`network|host|vm|external NAME [on HOST] { statements }`."""

    kind: str
    header: tuple[Token, ...]  # keyword, name, and `on HOST` if present
    body: tuple[Statement, ...]
    span: Span  # the whole block, header to closing brace
    close: Span  # the closing brace

    @property
    def name(self) -> Token:
        return self.header[1]

    @property
    def on(self) -> Token | None:
        return self.header[3] if len(self.header) >= 4 else None

    @property
    def on_hosts(self) -> tuple[Token, ...]:
        """The names after `on`, one token each: `on kvm1, kvm2` (or `kvm1,kvm2`) is
        two, each span narrowed to its name. topoc.front.lower checks the commas."""
        names = []
        for tok in self.header[3:]:
            offset = 0
            for part in tok.text.split(","):
                if part:
                    names.append(Token(part, tok.kind, tok.span.sub(offset, len(part))))
                offset += len(part) + 1
        return tuple(names)


@dataclass(frozen=True, slots=True)
class Comment:
    text: str  # including the leading '#', trailing blanks removed
    span: Span
    own_line: bool  # False when it follows code on the same line


Item = Block | Statement


@dataclass(frozen=True, slots=True)
class SyntaxTree:
    """A whole file. After syntax errors it is the tree of what was left once the parser
    skipped the broken statements (`recovered`): `lost_lines` are the lines whose code
    it skipped, `lost_names` the names that skipped block headers or `lab` lines
    declared and `lost_keywords` the first words of the skipped top-level lines, so
    lowering reports nothing that only follows from what was skipped."""

    file: str
    items: tuple[Item, ...]
    comments: tuple[Comment, ...]
    recovered: bool = False
    lost_lines: frozenset[int] = frozenset()
    lost_names: frozenset[str] = frozenset()
    lost_keywords: frozenset[str] = frozenset()
