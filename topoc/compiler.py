"""The front half of the pipeline: read a file, parse, lower, check.

Every stage after this one (backends, writer, deploy, verify) starts from a
Compilation with no errors. Problems with the input *file* (missing, unreadable, not
UTF-8) are InputError, which the CLI reports with exit code 2; problems *in* the file
are diagnostics (exit code 1).
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from topoc.checks import run_checks
from topoc.diagnostics import Diagnostic, has_errors, sort_diagnostics
from topoc.model.analysis import Analysis
from topoc.model.ir import Lab
from topoc.front.lower import lower
from topoc.front.parser import parse
from topoc.front.syntax import SyntaxTree


class InputError(Exception):
    """The file itself cannot be read as a .topo source."""


@dataclass
class Compilation:
    file: str
    source: str
    tree: SyntaxTree | None = None
    lab: Lab | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # The lab's analysis (topology, reach engine), built once and handed to every stage.
    analysis: Analysis | None = None
    # Whether the file parsed and lowered without errors (the checks may still find some).
    lowered_clean: bool = False

    @property
    def ok(self) -> bool:
        return self.lab is not None and not has_errors(self.diagnostics)


def read_source(path: str) -> str:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a .topo file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                         f"{e.start})") from None
    if "\x00" in text:
        raise InputError(f"{path}: contains NUL bytes; is it a binary file?")
    return text.removeprefix("\ufeff")


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """The front end allocates a few objects per token and frees them by reference
    counting; CPython's cyclic collector would rescan the growing heap again and again
    (half the parse time at 10,000 VMs). Paused while compiling, restored after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_source(source: str, file: str, *, checks: bool = True) -> Compilation:
    with _cyclic_gc_paused():
        return _compile_source(source, file, checks=checks)


def _compile_source(source: str, file: str, *, checks: bool) -> Compilation:
    result = Compilation(file, source)
    tree, diagnostics = parse(source, file)
    result.tree = tree
    if tree is not None:
        lowered = lower(tree)
        diagnostics += lowered.diagnostics
        result.lowered_clean = not has_errors(diagnostics)
        result.lab = lowered.lab
        result.analysis = Analysis(lowered.lab, lowered.poisoned)
        if checks:
            diagnostics += run_checks(result.analysis)
    result.diagnostics = sort_diagnostics(diagnostics)
    return result


def compile_file(path: str, *, checks: bool = True) -> Compilation:
    return compile_source(read_source(path), path, checks=checks)
