"""`topoc reach`: golden explanations (a success, a missing return route, a NAT inbound
refusal, an isolated segment), the matrix, its JSON form and the exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import EXAMPLES, GOLDEN
from topoc.cli import cli

LABS = Path(__file__).resolve().parent / "reach_labs"

EXPLAINED = {
    # name: (file, src, dst)
    "success-nat-masquerade": (EXAMPLES / "nat.topo", "vm0", "win10"),
    "missing-return-route": (LABS / "routed_no_return.topo", "web", "pc"),
    "nat-inbound-refused": (LABS / "two_nat.topo", "pc", "a"),
    "isolated-segment": (EXAMPLES / "isolated.topo", "vm1", "kvm1"),
    "routed-via-refuses-nat": (EXAMPLES / "mixed.topo", "proxy", "10.10.101.10"),
}


def run(*args: str) -> tuple[int, str]:
    """Exit code and standard output (warnings about the file go to standard error)."""
    result = CliRunner().invoke(cli, ["reach", *args])
    return result.exit_code, result.stdout


@pytest.mark.parametrize("name", sorted(EXPLAINED))
def test_explanations_match_golden(name: str, golden) -> None:
    path, src, dst = EXPLAINED[name]
    code, out = run(str(path), src, dst)
    assert code == 0
    golden.check(f"reach/{name}.txt", out)


def test_explanations_name_the_rule_and_the_fix() -> None:
    _, refused = run(str(LABS / "two_nat.topo"), "pc", "a")
    assert "LIBVIRT_FWI: -o tp-nat1 -j REJECT" in refused and "fix: `nat1` is NAT" in refused
    _, lost = run(str(LABS / "routed_no_return.topo"), "web", "pc")
    assert "fix: add `route 10.10.101.0/24 via 192.168.101.11` to external `router`" in lost


@pytest.mark.parametrize("example", ["mixed", "isolated"])
def test_matrix_matches_golden(example: str, golden) -> None:
    code, out = run(str(EXAMPLES / f"{example}.topo"))
    assert code == 0
    golden.check(f"reach/matrix-{example}.txt", out)


def test_json_lists_every_ordered_pair() -> None:
    code, out = run(str(EXAMPLES / "routed.topo"), "--format", "json")
    assert code == 0
    pairs = json.loads(out)["pairs"]
    names = ["kvm1", "web", "router", "pc"]
    assert [(p["src"], p["dst"]) for p in pairs] == [(a, b) for a in names for b in names if a != b]
    assert all(set(p) == {"src", "dst", "reachable", "path", "reason"} for p in pairs)
    pc_web = next(p for p in pairs if (p["src"], p["dst"]) == ("pc", "web"))
    assert pc_web["reachable"] and pc_web["path"] == ["pc", "router", "kvm1", "web", "kvm1", "pc"]


def test_json_of_one_pair_carries_the_explanation() -> None:
    code, out = run(str(EXAMPLES / "nat.topo"), "win10", "vm0", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["pairs"][0]["reachable"] is False
    assert doc["explanation"].startswith("win10 -> vm0: unreachable")


def test_usage_errors_exit_2_and_topology_errors_exit_1(tmp_path: Path) -> None:
    assert run(str(EXAMPLES / "nat.topo"), "nobody", "vm0")[0] == 2
    assert run(str(EXAMPLES / "nat.topo"), "vm0", "nowhere")[0] == 2
    assert run(str(EXAMPLES / "nat.topo"), "vm0")[0] == 2
    assert run(str(tmp_path / "missing.topo"))[0] == 2
    bad = GOLDEN / "checks/address-conflict/input.topo"
    result = CliRunner().invoke(cli, ["reach", str(bad)])
    assert result.exit_code == 1 and "[address-conflict]" in result.stderr


def test_output_is_the_same_under_any_hash_seed() -> None:
    """Set iteration order changes with PYTHONHASHSEED; the prediction must not."""
    import os
    import subprocess
    import sys

    outputs = set()
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-m", "topoc", "reach", str(EXAMPLES / "mixed.topo"),
                               "--format", "json"], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        outputs.add(done.stdout)
    assert len(outputs) == 1


def test_a_matrix_too_large_to_print_is_refused_with_advice(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from gen import generate_lab

    path = tmp_path / "big.topo"
    path.write_text(generate_lab(1000))
    result = CliRunner().invoke(cli, ["reach", str(path)])
    assert result.exit_code == 2 and "topoc reach FILE SRC DST" in result.stderr
    code, out = run(str(path), "vm00000", "router")
    assert code == 0 and out.startswith("vm00000 -> router: reachable")
