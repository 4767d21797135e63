"""up.sh changes nothing it does not own: a bridge or an nft table of the lab's name that
was there before is refused, by name, and left exactly as it was (in a network
namespace standing in for the host, as in test_host_netns)."""

from __future__ import annotations

from pathlib import Path

import pytest
from host_cases import case_files, case_name, compile_case
from test_host_netns import (assert_same, netns, ns_ok, ok_script, run_script,  # noqa: F401
                             snapshot, stand_in_for_host, write_scripts)

from topoc.backends.host import table_name

NAT = next(p for p in case_files() if case_name(p) == "nat")
MIXED = next(p for p in case_files() if case_name(p) == "mixed")


def _bridge_settings(ns: str, name: str) -> str:
    return ns_ok(ns, "ip", "-d", "link", "show", "dev", name)


@pytest.mark.parametrize("stp", ["0", "1"])
def test_a_bridge_that_was_there_is_refused_and_left_alone(netns, tmp_path: Path, stp: str) -> None:  # noqa: F811
    """nat.topo's bridge natbr0 exists (STP on: up.sh used to die with "Numerical result
    out of range"; STP off: it set forward_delay 0 and the MTU, never put back)."""
    lab = compile_case(NAT)
    ns = netns()
    stand_in_for_host(ns, lab, lab.hosts[0])
    ns_ok(ns, "ip", "link", "add", "name", "natbr0", "mtu", "1400", "type", "bridge",
          "stp_state", stp, "forward_delay", "1500")
    before, settings = snapshot(ns), _bridge_settings(ns, "natbr0")
    scripts, state = write_scripts(lab, "kvm1", tmp_path / "host"), tmp_path / "state"
    result = run_script(ns, scripts, "up.sh", state)
    assert result.returncode == 1
    assert "bridge natbr0 exists already and up.sh did not create it" in result.stderr, result.stderr
    assert _bridge_settings(ns, "natbr0") == settings
    assert_same(snapshot(ns), before)
    ok_script(ns, scripts, "down.sh", state)
    assert_same(snapshot(ns), before)


def test_a_later_bridge_that_was_there_stops_up_and_down_undoes_the_rest(netns, tmp_path: Path) -> None:  # noqa: F811
    """mixed.topo's last bridge (br1) exists: up.sh made the others first; down.sh
    removes those and leaves br1 with its own settings."""
    lab = compile_case(MIXED)
    ns = netns()
    stand_in_for_host(ns, lab, lab.hosts[0])
    ns_ok(ns, "ip", "link", "add", "name", "br1", "type", "bridge", "stp_state", "1")
    before, settings = snapshot(ns), _bridge_settings(ns, "br1")
    scripts, state = write_scripts(lab, "kvm1", tmp_path / "host"), tmp_path / "state"
    result = run_script(ns, scripts, "up.sh", state)
    assert result.returncode == 1 and "bridge br1 exists already" in result.stderr, result.stderr
    ok_script(ns, scripts, "down.sh", state)
    assert _bridge_settings(ns, "br1") == settings
    assert_same(snapshot(ns), before)


FOREIGN_TABLE = """table inet {table} {{
    chain input {{
        type filter hook input priority 0; policy accept;
        tcp dport 9999 counter accept
    }}
}}
"""


def test_an_nft_table_up_did_not_make_is_refused_and_kept(netns, tmp_path: Path) -> None:  # noqa: F811
    lab = compile_case(NAT)
    ns = netns()
    stand_in_for_host(ns, lab, lab.hosts[0])
    table = table_name(lab)
    ns_ok(ns, "nft", "-f", "-", input=FOREIGN_TABLE.format(table=table))
    scripts, state = write_scripts(lab, "kvm1", tmp_path / "host"), tmp_path / "state"
    result = run_script(ns, scripts, "up.sh", state)
    assert result.returncode == 1
    assert f"nftables table inet {table} exists already and up.sh did not create it" in result.stderr
    assert "tcp dport 9999" in ns_ok(ns, "nft", "list", "table", "inet", table)
    ok_script(ns, scripts, "down.sh", state)
    # down.sh must not delete it either: it was never up.sh's.
    assert "tcp dport 9999" in ns_ok(ns, "nft", "list", "table", "inet", table)


def test_the_table_up_made_is_replaced_on_a_second_run(netns, tmp_path: Path) -> None:  # noqa: F811
    """The record is what makes a table the lab's: a second up.sh replaces its own."""
    lab = compile_case(NAT)
    ns = netns()
    stand_in_for_host(ns, lab, lab.hosts[0])
    before = snapshot(ns)
    scripts, state = write_scripts(lab, "kvm1", tmp_path / "host"), tmp_path / "state"
    ok_script(ns, scripts, "up.sh", state)
    ok_script(ns, scripts, "up.sh", state)
    ok_script(ns, scripts, "down.sh", state)
    assert_same(snapshot(ns), before)
