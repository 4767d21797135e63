"""A seeded 5,000-input fuzz run of `check --format json` and `fmt --check` (bench/fuzz.py
says what is generated and what each input must satisfy). `python bench/fuzz.py --count
100000` is the long run; this one keeps every change honest in the normal suite."""

from __future__ import annotations

import sys
import time

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import fuzz  # noqa: E402  (bench/ is not a package)

from topoc.compiler import compile_source  # noqa: E402

SEED, COUNT = 13, 5000


def test_five_thousand_fuzzed_inputs_keep_the_command_line_promises() -> None:
    started = time.perf_counter()
    result = fuzz.run(SEED, COUNT)
    seconds = time.perf_counter() - started
    report = "\n".join(f"input {f.index} ({f.command}): {f.problem[:1500]}\n--- source:\n{f.source[:1500]}"
                       for f in result.failures[:3])
    assert not result.failures, f"{len(result.failures)} failures (seed {SEED}):\n{report}"
    assert result.count == COUNT
    # Both outcomes are exercised, not just one kind of input.
    assert set(result.exit_codes["check --format json"]) >= {0, 1}
    assert set(result.exit_codes["fmt --check"]) >= {0, 1}
    print(f"{COUNT:,} fuzzed inputs in {seconds:.1f} s")


def test_a_repaired_header_does_not_move_a_span_past_its_line() -> None:
    """Found by the fuzzer: a `{` on the line after its header is joined to the header
    while recovering, and the later `never closed` error measured the joined line."""
    source = "lab demo\n\nnetwork LAN\n{\n    mode external\n    subnet 192.168.1.0/2"
    diagnostics = compile_source(source, "f.topo").diagnostics
    lines = source.split("\n")
    for d in diagnostics:
        assert d.span.end_column <= len(lines[d.span.end_line - 1]) + 2, d
    closed = [d for d in diagnostics if "never closed" in d.message]
    assert closed and closed[0].span.end_column == len("network LAN") + 1
