"""The checks: one function per check, registered with its code, run on the IR.

A check is a generator registered with `@check(CODE)`; it reads the IR (and, through
the context, the model graph and the reachability engine) and yields Findings. Code,
default severity and summary are registered once with `register` from
topoc.diagnostics, next to the check that uses them, so a check's code and messages
live in one place. Checks never touch backends, and backends never check.
"""

from __future__ import annotations

from topoc.checks.registry import CHECKS, Finding, check, run_checks

__all__ = ["CHECKS", "Finding", "check", "run_checks"]
