"""Golden diagnostics of the checks: each case under tests/golden/checks/<case>/ is an
input.topo and the expected.txt that `topoc check` must print for it (rendered with
topoc.diagnostics.render_text). Every code the checks register has a case."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import EXAMPLES, GOLDEN, ROOT, example_files
from topoc.checks.registry import CHECKS
from topoc.compiler import compile_file, compile_source
from topoc.diagnostics import Severity, render_text
from topoc.model.family import IPV4, IPV6

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


# A dual-stack lab of every check's concern: a LAN with both subnets, a nat network whose
# IPv6 is routed (the LAN routes back to it), a routed network with DHCP in both
# families, a host-only network, a VM nic left to DHCP or SLAAC (libvirt runs the
# dnsmasq that offers it with `dns on` or DHCP), an IPv6 gateway. It checks clean.
DUAL_STACK = """\
lab dual

host kvm1 {
    nic eth0 on lan address 192.168.101.11 address 2001:db8:101::11
}

network lan {
    mode external
    subnet 192.168.101.0/24
    subnet 2001:db8:101::/64
}

network natnet on kvm1 {
    mode nat via eth0
    dns on  # dnsmasq runs: its router advertisements give the IPv6 default route
    address 188.64.100.1/24
    address fd00:64::1/64
}

network hidden on kvm1 {
    mode nat via eth0
    dns on  # dnsmasq runs: its router advertisements give the IPv6 default route
    nat6 on
    address 188.64.102.1/24
    address fd00:66::1/64
}

network svc on kvm1 {
    mode routed via eth0
    address 10.10.101.1/24
    address fd00:101::1/64
    dhcp 10.10.101.100 - 10.10.101.200
    dhcp fd00:101::100 - fd00:101::1ff
}

network back on kvm1 {
    mode isolated
    address 10.20.0.1/24
    address fd00:20::1/64
    dns on  # SLAAC for vm1's eth1 comes from its dnsmasq
}

vm vm0 on kvm1 {
    nic eth0 on natnet address 188.64.100.2 address fd00:64::2
    nic eth1 on back address 10.20.0.2 address fd00:20::2
}

vm vm1 on kvm1 {
    nic eth0 on svc address 10.10.101.2 address fd00:101::2 gateway fd00:101::1
    nic eth1 on back
}

vm vm2 on kvm1 {
    nic eth0 on natnet
    nic eth1 on hidden address 188.64.102.2 address fd00:66::2
}

external win10 {
    nic eth0 on lan address 192.168.101.20 address 2001:db8:101::20
    route 10.10.101.0/24 via 192.168.101.11
    route fd00:64::/64 via 2001:db8:101::11
    route fd00:101::/64 via 2001:db8:101::11
}
"""


def test_a_dual_stack_lab_checks_clean(tmp_path: Path) -> None:
    path = tmp_path / "dual.topo"
    path.write_text(DUAL_STACK)
    result = compile_file(str(path))
    assert [(d.code, d.span.line, d.message) for d in result.diagnostics] == []
    assert result.analysis.families == (IPV4, IPV6)  # both families were checked


@pytest.mark.parametrize("code, old, new, subnet", [
    ("address-outside-subnet", "address fd00:64::2\n", "address fd00:65::2\n", "fd00:64::/64"),
    ("gateway-unreachable", "gateway fd00:101::1", "gateway fd00:99::1", "fd00:101::/64"),
    ("dhcp-range", "dhcp fd00:101::100 - fd00:101::1ff", "dhcp fd00:101::1ff - fd00:101::100", "fd00:101::1ff"),
    ("address-conflict", "    nic eth1 on back\n}", "    nic eth1 on back address fd00:20::2\n}", "fd00:20::2"),
])
def test_one_ipv6_mistake_in_the_clean_lab_is_found_once(code: str, old: str, new: str, subnet: str) -> None:
    """The checks run per family: an IPv6 mistake in the clean lab is found once, at the
    IPv6 token, naming the IPv6 subnet or address."""
    assert DUAL_STACK.count(old) == 1, old
    source = DUAL_STACK.replace(old, new)
    diagnostics = compile_source(source, "d.topo").diagnostics
    # (A wrong address or gateway also costs the LAN its replies: reach says so.)
    assert {d.code for d in diagnostics} <= {code, "unreachable-segment"}, [d.message for d in diagnostics]
    [d] = [d for d in diagnostics if d.code == code]
    line = source.split("\n")[d.span.line - 1]
    assert subnet in d.message and ":" in line[d.span.column - 1:d.span.end_column - 1]


def test_a_bridged_vm_with_only_an_ipv6_address_shows_which_nic_bridged_to_means() -> None:
    """uplink-missing is an error naming the host's nic on the LAN of the bridged VMs'
    addresses: an IPv6 address in the LAN's IPv6 subnet shows it as an IPv4 one does."""
    source = (EXAMPLES / "bridged.topo").read_text(encoding="utf-8")
    source = source.replace("    subnet 192.168.101.0/24\n", "    subnet 192.168.101.0/24\n    subnet 2001:db8:101::/64\n")
    source = source.replace("nic eth0 on lan address 192.168.101.11 gateway", "nic eth0 on lan address 192.168.101.11 "
                            "address 2001:db8:101::11 gateway")
    source = source.replace("nic eth0 on lanbridge address 192.168.101.50/24 gateway 192.168.101.1",
                            "nic eth0 on lanbridge address 2001:db8:101::50/64")
    source = source.replace("mode bridged to eth0", "mode bridged to eth1")
    [d] = [d for d in compile_source(source, "b.topo").diagnostics if d.code == "uplink-missing"]
    assert d.severity is Severity.ERROR and "write `mode bridged to eth0`" in (d.hint or "")


