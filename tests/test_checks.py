"""Golden diagnostics of the checks: each case under tests/golden/checks/<case>/ is an
input.topo and the expected.txt that `topoc check` must print for it (rendered with
topoc.diagnostics.render_text). Every code the checks register has a case."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import GOLDEN, example_files
from topoc.checks.registry import CHECKS
from topoc.compiler import compile_file
from topoc.diagnostics import Severity, render_text

CASES = sorted(p.parent for p in (GOLDEN / "checks").glob("*/input.topo"))


def _rendered(case: Path) -> str:
    path = str(case / "input.topo")
    result = compile_file(path)
    text = render_text(result.diagnostics, {path: result.source})
    # Paths relative to the case, so the golden file reads the same from any checkout.
    return text.replace(f"{case}/", "") + "\n"


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_check_diagnostics_match_golden(case: Path, golden) -> None:
    golden.check(f"checks/{case.name}/expected.txt", _rendered(case))


def test_every_check_code_has_a_golden_case() -> None:
    codes = {c.code.name for c in CHECKS.all()}
    assert len(codes) >= 12
    covered = {code for case in CASES
               for code in codes if f"[{code}]" in (case / "expected.txt").read_text()}
    assert codes - covered == set()


def test_diagnostics_carry_a_hint_and_a_real_position() -> None:
    for case in CASES:
        result = compile_file(str(case / "input.topo"))
        assert result.diagnostics, case.name
        for d in result.diagnostics:
            assert d.hint, f"{case.name}: {d.message}"
            assert d.span.file == str(case / "input.topo") and d.span.line > 1


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_examples_have_no_errors_and_their_expects_hold(path: Path) -> None:
    result = compile_file(str(path))
    assert result.ok
    assert not [d for d in result.diagnostics if d.code == "expect-failed"]
    warnings = [(d.code, d.span.line) for d in result.diagnostics if d.severity is Severity.WARNING]
    # The one warning in the examples: the isolated segment in the LAN's subnet (line 25,
    # and line 28 in its dual-stack variant).
    expected = {"isolated.topo": [("subnet-overlap", 25)], "isolated-dualstack.topo": [("subnet-overlap", 28)]}
    assert warnings == expected.get(path.name, [])


def test_isolated_example_exits_zero_with_its_warning() -> None:
    from click.testing import CliRunner

    from topoc.cli import cli

    result = CliRunner().invoke(cli, ["check", str(GOLDEN / "checks/subnet-overlap-isolated/input.topo")])
    assert result.exit_code == 0
    assert "[subnet-overlap]" in result.output and "0 errors, 1 warning" in result.output


def test_findings_on_a_clean_copy_disappear_when_fixed(tmp_path: Path) -> None:
    """The routed lab without the router's route warns; putting the suggested route back
    (copied from the hint) silences it."""
    source = (GOLDEN / "checks/unreachable-segment-return-route/input.topo").read_text()
    result = compile_file(str(GOLDEN / "checks/unreachable-segment-return-route/input.topo"))
    warning = next(d for d in result.diagnostics if d.code == "unreachable-segment")
    route = warning.hint.split("`")[1]  # "route 10.10.101.0/24 via 192.168.101.11"
    fixed = source.replace("    nic eth0 on lan address 192.168.101.1\n",
                           f"    nic eth0 on lan address 192.168.101.1\n    {route}\n")
    fixed = fixed.replace("expect pc !-> web", "expect pc -> web")
    path = tmp_path / "fixed.topo"
    path.write_text(fixed)
    again = compile_file(str(path))
    assert again.ok and again.diagnostics == []


def test_a_written_mac_equal_to_a_derived_one_is_stepped_past(tmp_path: Path) -> None:
    """vm0 takes the MAC topoc would derive for vm1's nic: vm1 gets the next candidate,
    and mac-conflict stays silent."""
    from topoc.model import naming
    taken = naming.derived_mac("macs", "vm1", 0)
    source = (GOLDEN / "checks/mac-conflict/input.topo").read_text()
    source = source.replace("mac 52:54:00:aa:bb:cc", f"mac {taken}").replace(" mac 52:54:00:AA:BB:CC", "")
    path = tmp_path / "macs.topo"
    path.write_text(source)
    result = compile_file(str(path))
    assert result.ok and result.diagnostics == []
    vm0, vm1 = result.lab.vms
    assert vm0.nics[0].mac == taken
    assert vm1.nics[0].mac == naming.derived_mac("macs", "vm1", 0, attempt=1)
