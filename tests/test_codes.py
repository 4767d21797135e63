"""The codes registry (topoc.codes), `--list-codes`, and switching warnings off per run
(`--disable CODE`) and per file (`# topoc: disable=CODE`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GOLDEN
from topoc.checks.registry import CHECKS
from topoc.codes import CODES, Category, Severity, register
from topoc.compiler import compile_source

TOPOC = [sys.executable, "-m", "topoc"]

# One warning (no-address: a VM nic with no address on a network without DHCP) and
# nothing else.
WARNS = """\
lab w
host kvm1 {
    nic eth0 on lan address 192.168.1.2
}
network lan {
    mode external
    subnet 192.168.1.0/24
}
network n on kvm1 {
    mode isolated
    address 10.0.0.1/24
}
vm a on kvm1 {
    nic on n
}
vm b on kvm1 {
    nic on n address 10.0.0.3
}
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TOPOC, *args], capture_output=True, text=True, timeout=60)


def codes_of(source: str, **kw: object) -> list[tuple[str, int]]:
    result = compile_source(source, "t.topo", **kw)  # type: ignore[arg-type]
    return [(d.code, d.span.line) for d in result.diagnostics]


def test_every_code_has_a_severity_category_and_meaning() -> None:
    assert len(CODES) >= 25
    for code in CODES.values():
        assert code.name == code.name.lower() and " " not in code.name
        assert isinstance(code.severity, Severity) and isinstance(code.category, Category)
        assert code.summary and not code.summary.endswith(".")


def test_every_check_reports_a_code_of_the_registry() -> None:
    assert {c.code.name for c in CHECKS.all()} <= set(CODES)


def test_every_code_in_a_golden_file_is_in_the_registry() -> None:
    for path in (GOLDEN / "diagnostics").glob("*/expected.json"):
        for d in json.loads(path.read_text())["diagnostics"]:
            assert d["code"] in CODES, (path, d["code"])


def test_register_refuses_a_code_the_table_does_not_list() -> None:
    assert register("no-address", Severity.WARNING, "x") is CODES["no-address"]
    with pytest.raises(ValueError, match="topoc/codes.py"):
        register("made-up-code", Severity.ERROR, "x")


def test_list_codes_prints_the_registry_without_importing_deploy() -> None:
    probe = ("import sys; from click.testing import CliRunner; from topoc.cli import cli; "
             "r = CliRunner().invoke(cli, ['check', '--list-codes']); "
             "print(r.output, end=''); print('deploy imported:', 'topoc.deploy.engine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[-1] == "deploy imported: False"
    listed = {line.split()[0]: line.split()[1:3] for line in lines[:-1]}
    assert listed == {c.name: [c.severity.value, c.category.value] for c in CODES.values()}


def test_the_bridge_length_rule_lives_in_one_place() -> None:
    """Too long a bridge name is a bad value, reported once, by lowering."""
    source = WARNS.replace("    mode isolated\n", "    mode isolated\n    bridge br-very-long-name0\n")
    assert codes_of(source).count(("invalid-value", 11)) == 1
    assert not [c for c, _ in codes_of(source) if c == "bridge-name"]


def test_disable_switches_a_warning_off_for_the_run(tmp_path: Path) -> None:
    path = tmp_path / "w.topo"
    path.write_text(WARNS)
    assert codes_of(WARNS) == [("no-address", 14)]
    plain = run("check", str(path))
    assert plain.returncode == 0 and "[no-address]" in plain.stdout
    quiet = run("check", "--disable", "no-address", "--disable", "unreachable-segment", str(path))
    assert quiet.returncode == 0 and "[no-address]" not in quiet.stdout
    assert "no problems found" in quiet.stdout
    built = run("build", "--disable", "no-address", "--target", "libvirt", "-o", str(tmp_path / "out"),
                str(path))
    assert built.returncode == 0 and "no-address" not in built.stderr


@pytest.mark.parametrize("code, why", [("address-conflict", "is an error"),
                                       ("no-such-code", "is not a diagnostic code")])
def test_disable_refuses_an_error_or_an_unknown_code(tmp_path: Path, code: str, why: str) -> None:
    path = tmp_path / "w.topo"
    path.write_text(WARNS)
    for command in (["check"], ["build", "-o", str(tmp_path / "out")], ["reach"]):
        result = run(*command, "--disable", code, str(path))
        assert result.returncode == 2, command
        assert f"--disable: `{code}` {why}" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_pragma_switches_a_warning_off_for_the_file() -> None:
    source = "# topoc: disable=no-address\n" + WARNS
    assert codes_of(source) == []
    # Only on a line of its own: after code it is an ordinary comment.
    trailing = WARNS.replace("lab w\n", "lab w  # topoc: disable=no-address\n")
    assert codes_of(trailing) == [("no-address", 14)]
    # Several codes, spaces allowed.
    assert codes_of("#topoc: disable = forward-target, no-address\n" + WARNS) == []


def test_a_pragma_naming_an_error_or_nothing_is_a_warning_at_the_name() -> None:
    source = "# topoc: disable=no-address,address-conflict, nope\n" + WARNS
    result = compile_source(source, "t.topo")
    found = [(d.code, d.span.line, d.span.column, d.message) for d in result.diagnostics]
    assert found == [
        ("bad-pragma", 1, 29, "`address-conflict` is an error; only warnings can be disabled"),
        ("bad-pragma", 1, 47, "`nope` is not a diagnostic code"),
    ]
    assert result.ok  # warnings only


def test_disabled_codes_and_pragmas_combine() -> None:
    source = "# topoc: disable=unreachable-segment\n" + WARNS
    assert codes_of(source, disabled=frozenset({"no-address"})) == []
