"""The examples' dual-stack twins (examples/<name>-dualstack.topo): one for every example,
with IPv6 on every network that has IPv4, `expect` lines of both families, and the IPv4
half of the lab behaving exactly as the IPv4-only original does. (That they check clean
and their `expect`s hold is tests/test_checks.py's example test; their goldens are the
backends' tests.)"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from conftest import EXAMPLES

from topoc.compiler import compile_file
from topoc.model.family import IPV4, IPV6
from topoc.model.ir import Mode
from topoc.model.reach import predict

SUFFIX = "-dualstack"
ORIGINALS = sorted(p for p in EXAMPLES.glob("*.topo") if not p.stem.endswith(SUFFIX))
TWINS = sorted(EXAMPLES.glob(f"*{SUFFIX}.topo"))


def _twin(original: Path) -> Path:
    return original.with_name(f"{original.stem}{SUFFIX}.topo")


def _is_ipv6(operand: str) -> bool:
    try:
        return ipaddress.ip_address(operand).version == 6
    except ValueError:
        return False  # a node name


def test_every_example_has_a_dual_stack_twin_and_nothing_else_is_one():
    assert len(ORIGINALS) >= 7
    assert sorted(_twin(p) for p in ORIGINALS) == TWINS


@pytest.mark.parametrize("path", TWINS, ids=lambda p: p.stem)
def test_a_twin_is_dual_stack_wherever_the_original_has_addresses(path):
    lab = compile_file(str(path)).lab
    assert lab.families == (IPV4, IPV6)
    for network in lab.networks:
        if IPV4 in network.families:
            assert IPV6 in network.families, network.name
    for node in lab.nodes:
        for nic in node.nics:
            if nic.address is not None:
                assert nic.address6 is not None, (node.name, nic.name)
    # Its expects test IPv6 on its own at least once (an address), and both families
    # at once by node name.
    assert any(_is_ipv6(e.src) or _is_ipv6(e.dst) for e in lab.expects)
    assert any(not _is_ipv6(e.dst) and e.dst in {n.name for n in lab.nodes} for e in lab.expects)


@pytest.mark.parametrize("original", ORIGINALS, ids=lambda p: p.stem)
def test_ipv6_leaves_the_ipv4_prediction_as_it_was(original):
    """Adding IPv6 changes nothing in IPv4: on the nodes both labs have, every IPv4 pair is
    predicted as for the IPv4-only original, for the same reason when the twin adds no
    node (nat's twin adds the LAN router its IPv6 route back needs: then a missing
    gateway's ARP becomes the router's missing route, with the same verdict)."""
    before = predict(compile_file(str(original)).analysis, IPV4)
    after = predict(compile_file(str(_twin(original))).analysis, IPV4)
    common = [n for n in before.names if n in after.names]
    assert len(common) == len(before.names)
    for src in common:
        for dst in common:
            if src != dst:
                was, now = before.get(src, dst), after.get(src, dst)
                assert now.reachable == was.reachable, (src, dst, was.reason, now.reason)
                if after.names == before.names:
                    assert now.reason == was.reason, (src, dst)


def test_one_nat_twin_routes_ipv6_and_another_nats_it():
    """libvirt routes a nat network's IPv6 unless <nat ipv6='yes'/>: the twins show both."""
    nat6 = {n.nat6 for p in TWINS for n in compile_file(str(p)).lab.networks if n.mode is Mode.NAT
            and n.address6 is not None}
    assert nat6 == {True, False}