@pytest.mark.parametrize("dhcp, refused", [
    ("dhcp 10.0.0.2 - 10.0.255.254", False),  # 65,533 addresses: the first two bytes agree
    ("dhcp 10.0.0.2 - 10.1.0.254", True),
    ("dhcp fd00::2 - fd00::ffff", False),
    ("dhcp fd00::2 - fd00::1:0", True),  # the seventh group differs
])
def test_libvirts_dhcp_range_limit_holds_in_both_families(dhcp: str, refused: bool) -> None:
    """virSocketAddrGetRange refuses a range whose start and end differ before their last
    16 bits ("range ... is too large (> 65535)"); the hint's range is one it accepts."""
    source = DUAL_STACK.replace("    address 188.64.100.1/24\n    address fd00:64::1/64\n",
                                f"    address 10.0.0.1/8\n    address fd00::1/64\n    {dhcp}\n")
    found = [d for d in compile_source(source, "d.topo").diagnostics if d.code == "dhcp-range"]
    assert bool(found) is refused, [d.message for d in found]
    if refused:
        [d] = found
        assert "more than 65,535 addresses" in d.message
        fixed = source.replace(dhcp, (d.hint or "").split("`")[1])
        assert not [d for d in compile_source(fixed, "d.topo").diagnostics if d.code == "dhcp-range"]


@pytest.mark.parametrize("subnet, address, expected", [
    ("10.0.0.0/24", "10.0.0.0", False), ("10.0.0.0/24", "10.0.0.255", False), ("10.0.0.0/24", "10.0.0.1", True),
    ("10.0.0.0/31", "10.0.0.0", True),  # RFC 3021: a /31 has neither network nor broadcast address
    ("fd00::/64", "fd00::", False),  # the subnet-router anycast address (RFC 4291 2.6.1)
    ("fd00::/64", "fd00::ffff:ffff:ffff:ffff", True),  # IPv6 has no broadcast address
    ("fd00::/127", "fd00::", True),  # RFC 6164: a point-to-point /127 uses both
])
def test_which_addresses_of_a_subnet_are_usable(subnet: str, address: str, expected: bool) -> None:
    from ipaddress import ip_address, ip_network

    from topoc.checks.common import usable
    assert usable(ip_network(subnet), ip_address(address)) is expected


def test_fixes_beyond_the_confirmation_budget_say_they_were_not_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    """unreachable-segment confirms each fix on an edited copy of the lab, up to a budget
    of rebuilt nodes; past it, a fix is still offered but says it was not tried."""
    from topoc.checks import reachability

    path = ROOT / "tests" / "reach_labs" / "routed_no_return.topo"

    def hint() -> str:
        result = compile_file(str(path))
        [d] = [d for d in result.diagnostics if d.code == "unreachable-segment"]
        return d.hint or ""

    assert hint().startswith("add `route 10.10.101.0/24 via 192.168.101.11`")
    assert reachability.UNCONFIRMED not in hint()
    monkeypatch.setattr(reachability, "CONFIRMATION_BUDGET", 0)
    assert hint().startswith("add `route 10.10.101.0/24 via 192.168.101.11` to external `router`"
                             + reachability.UNCONFIRMED)
