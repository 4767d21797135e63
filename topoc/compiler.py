"""The front half of the pipeline: read a file, parse, lower, check.

A syntax error does not stop lowering, nor a bad value the checks: every problem of the
file is reported in one run (topoc.front.lower says how). The Compilation holds the
lab's Analysis (topoc.model.analysis), built once and handed on to every later stage;
warning codes switched off for the run or by the file's `# topoc: disable=` comments are
dropped here. Every stage after this one (backends, writer, deploy, verify) starts from
a Compilation with no errors. Problems with the input *file* (missing, unreadable, not
UTF-8) are InputError, which the CLI reports with exit code 2; problems *in* the file
are diagnostics (exit code 1).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from topoc.checks import run_checks
from topoc.codes import BAD_PRAGMA, CODES, Severity
from topoc.diagnostics import Diagnostic, diagnostic, has_errors, sort_diagnostics
from topoc.front.lower import lower
from topoc.front.parser import parse, within
from topoc.front.syntax import SyntaxTree
from topoc.model.analysis import Analysis
from topoc.model.ir import Lab


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


# The largest source topoc reads, a stated limit rather than a tuned one: a 10,000-VM
# lab is about 2 MiB of text, so 64 MiB is thirty times the largest lab benchmarked.
MAX_SOURCE_BYTES = 64 * 1024 * 1024


def read_source(path: str) -> str:
    """The text of a .topo file: a regular file of at most MAX_SOURCE_BYTES, UTF-8.
    Anything else (a device, a FIFO, a socket, a huge file) is an InputError, before a
    byte is read, so `/dev/zero` cannot fill memory and a FIFO cannot hang the run."""
    data = _read_regular_file(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                         f"{e.start})") from None
    if "\x00" in text:
        raise InputError(f"{path}: contains NUL bytes; is it a binary file?")
    return text.removeprefix("\ufeff")


def _read_regular_file(path: str) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOCTTY: a terminal
        # device must not become our controlling terminal. Both refused below anyway.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a .topo file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as e:
        if e.errno == errno.ENXIO:  # a socket, or a FIFO with no writer on some systems
            raise InputError(f"{path}: is not a regular file") from None
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    try:
        info = os.fstat(fd)  # of the file opened, not of whatever the name points to now
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{path}: is a directory, not a .topo file")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: is {_kind(info.st_mode)}, not a regular file; "
                             "topoc reads .topo files only")
        if info.st_size > MAX_SOURCE_BYTES:
            raise InputError(f"{path}: is {info.st_size:,} bytes; topoc reads sources of at "
                             f"most {MAX_SOURCE_BYTES // 1024**2} MiB")
        chunks: list[bytes] = []
        size = 0
        # Read to the end, but never past the limit (the file may grow while we read).
        while chunk := os.read(fd, 1024 * 1024):
            size += len(chunk)
            if size > MAX_SOURCE_BYTES:
                raise InputError(f"{path}: is more than {MAX_SOURCE_BYTES // 1024**2} MiB; "
                                 "topoc reads sources of at most that size")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))
    return next((what for test, what in kinds if test(mode)), "a special file")


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


def compile_source(source: str, file: str, *, checks: bool = True,
                   disabled: frozenset[str] = frozenset()) -> Compilation:
    """Parse, lower and check `source`. `disabled`: warning codes switched off for this
    run (validated by topoc.codes.disabled_codes); the file's own pragmas add to them."""
    with _cyclic_gc_paused():
        result = _compile_source(source, file, checks=checks)
    if result.tree is not None:
        pragmas, problems = file_pragmas(result.tree)
        disabled = disabled | pragmas
        result.diagnostics = sort_diagnostics(result.diagnostics + problems)
    if disabled:
        result.diagnostics = [d for d in result.diagnostics
                              if not (d.code in disabled and d.severity is Severity.WARNING)]
    return result


# `# topoc: disable=CODE[,CODE...]` on a line of its own switches those warnings off for
# the whole file.
_PRAGMA = re.compile(r"#\s*topoc:\s*disable\s*=\s*(.*?)\s*$")


def file_pragmas(tree: SyntaxTree) -> tuple[frozenset[str], list[Diagnostic]]:
    """The warning codes the file's pragmas disable, and a `bad-pragma` warning for each
    name that is not a code or is an error's (errors cannot be switched off)."""
    disabled: set[str] = set()
    problems: list[Diagnostic] = []
    for comment in tree.comments:
        match = _PRAGMA.match(comment.text) if comment.own_line else None
        if match is None:
            continue
        offset = match.start(1)
        for part in match.group(1).split(","):
            name = part.strip()
            start = offset + len(part) - len(part.lstrip())
            offset += len(part) + 1
            span = comment.span.sub(start, len(name))
            code = CODES.get(name)
            if code is None:
                problems.append(diagnostic(BAD_PRAGMA, span, BAD_PRAGMA.message("unknown", name=name),
                                           BAD_PRAGMA.message("unknown_hint")))
            elif code.severity is not Severity.WARNING:
                problems.append(diagnostic(BAD_PRAGMA, span, BAD_PRAGMA.message("error", name=name),
                                           BAD_PRAGMA.message("error_hint")))
            else:
                disabled.add(name)
    return frozenset(disabled), problems


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
    if tree is not None and tree.recovered:
        # Recovery repaired the text (a `}` added, a `{` joined to its header): spans
        # measured on it must not point past what the file holds.
        lines = source.replace("\r\n", "\n").split("\n")
        diagnostics = [within(d, lines) for d in diagnostics]
    result.diagnostics = sort_diagnostics(diagnostics)
    return result


def compile_file(path: str, *, checks: bool = True,
                 disabled: frozenset[str] = frozenset()) -> Compilation:
    return compile_source(read_source(path), path, checks=checks, disabled=disabled)
