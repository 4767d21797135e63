"""Diagnostics: the registry of codes, the Diagnostic record, and its two renderings.

Every mistake in a .topo file becomes a Diagnostic (severity, stable kebab-case code,
message, span, hint), never an exception. The codes, with their default severity,
category and one-line summary, are one table in topoc.codes (`topoc check
--list-codes` prints it). Rendering follows rustc and mypy:

    natlab.topo:23:32: error: 188.64.100.2 is already assigned to vm0 (line 17)  [address-conflict]
       23 |     nic eth0 on natnet address 188.64.100.2
          |                                ^~~~~~~~~~~~
       hint: pick a free address in 188.64.100.0/24, e.g. 188.64.100.4

and `--format json` gives the same facts for editors and CI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rich.text import Text

from topoc.codes import (
    CODES,
    DUPLICATE_NAME,
    DUPLICATE_STATEMENT,
    INVALID_VALUE,
    MAC_INVALID,
    MISSING_STATEMENT,
    SYNTAX_ERROR,
    TOO_MANY_ERRORS,
    UNDEFINED_NAME,
    Code,
    Severity,
    register,
)
from topoc.front.span import Span

# The codes live in one table, topoc.codes; these names are re-exported for the stages.
__all__ = [
    "CODES",
    "DUPLICATE_NAME",
    "DUPLICATE_STATEMENT",
    "INVALID_VALUE",
    "MAC_INVALID",
    "MISSING_STATEMENT",
    "SYNTAX_ERROR",
    "TOO_MANY_ERRORS",
    "UNDEFINED_NAME",
    "Code",
    "Diagnostic",
    "Severity",
    "diagnostic",
    "has_errors",
    "register",
    "render_json",
    "render_one",
    "render_text",
    "sort_diagnostics",
    "summary_line",
]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    code: str
    message: str
    span: Span
    hint: str | None = None

    @property
    def sort_key(self) -> tuple:
        s = self.span
        return (s.file, s.line, s.column, s.end_line, s.end_column, self.code, self.message)

    def to_json(self) -> dict:
        s = self.span
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "file": s.file,
            "line": s.line,
            "column": s.column,
            "end_line": s.end_line,
            "end_column": s.end_column,
            "hint": self.hint,
        }


def diagnostic(code: Code, span: Span, message: str, hint: str | None = None,
               severity: Severity | None = None) -> Diagnostic:
    """A diagnostic of a registered code, at its default severity unless overridden."""
    return Diagnostic(severity or code.severity, code.name, message, span, hint)


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Sorted by position, duplicates (same code, span and message) dropped."""
    unique = {(d.sort_key, d.severity): d for d in diagnostics}
    return [unique[k] for k in sorted(unique)]


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diagnostics)


_STYLES = {
    Severity.ERROR: "bold red",
    Severity.WARNING: "bold yellow",
    Severity.NOTE: "bold cyan",
}


_INVISIBLE = re.compile("[\x00-\x08\x0a-\x1f\x7f\u200b\ufeff]")  # control chars but tab


def _excerpt(source_line: str, span: Span) -> tuple[str, int, int]:
    """The line with tabs expanded, and the caret's start and width on it. Control
    characters show as U+FFFD, one column each, so they cannot move the terminal's
    cursor (a bare CR would overwrite the line) and the caret stays aligned."""
    source_line = _INVISIBLE.sub("\ufffd", source_line)
    expanded = source_line.expandtabs(4)
    start = len(source_line[: span.column - 1].expandtabs(4))
    if span.end_line == span.line:
        end = len(source_line[: max(span.end_column - 1, span.column)].expandtabs(4))
    else:
        end = len(expanded.rstrip())
    return expanded, start, max(end - start, 1)


def render_one(d: Diagnostic, sources: Mapping[str, str]) -> Text:
    """One diagnostic as styled text (Text.plain is the uncoloured form)."""
    s = d.span
    out = Text()
    out.append(f"{s.file}:{s.line}:{s.column}: ", style="bold")
    out.append(f"{d.severity.value}:", style=_STYLES[d.severity])
    out.append(f" {d.message}  ")
    out.append(f"[{d.code}]", style="dim")
    lines = sources.get(s.file, "").split("\n")
    if 1 <= s.line <= len(lines):
        line_text, start, width = _excerpt(lines[s.line - 1].rstrip("\r"), s)
        out.append(f"\n{s.line:>5} | ", style="blue")
        out.append(line_text.rstrip())
        out.append("\n      | ", style="blue")
        out.append(" " * start)
        out.append("^" + "~" * (width - 1), style=_STYLES[d.severity])
    if d.hint:
        out.append("\n   hint: ", style="bold green")
        out.append(d.hint)
    return out


def summary_line(diagnostics: list[Diagnostic], files: int) -> str:
    errors = sum(d.severity is Severity.ERROR for d in diagnostics)
    warnings = sum(d.severity is Severity.WARNING for d in diagnostics)

    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    checked = f"in {plural(files, 'file')}" if files else ""
    if not errors and not warnings:
        return f"no problems found {checked}".rstrip()
    return f"{plural(errors, 'error')}, {plural(warnings, 'warning')} {checked}".rstrip()


def render_text(diagnostics: Iterable[Diagnostic], sources: Mapping[str, str]) -> str:
    """All diagnostics, uncoloured, one blank line apart (the golden-file form)."""
    return "\n\n".join(render_one(d, sources).plain for d in diagnostics)


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json.dumps({"diagnostics": [d.to_json() for d in diagnostics]}, indent=2) + "\n"
