"""Source positions: where in which file a token, statement or diagnostic lives.

Lines and columns are 1-based; `end_column` is the column just past the last character
(exclusive), as lark reports it, so a span of width 1 has end_column == column + 1.
"""

from __future__ import annotations

from typing import NamedTuple


class Span(NamedTuple):
    """Immutable, hashable and ordered by position. A NamedTuple rather than a frozen
    dataclass because the parser makes one per token: at 10,000 VMs that is 200,000
    spans, and a tuple is built in less than half the time."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def until(self, other: Span) -> Span:
        """The span from the start of this one to the end of `other`."""
        return Span(self.file, self.line, self.column, other.end_line, other.end_column)

    def sub(self, start: int, length: int) -> Span:
        """A part of a single-line span: `length` characters from offset `start`."""
        column = self.column + start
        return Span(self.file, self.line, column, self.line, column + max(length, 1))

    def at_line(self) -> str:
        return f"line {self.line}"


UNKNOWN = Span("<unknown>", 1, 1, 1, 2)
