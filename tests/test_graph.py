"""The model's wiring facts the verifier and the engine share: segments,
interfaces, addresses, effective routes, ip_forward; and the benchmark's generator."""

from __future__ import annotations

import sys
from ipaddress import IPv4Address, IPv4Network

from conftest import EXAMPLES, ROOT
from topoc.compiler import compile_file
from topoc.model.analysis import Analysis
from topoc.model.topology import effective_routes, forwards, interfaces, node_addresses
from topoc.model.ir import Lab


def load(name: str) -> Lab:
    lab = compile_file(str(EXAMPLES / name)).lab
    assert lab is not None
    return lab


def test_topology_has_every_node_segment_and_interface() -> None:
    topo = Analysis(load("mixed.topo")).topology
    assert set(topo.interfaces) == {"kvm1", "proxy", "api", "router"}
    assert set(topo.members) == {"lan", "front", "svc", "back"}
    # kvm1: eth0 on the LAN, and one bridge per managed network (br3 has no address).
    kvm1 = sorted((i.segment, i.name, str(i.address)) for i in topo.interfaces["kvm1"])
    assert kvm1 == [("back", "br3", "None"), ("front", "natbr0", "188.64.100.1/24"),
                    ("lan", "eth0", "192.168.101.11/24"), ("svc", "br1", "10.10.101.100/24")]
    assert [i.node for i in topo.members["svc"]] == ["kvm1", "api"]
    assert topo.forwarding["kvm1"] is True


def test_topology_is_a_pure_function_of_the_ir() -> None:
    a, b = Analysis(load("nat.topo")).topology, Analysis(load("nat.topo")).topology
    assert a.interfaces == b.interfaces and a.routes == b.routes and a.segment_of == b.segment_of


def test_a_bridged_network_joins_the_lan_segment_and_takes_the_hosts_address() -> None:
    lab = load("bridged.topo")
    assert {i.segment for i in interfaces(lab, "files")} == {"lan"}
    (uplink,) = interfaces(lab, "kvm1")
    # br0 enslaves eth0: the host's LAN address now lives on the bridge.
    assert (uplink.name, uplink.segment, str(uplink.address)) == ("br0", "lan", "192.168.101.11/24")
    topo = Analysis(lab).topology
    assert [n for n, seg in topo.segment_of.items() if seg == "lan"] == ["lan", "lanbridge"]


def test_node_addresses() -> None:
    lab = load("mixed.topo")
    assert node_addresses(lab, "kvm1") == tuple(map(IPv4Address, (
        "192.168.101.11", "188.64.100.1", "10.10.101.100")))  # br3 has no address
    assert node_addresses(lab, "proxy") == (IPv4Address("188.64.100.2"), IPv4Address("10.10.103.2"))
    assert node_addresses(lab, "nobody") == ()


def test_effective_routes() -> None:
    mixed = load("mixed.topo")
    # A VM without a gateway takes its first nat/routed/open network's address, as
    # libvirt's dnsmasq hands it out; the isolated `back` offers none.
    (default,) = effective_routes(mixed, "proxy")
    assert default.is_default and default.via == IPv4Address("188.64.100.1")
    # The router's own routes, and no default it was not given.
    assert [(str(r.destination), str(r.via)) for r in effective_routes(mixed, "router")] == [
        ("10.10.101.0/24", "192.168.101.11")]
    # A written gateway wins over DHCP.
    (files_default,) = effective_routes(load("bridged.topo"), "files")
    assert files_default.via == IPv4Address("192.168.101.1")
    # A host-only network's dnsmasq sends an empty router option: no default route.
    assert effective_routes(load("hostonly.topo"), "db") == ()
    assert effective_routes(load("isolated.topo"), "vm1") == ()
    assert effective_routes(load("nat.topo"), "kvm1")[0].destination == IPv4Network("0.0.0.0/0")


def test_forwarding() -> None:
    assert forwards(load("nat.topo"), "kvm1")  # libvirt turns ip_forward on for NAT
    assert forwards(load("routed.topo"), "kvm1")
    assert not forwards(load("hostonly.topo"), "kvm1")  # never for isolated networks
    assert not forwards(load("bridged.topo"), "kvm1")
    assert forwards(load("routed.topo"), "router")  # pc routes through it
    assert not forwards(load("routed.topo"), "pc")
    assert not forwards(load("nat.topo"), "vm0")


def test_generated_labs_check_clean_and_their_expects_hold(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from gen import generate_lab

    for n in (1, 137, 600):
        path = tmp_path / f"lab-{n}.topo"
        path.write_text(generate_lab(n))
        result = compile_file(str(path))
        assert result.ok and result.diagnostics == [], [d.message for d in result.diagnostics[:3]]
        lab = result.lab
        assert len(lab.vms) == n and len(lab.expects) >= 2
        assert len(lab.hosts) == -(-n // 250)
