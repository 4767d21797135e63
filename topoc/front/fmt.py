"""`topoc fmt`: print a syntax tree back in the canonical layout.

The layout: 4-space indent, one statement a line, single spaces between tokens, one
blank line between blocks (and around them), blank lines inside a block kept but never
doubled, comments kept where they were (own-line comments at the depth of the code
around them; end-of-line comments two spaces after the code). Formatting never changes
meaning: `format_source` checks that the result lowers to the same IR and refuses
otherwise.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from topoc.compiler import compile_source
from topoc.front.syntax import Block, Comment, Statement, SyntaxTree

INDENT = "    "


@dataclass
class _Line:
    line: int
    column: int
    depth: int
    text: str
    role: str  # "item" (a top-level statement), "header", "body", "close", "comment"
    trailing: str | None = None


def _statement_text(stmt: Statement) -> str:
    return " ".join(t.text for t in stmt.tokens)


def _code_lines(tree: SyntaxTree) -> list[_Line]:
    lines: list[_Line] = []
    for item in tree.items:
        if isinstance(item, Block):
            first = item.header[0].span
            header = " ".join(t.text for t in item.header) + " {"
            lines.append(_Line(first.line, first.column, 0, header, "header"))
            for stmt in item.body:
                lines.append(_Line(stmt.span.line, stmt.span.column, 1, _statement_text(stmt), "body"))
            lines.append(_Line(item.close.line, item.close.column, 0, "}", "close"))
        else:
            lines.append(_Line(item.span.line, item.span.column, 0, _statement_text(item), "item"))
    return lines


def _block_lines(tree: SyntaxTree) -> tuple[list[int], list[int]]:
    """The first and last lines of every block, in source order (blocks never overlap)."""
    blocks = [item for item in tree.items if isinstance(item, Block)]
    return [b.span.line for b in blocks], [b.close.line for b in blocks]


def _comment_depth(comment: Comment, starts: list[int], ends: list[int]) -> int:
    """1 for a comment strictly inside a block, else 0 (a bisection: fmt stays linear)."""
    i = bisect.bisect_left(starts, comment.span.line) - 1
    return 1 if i >= 0 and starts[i] < comment.span.line < ends[i] else 0


def _merge(tree: SyntaxTree) -> list[_Line]:
    code = _code_lines(tree)
    starts, ends = _block_lines(tree)
    last_on_line: dict[int, _Line] = {}
    for entry in code:
        last_on_line[entry.line] = entry  # code is in source order: the last one wins
    entries = list(code)
    for comment in tree.comments:
        if comment.own_line:
            entries.append(_Line(comment.span.line, comment.span.column,
                                 _comment_depth(comment, starts, ends), comment.text, "comment"))
        else:
            owner = last_on_line.get(comment.span.line)
            if owner is not None:
                owner.trailing = comment.text
    entries.sort(key=lambda e: (e.line, e.column))
    return entries


def _group_items(entries: list[_Line]) -> list[_Line | None]:
    """For each entry: if it begins a top-level group (leading comments + item), the item.
    One backward pass, so formatting stays linear however long a comment run is."""
    items: list[_Line | None] = [None] * len(entries)
    following: _Line | None = None
    for i in range(len(entries) - 1, -1, -1):
        entry = entries[i]
        if entry.depth != 0:
            following = None
        elif entry.role != "comment":
            following = entry
        items[i] = following
    return items


def format_tree(tree: SyntaxTree) -> str:
    entries = _merge(tree)
    group_items = _group_items(entries)
    out: list[str] = []
    previous: _Line | None = None
    previous_item_role: str | None = None  # the role of the last top-level code line
    in_group = False  # inside a run of top-level comments that leads an item
    for i, entry in enumerate(entries):
        gap = previous is not None and entry.line - previous.line > 1
        blank = False
        if previous is not None:
            if entry.depth == 1 or entry.role == "close":
                blank = gap and previous.role != "header" and entry.role != "close"
            elif in_group and previous.role == "comment" and not gap:
                blank = False
            else:
                item = group_items[i]
                block_boundary = previous_item_role == "close" or (item is not None and item.role == "header")
                blank = gap or block_boundary
        if blank and out and out[-1] != "":
            out.append("")
        text = INDENT * entry.depth + entry.text
        if entry.trailing:
            text += "  " + entry.trailing
        out.append(text)
        in_group = entry.depth == 0 and entry.role == "comment"
        if entry.depth == 0 and entry.role != "comment":
            previous_item_role = entry.role
        previous = entry
    return "\n".join(out) + "\n" if out else ""


class FormatError(Exception):
    """Formatting would change the file's meaning (a bug in topoc, never the user's)."""


def _shape(tree: SyntaxTree) -> list[tuple]:
    """Every item's kind and tokens, without positions: equal shapes mean equal meaning,
    even for a file whose values do not lower (so its IR cannot be compared)."""
    def tokens(stmt: Statement) -> tuple:
        return tuple((t.kind, t.text) for t in stmt.tokens)

    return [(item.kind, tuple((t.kind, t.text) for t in item.header),
             tuple(tokens(s) for s in item.body)) if isinstance(item, Block)
            else (item.kind, tokens(item)) for item in tree.items]


def format_source(source: str, file: str) -> tuple[str | None, list]:
    """The formatted text, or None and the diagnostics when the file does not parse."""
    original = compile_source(source, file, checks=False)
    if original.tree is None or original.tree.recovered:
        # Only the syntax errors: what lowering says of a half-read file is beside the point.
        return None, [d for d in original.diagnostics if d.code in ("syntax-error", "too-many-errors")]
    formatted = format_tree(original.tree)
    again = compile_source(formatted, file, checks=False)
    same_comments = again.tree is not None and \
        [c.text for c in again.tree.comments] == [c.text for c in original.tree.comments]
    if again.tree is None or again.lab != original.lab or not same_comments \
            or _shape(again.tree) != _shape(original.tree):
        raise FormatError(f"{file}: formatting would change the meaning of the file; "
                          "please report this as a bug in topoc")
    return formatted, []
