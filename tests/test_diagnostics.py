"""Golden diagnostics: every bad input under tests/golden/diagnostics/<case>/input.topo
renders to expected.txt (the uncoloured text form) and expected.json.

The file is compiled as `input.topo`, so the golden files do not depend on where the
checkout lives. Regenerate with `pytest --update-golden` and read every changed file as
a user would: is the message clear, the caret on the right token, the hint actionable?
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import GOLDEN
from topoc.compiler import compile_source
from topoc.diagnostics import CODES, Severity, render_json, render_text, sort_diagnostics

CASES = sorted(p.parent.name for p in (GOLDEN / "diagnostics").glob("*/input.topo"))


def _compile(case: str):
    path = GOLDEN / "diagnostics" / case / "input.topo"
    source = path.read_bytes().decode("utf-8")  # as on disk: CRLF cases keep their CRs
    return source, compile_source(source, "input.topo")


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30, CASES


@pytest.mark.parametrize("case", CASES)
def test_golden_diagnostics(case, golden):
    source, result = _compile(case)
    assert not result.ok, f"{case} is meant to be a bad input, but it compiles clean"
    assert result.diagnostics, case
    golden.check(Path("diagnostics", case, "expected.txt"),
                 render_text(result.diagnostics, {"input.topo": source}) + "\n")
    golden.check(Path("diagnostics", case, "expected.json"), render_json(result.diagnostics))


@pytest.mark.parametrize("case", CASES)
def test_every_diagnostic_is_well_formed(case):
    source, result = _compile(case)
    lines = source.replace("\r\n", "\n").split("\n")
    for d in result.diagnostics:
        assert d.code in CODES, d
        assert d.severity is CODES[d.code].severity or d.severity is Severity.WARNING, d
        assert d.message and not d.message.endswith("."), d
        assert 1 <= d.span.line <= len(lines), d
        assert 1 <= d.span.column <= len(lines[d.span.line - 1]) + 1, d
        assert (d.span.end_line, d.span.end_column) > (d.span.line, d.span.column), d
    assert result.diagnostics == sort_diagnostics(result.diagnostics), "sorted by position"


def test_json_has_exactly_the_documented_keys():
    _, result = _compile("many-errors-sorted")
    document = json.loads(render_json(result.diagnostics))
    assert list(document) == ["diagnostics"]
    assert len(document["diagnostics"]) == len(result.diagnostics) > 1
    for entry in document["diagnostics"]:
        assert list(entry) == ["severity", "code", "message", "file", "line", "column",
                               "end_line", "end_column", "hint"]
        assert entry["file"] == "input.topo"


def test_several_errors_come_sorted_by_position():
    _, result = _compile("many-errors-sorted")
    positions = [(d.span.line, d.span.column) for d in result.diagnostics]
    assert len(positions) >= 5
    assert positions == sorted(positions)


MULTI_STAGE = [case for case in CASES if case.startswith("multi-stage-")]
# One code (or a few that say the same kind of thing) per stage of the pipeline.
STAGES = {
    "syntax": {"syntax-error"},
    "value": {"invalid-value", "mac-invalid"},
    "name": {"undefined-name"},
    "address": {"address-conflict"},
    "dhcp": {"dhcp-range"},
    "reach": {"expect-failed"},
}


def test_there_are_ten_multi_stage_cases():
    assert len(MULTI_STAGE) >= 10, MULTI_STAGE


@pytest.mark.parametrize("case", MULTI_STAGE)
def test_one_run_reports_a_problem_of_every_stage(case):
    """A syntax error, a bad value or an unknown name hides nothing else: every stage's
    problem in the file is reported in one run (what each says, and that nothing is
    reported that only follows from another, is in the case's golden files)."""
    _, result = _compile(case)
    codes = {d.code for d in result.diagnostics}
    missing = [stage for stage, wanted in STAGES.items() if not codes & wanted]
    assert not missing, (case, missing, sorted(codes))
    # One diagnostic a line at most: a follow-on would point at the same statement.
    lines = [d.span.line for d in result.diagnostics]
    assert len(lines) == len(set(lines)), case


BRIDGE_AND_DUPLICATE = """lab t
host kvm1 {
    nic eth0 on lan address 192.168.1.10
}
network lan {
    mode external
    subnet 192.168.1.0/24
}
network natnet on kvm1 {
    mode nat
    bridge br-very-long-name0
    address 10.0.0.1/24
}
vm a on kvm1 {
    nic on natnet address 10.0.0.5
}
vm b on kvm1 {
    nic on natnet address 10.0.0.5
}
"""
KEYWORD_AND_BAD_ADDRESS = """lab t
host kvm1 {
    nic eth0 on lan address 192.168.1.10
}
network lan {
    mode external
    subnet 192.168.1.0/24
}
network natnet on kvm1 {
    mode nat
    adress 10.0.0.1/24
}
vm a on kvm1 {
    nic on natnet address 10.0.0.256
}
"""


def test_a_bad_bridge_name_does_not_hide_a_duplicated_address():
    result = compile_source(BRIDGE_AND_DUPLICATE, "t.topo")
    assert [(d.code, d.span.line) for d in result.diagnostics] == [
        ("invalid-value", 11), ("address-conflict", 18)]


def test_a_misspelt_keyword_does_not_hide_a_bad_address_further_down():
    result = compile_source(KEYWORD_AND_BAD_ADDRESS, "t.topo")
    assert [(d.code, d.span.line) for d in result.diagnostics] == [
        ("syntax-error", 11), ("invalid-value", 14)]
