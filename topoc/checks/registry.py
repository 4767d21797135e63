"""The check registry: `@check(code)` registers a check; `run_checks` runs them all.

Every module of this package is imported before a run, and the checks run in one fixed
order (module name, then position in the module), so which entry point imported what
first never changes what runs or in which order.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from topoc.diagnostics import Code, Diagnostic, Severity
from topoc.front.span import Span
from topoc.model.analysis import Analysis


@dataclass(frozen=True, slots=True)
class Finding:
    """What a check yields: where, what, how to fix it; severity defaults to the code's."""

    span: Span
    message: str
    hint: str | None = None
    severity: Severity | None = None


CheckFn = Callable[[Analysis], Iterator[Finding]]


@dataclass(frozen=True, slots=True)
class RegisteredCheck:
    code: Code
    fn: CheckFn

    @property
    def order(self) -> tuple[str, int]:
        return (self.fn.__module__, self.fn.__code__.co_firstlineno)


class CheckRegistry:
    """The checks of this package, in a fixed order once every module is loaded."""

    def __init__(self) -> None:
        self._checks: dict[tuple[str, int], RegisteredCheck] = {}
        self._loaded = False

    def add(self, registered: RegisteredCheck) -> None:
        self._checks.setdefault(registered.order, registered)

    def all(self) -> list[RegisteredCheck]:
        if not self._loaded:
            import topoc.checks as package

            for name in sorted(info.name for info in pkgutil.iter_modules(package.__path__)):
                if name not in ("registry", "common"):
                    importlib.import_module(f"topoc.checks.{name}")
            self._loaded = True
        return [self._checks[key] for key in sorted(self._checks)]


CHECKS = CheckRegistry()


def check(code: Code) -> Callable[[CheckFn], CheckFn]:
    """Register `fn` as a check that reports `code`."""

    def register(fn: CheckFn) -> CheckFn:
        CHECKS.add(RegisteredCheck(code, fn))
        return fn

    return register


def run_checks(analysis: Analysis) -> list[Diagnostic]:
    diagnostics = []
    for registered in CHECKS.all():
        for finding in registered.fn(analysis):
            diagnostics.append(Diagnostic(finding.severity or registered.code.severity,
                                          registered.code.name, finding.message, finding.span,
                                          finding.hint))
    return diagnostics
