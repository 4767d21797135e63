"""The checks: one function per check, registered with its code, run on the analysis.

A check is a generator registered with `@check(CODE)`; it is handed the compilation's
topoc.model.analysis.Analysis (the IR, its topology and reachability engine, and the
names whose lowering failed, about which it says nothing) and yields Findings. Its code
(severity, category, meaning, message templates) is one entry of topoc.codes. Checks
never touch backends, and backends never check.
"""

from __future__ import annotations

from topoc.checks.registry import CHECKS, Finding, check, run_checks

__all__ = ["CHECKS", "Finding", "check", "run_checks"]
