"""One version of one document, analysed: its compilation, symbol index and lines, and
the conversion between topoc's positions and the client's.

topoc counts 1-based lines and 1-based columns in characters (code points), lines split
at `\\n` as the parser does. LSP counts 0-based lines and columns in the code units the
client and server agreed on at initialisation: UTF-16 unless both chose another
(https://microsoft.github.io/language-server-protocol/specifications/lsp/3.17/specification/#positionEncodingKind).
"""

from __future__ import annotations

from dataclasses import dataclass

from lsprotocol import types

from topoc.compiler import Compilation, compile_source
from topoc.diagnostics import SYNTAX_ERROR
from topoc.front.span import Span
from topoc.front.syntax import SyntaxTree
from topoc.lsp.index import SymbolIndex, build_index

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"


def _units(text: str, encoding: str) -> int:
    if encoding == UTF32:
        return len(text)
    if encoding == UTF8:
        return len(text.encode("utf-8"))
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


@dataclass
class Analysis:
    source: str
    file: str
    version: int | None
    compilation: Compilation
    tree: SyntaxTree | None  # the compilation's, or one read around its syntax errors
    lines: list[str]
    encoding: str = UTF16
    stale: bool = False  # the tree and index are the previous version's (this one has no tree)
    _index: SymbolIndex | None = None

    @property
    def index(self) -> SymbolIndex:
        """The names' index, built on first use: an edit that is only followed by its
        diagnostics never pays for it."""
        if self._index is None:
            self._index = build_index(self.tree) if self.tree is not None else SymbolIndex()
        return self._index

    # -- positions --

    def position(self, line: int, column: int) -> types.Position:
        """topoc's 1-based (line, column) as an LSP position."""
        index = max(line - 1, 0)
        if index >= len(self.lines):
            last = len(self.lines) - 1
            return types.Position(last, _units(self.lines[last], self.encoding))
        text = self.lines[index]
        column = min(max(column - 1, 0), len(text))
        if self.encoding == UTF32 or text.isascii():
            return types.Position(index, column)
        return types.Position(index, _units(text[:column], self.encoding))

    def range(self, span: Span) -> types.Range:
        return types.Range(self.position(span.line, span.column),
                           self.position(span.end_line, span.end_column))

    def location(self, uri: str, span: Span) -> types.Location:
        return types.Location(uri, self.range(span))

    def from_position(self, position: types.Position) -> tuple[int, int]:
        """An LSP position as topoc's 1-based (line, column)."""
        line = position.line
        if line >= len(self.lines):
            return line + 1, 1
        text = self.lines[line]
        if self.encoding == UTF32 or text.isascii():
            return line + 1, min(position.character, len(text)) + 1
        units = 0
        for i, ch in enumerate(text):
            if units >= position.character:
                return line + 1, i + 1
            units += _units(ch, self.encoding)
        return line + 1, len(text) + 1

    def line_text(self, line: int) -> str:
        """The 1-based line's text ('' past the end)."""
        return self.lines[line - 1] if 1 <= line <= len(self.lines) else ""

    @property
    def end(self) -> types.Position:
        return self.position(len(self.lines), len(self.lines[-1]) + 1)


def _without_broken_lines(source: str, compilation: Compilation) -> str:
    """The text with every line that has a syntax error blanked (same length, so every
    other token keeps its position)."""
    lines = source.split("\n")
    for d in compilation.diagnostics:
        if d.code == SYNTAX_ERROR.name and 1 <= d.span.line <= len(lines):
            lines[d.span.line - 1] = " " * len(lines[d.span.line - 1])
    return "\n".join(lines)


def analyse(source: str, file: str, version: int | None = None, encoding: str = UTF16,
            previous: Analysis | None = None) -> Analysis:
    """Compile the text (as `topoc check` does) and index its names. A file with syntax
    errors has no tree: the index then comes from the text with its broken lines
    blanked, or failing that from the previous version, so navigation keeps working
    while a line is half typed."""
    text = source.removeprefix("\ufeff")  # as topoc.compiler.read_source does
    compilation = compile_source(text, file)
    tree = compilation.tree
    if tree is None:
        repaired = compile_source(_without_broken_lines(text, compilation), file, checks=False)
        tree = repaired.tree
    stale = False
    if tree is None and previous is not None and previous.tree is not None:
        tree, stale = previous.tree, True
    lines = text.replace("\r\n", "\n").split("\n")
    return Analysis(text, file, version, compilation, tree, lines, encoding, stale,
                    previous.index if stale and previous is not None else None)
