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
    file: str
    items: tuple[Item, ...]
    comments: tuple[Comment, ...]
