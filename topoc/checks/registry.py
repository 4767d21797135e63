"""The check registry: `@check(code)` registers a check; `run_checks` runs them all."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Iterator

from topoc.diagnostics import Code, Diagnostic, Severity
from topoc.model.ir import Lab
from topoc.front.span import Span


@dataclass(frozen=True, slots=True)
class Finding:
    """What a check yields: where, what, how to fix it; severity defaults to the code's."""

    span: Span
    message: str
    hint: str | None = None
    severity: Severity | None = None


CheckFn = Callable[[Lab], Iterator[Finding]]


@dataclass(frozen=True, slots=True)
class RegisteredCheck:
    code: Code
    fn: CheckFn


CHECKS: list[RegisteredCheck] = []


def check(code: Code) -> Callable[[CheckFn], CheckFn]:
    """Register `fn` as the check that reports `code`."""

    def register(fn: CheckFn) -> CheckFn:
        CHECKS.append(RegisteredCheck(code, fn))
        return fn

    return register


def _load_check_modules() -> None:
    """Import every module of this package, so each registers its checks."""
    import topoc.checks as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "registry":
            importlib.import_module(f"topoc.checks.{info.name}")


def run_checks(lab: Lab) -> list[Diagnostic]:
    _load_check_modules()
    diagnostics = []
    for registered in CHECKS:
        for finding in registered.fn(lab):
            diagnostics.append(Diagnostic(finding.severity or registered.code.severity,
                                          registered.code.name, finding.message, finding.span,
                                          finding.hint))
    return diagnostics
