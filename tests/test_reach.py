"""The reachability engine against the full expected matrix of every network model.

Each matrix is stated in full, the pairs that must fail included, with the reason
taken from libvirt 9's rules (https://libvirt.org/formatnetwork.html#connectivity and
libvirt's tests/networkxml2firewalldata/*-linux.iptables) and a stock Linux kernel:
FORWARD runs LIBVIRT_FWX, LIBVIRT_FWI, LIBVIRT_FWO; whatever no rule accepts into or out
of an isolated/nat/routed bridge is REJECTed; ip_forward is on only on hosts with a nat
or routed network; a reply needs a route back; arp_ignore=0 and rp_filter=0.

A cell is `Y` (an echo reply from every address of the column's node), `n` (not) or
`.` (the node itself). A node's addresses: a host's nic addresses plus each of its
networks' addresses; a VM's and an external's nic addresses.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from conftest import EXAMPLES
from topoc.compiler import compile_file, compile_source
from topoc.model.ir import Lab
from topoc.model.reach import explain, forward_reach, predict, reach_address

LABS = Path(__file__).resolve().parent / "reach_labs"


def load(path: Path) -> Lab:
    result = compile_file(str(path))
    assert result.lab is not None, [d.message for d in result.diagnostics]
    return result.lab


def assert_matrix(lab: Lab, table: str) -> None:
    """Compare predict(lab) with a table (sources down, destinations across)."""
    rows = [line.split() for line in table.strip().splitlines()]
    names = rows[0]
    assert tuple(names) == tuple(n.name for n in lab.nodes), "the table names every node in order"
    matrix = predict(lab)
    wrong = []
    for row in rows[1:]:
        src, cells = row[0], row[1:]
        assert len(cells) == len(names), row
        for dst, cell in zip(names, cells):
            if src == dst:
                assert cell == "."
                continue
            got = matrix.get(src, dst)
            if got.reachable != (cell == "Y"):
                wrong.append(f"{src} -> {dst}: expected {cell}, predicted "
                             f"{'Y' if got.reachable else 'n'} ({got.reason})")
    assert not wrong, "\n".join(wrong)
    assert len(list(matrix)) == len(names) * (len(names) - 1)


def test_isolated() -> None:
    # isonet has no <forward> and no <ip>: the host has no address on br1, hence no
    # connected route to it. vm1 <-> vm2: one segment, one subnet, plain L2.
    # vm -> kvm1: the request arrives (kvm1 answers ARP for 10.10.101.11 on br1 too,
    # arp_ignore=0), but kvm1 sends the reply out eth0, where 10.10.101.0/24 is connected
    # on the LAN and nobody has vm1's address. kvm1 -> vm: the same wrong way out.
    assert_matrix(load(EXAMPLES / "isolated.topo"), """
             kvm1 vm1 vm2
        kvm1  .    n   n
        vm1   n    .   Y
        vm2   n    Y   .
    """)


def test_host_only() -> None:
    # hostnet: no <forward>, an <ip> on br2. VMs and host reach each other on br2, but
    # "every address of kvm1" includes its LAN address 192.168.101.11, and libvirt's
    # dnsmasq gives guests of a network without <forward> no default route (an empty
    # dhcp-option=3): db/app have no route to it, so db/app -> kvm1 fail as a whole
    # (the bridge address alone answers; see test_host_only_vms_reach_the_bridge_address).
    # db/app -> pc: no route, and libvirt leaves ip_forward off for an isolated network
    # (its FWO/FWI `-i/-o br2 -j REJECT` would refuse it anyway). pc -> *: pc's gateway
    # 192.168.101.1 is not in the lab, and nothing routes 10.10.102.0/24 to kvm1; since
    # kvm1 also has 10.10.102.1, pc -> kvm1 fails on that address.
    assert_matrix(load(EXAMPLES / "hostonly.topo"), """
             kvm1 db app pc
        kvm1  .   Y  Y   Y
        db    n   .  Y   n
        app   n   Y  .   n
        pc    n   n  n   .
    """)


def test_host_only_vms_reach_the_bridge_address() -> None:
    lab = load(EXAMPLES / "hostonly.topo")
    assert reach_address(lab, "app", IPv4Address("10.10.102.1")).reachable
    assert not reach_address(lab, "app", IPv4Address("192.168.101.11")).reachable


def test_routed_without_return_route() -> None:
    # routenet: <forward mode='route' dev='eth0'/>. web -> router/pc: FWO accepts
    # `-s 10.10.101.0/24 -i br1 -o eth0`, the request arrives, but the reply to
    # 10.10.101.10 dies at the router, which has no route back (pc's reply goes through
    # its gateway, the router, too). router/pc -> web and -> kvm1's 10.10.101.100: the
    # router has no route to 10.10.101.0/24. kvm1 reaches everyone directly.
    assert_matrix(load(LABS / "routed_no_return.topo"), """
               kvm1 web router pc
        kvm1    .   Y    Y     Y
        web     Y   .    n     n
        router  n   n    .     Y
        pc      n   n    Y     .
    """)


def test_routed_with_return_route() -> None:
    # The router holds `route 10.10.101.0/24 via 192.168.101.11`: FWI accepts
    # `-d 10.10.101.0/24 -i eth0 -o br1` (no conntrack state needed), FWO accepts the
    # way out. pc -> web goes pc > router > kvm1 > web and comes back kvm1 > pc directly
    # (asymmetric, fine: routed rules are stateless). Everyone reaches everyone.
    assert_matrix(load(EXAMPLES / "routed.topo"), """
               kvm1 web router pc
        kvm1    .   Y    Y     Y
        web     Y   .    Y     Y
        router  Y   Y    .     Y
        pc      Y   Y    Y     .
    """)


def test_nat_with_a_forward() -> None:
    # natnet: <forward mode='nat' dev='eth0'/>. vm0/vm1 -> win10: FWO accepts
    # `-s 188.64.100.0/24 -i natbr0 -o eth0`, LIBVIRT_PRT masquerades to 192.168.101.11,
    # conntrack de-NATs the reply and FWI accepts it as ESTABLISHED. win10 -> anything
    # behind kvm1: its gateway 192.168.101.1 is not in the lab, and no route leads to
    # 188.64.100.0/24 (even with one, FWI's `-o natbr0 -j REJECT` refuses NEW traffic).
    lab = load(EXAMPLES / "nat.topo")
    assert_matrix(lab, """
              kvm1 vm0 vm1 win10
        kvm1   .   Y   Y   Y
        vm0    Y   .   Y   Y
        vm1    Y   Y   .   Y
        win10  n   n   n   .
    """)
    # `forward tcp 2222 to vm0:22`: win10 connects to 192.168.101.11:2222 on the LAN and
    # is DNAT-ed to vm0; vm0 answers through kvm1 (FWO, -o eth0), de-DNAT-ed on the way.
    # vm1 shares vm0's network: the DNAT leaves natbr0 out (`iifname != "natbr0"`, as vm0
    # would answer it directly, from the wrong address), so vm1 reaches kvm1's own closed
    # port. kvm1's own connection never passes PREROUTING, where the DNAT is.
    opened = {(f.port, src): ok for f, src, ok in forward_reach(lab)}
    assert opened == {(2222, "kvm1"): False, (2222, "vm1"): False, (2222, "win10"): True}


def test_bridged() -> None:
    # lanbridge: <forward mode='bridge'/> on br0, which enslaves eth0: files is a peer on
    # the LAN's L2 segment and subnet; libvirt installs no rules. Everyone reaches everyone.
    assert_matrix(load(EXAMPLES / "bridged.topo"), """
              kvm1 files win10
        kvm1   .    Y     Y
        files  Y    .     Y
        win10  Y    Y     .
    """)


def test_two_nat_networks_on_one_host() -> None:
    # a -> b: kvm1 routes br-nat1 -> br-nat2; LIBVIRT_FWI for nat2 accepts only
    # ESTABLISHED,RELATED `-d 10.2.0.0/24 -o tp-nat2`, this is NEW: `-o tp-nat2 -j REJECT`.
    # b -> a likewise. Both get out to pc, masqueraded. pc has a route to both subnets
    # via kvm1, so it reaches all of kvm1's addresses, but FWI refuses it into either NAT
    # network. The forward on kvm1's LAN address opens a:22 to pc only (b's connection
    # leaves through tp-nat2 and arrives from outside too: it is DNAT-ed as well).
    lab = load(LABS / "two_nat.topo")
    assert_matrix(lab, """
             kvm1 a b pc
        kvm1  .   Y Y Y
        a     Y   . n Y
        b     Y   n . Y
        pc    Y   n n .
    """)
    opened = {src: ok for _, src, ok in forward_reach(lab)}
    assert opened == {"kvm1": False, "b": True, "pc": True}


def test_routed_and_nat_side_by_side() -> None:
    # examples/mixed.topo: front (nat via eth0), svc (routed via eth0), back (isolated,
    # no address). proxy -> api's 10.10.101.10: FWI for svc accepts only `-i eth0`; this
    # comes from natbr0: `-o br1 -j REJECT`. api -> proxy's 188.64.100.2: FWI for front
    # refuses NEW traffic. proxy <-> api over back: fine, but a pair needs every address.
    # kvm1 -> 10.10.103.x: kvm1 has no address on br3; its default route sends it to the
    # router, which has no route. router -> kvm1's 188.64.100.1, proxy, api's back
    # address: no route on the router.
    lab = load(EXAMPLES / "mixed.topo")
    assert_matrix(lab, """
               kvm1 proxy api router
        kvm1    .    n     n    Y
        proxy   Y    .     n    Y
        api     Y    n     .    Y
        router  n    n     n    .
    """)
    assert reach_address(lab, "router", "10.10.101.10").reachable  # the routed address
    assert reach_address(lab, "proxy", "10.10.103.3").reachable  # over `back`
    assert not reach_address(lab, "proxy", "10.10.101.10").reachable  # FWI -i eth0
    # `forward tcp 8080 to proxy:80`: the router gets in. api's connection is DNAT-ed too,
    # but proxy's answer goes natbr0 -> br1, and svc's FWI accepts only `-i eth0`.
    assert {src: ok for _, src, ok in forward_reach(lab)} == {
        "kvm1": False, "api": False, "router": True}


def test_routed_and_nat_without_via() -> None:
    # Neither network names a device. proxy -> api: FWI for svc accepts `-d
    # 10.10.101.0/24 -o br` from any device; LIBVIRT_PRT masquerades (no -o) to kvm1's
    # 10.10.101.100, so api answers kvm1, which de-NATs. api -> proxy: FWI for front
    # accepts only ESTABLISHED: REJECT. The router reaches api (its route) but not front.
    assert_matrix(load(LABS / "side_by_side_no_via.topo"), """
               kvm1 proxy api router
        kvm1    .    Y     Y    Y
        proxy   Y    .     Y    Y
        api     Y    n     .    Y
        router  n    n     Y    .
    """)


def test_reach_address_is_one_address_only() -> None:
    lab = load(EXAMPLES / "hostonly.topo")
    # pc cannot reach 10.10.102.1, but kvm1's LAN address answers it directly.
    assert reach_address(lab, "pc", IPv4Address("192.168.101.11")).reachable
    assert not reach_address(lab, "pc", "10.10.102.1").reachable
    result = reach_address(lab, "app", "10.10.102.10")
    assert result.reachable and result.path == ("app", "db", "app")


def test_paths_and_reasons_of_a_masqueraded_pair() -> None:
    result = predict(load(EXAMPLES / "nat.topo")).get("vm0", "win10")
    assert result.path == ("vm0", "kvm1", "win10", "kvm1", "vm0")
    assert "masqueraded" in result.reason


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.topo")), ids=lambda p: p.name)
def test_every_example_expect_holds(path: Path) -> None:
    lab = load(path)
    for exp in lab.expects:
        if lab.node(exp.dst) is not None:
            got = predict(lab).get(exp.src, exp.dst).reachable
        else:
            got = reach_address(lab, exp.src, exp.dst).reachable
        assert got == exp.reachable, f"line {exp.span.line}: expect {exp.src} -> {exp.dst}"


def test_two_uplinks_and_via() -> None:
    # nat1 and r1 are tied to eth1 (mgmt). a -> pc: leaving by eth0 does not match FWO's
    # `-s 10.3.0.0/24 -i tp-nat1 -o eth1`: `-i tp-nat1 -j REJECT` (b likewise for r1).
    # a/b -> admin: out eth1, accepted (a masqueraded). admin -> b: FWI accepts `-i eth1`;
    # pc -> b arrives on eth0: REJECT (the unreachable-segment warning says so). Nothing
    # gets into nat1 from outside. z sits on the LAN itself, a macvtap guest of kvm1's
    # eth0 (libvirt's direct attachment): a peer of pc only, since a host and its macvtap
    # guests cannot hear each other through that NIC (and kvm1's other addresses are
    # behind routes z does not have). kvm1 reaches all others directly.
    assert_matrix(load(LABS / "two_uplinks.topo"), """
              kvm1 a b z pc admin
        kvm1   .   Y Y n Y  Y
        a      Y   . n n n  Y
        b      Y   n . n n  Y
        z      n   n n . Y  n
        pc     n   n n Y .  n
        admin  n   n Y n n  .
    """)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.topo")), ids=lambda p: p.name)
def test_a_pair_is_the_conjunction_of_its_addresses(path: Path) -> None:
    from topoc.model.topology import node_addresses

    lab = load(path)
    matrix = predict(lab)
    for result in matrix:
        each = [reach_address(lab, result.src, ip).reachable for ip in node_addresses(lab, result.dst)]
        assert result.reachable == (bool(each) and all(each)), (result.src, result.dst)


def test_every_model_on_one_host() -> None:
    # kvm1: eth0 enslaved to br0 (bridged lanbr, the LAN), eth1 on the WAN; nat1 (no
    # via: out anywhere, masqueraded), r1 (routed via eth1), o1 (open: no rules at all).
    # bvm is a LAN peer whose gateway is kvm1. Columns: who answers the row.
    # bvm/router -> n, far -> n, o -> n, r -> n: FWI refuses NEW traffic into nat1.
    # Into r1 only from eth1 (far); out of r1 only to eth1 (r -> far only).
    # n -> bvm/o/router/far: masqueraded on the way out of any device, replies ESTABLISHED.
    # o <-> bvm/router/far: nothing filters an open network; far and router route 10/8
    # via kvm1, bvm uses kvm1 as its gateway. far -> bvm/router/kvm1's LAN address, and
    # router -> far/kvm1's WAN address: no route between 192.168.101/24 and 203.0.113/24.
    lab = load(LABS / "every_model.topo")
    assert_matrix(lab, """
               kvm1 bvm n r o router far
        kvm1    .   Y   Y Y Y  Y     Y
        bvm     Y   .   n n Y  Y     n
        n       Y   Y   . n Y  Y     Y
        r       Y   n   n . n  n     Y
        o       Y   Y   n n .  Y     Y
        router  n   Y   n n Y  .     n
        far     n   n   n Y Y  n     .
    """)
    # tcp 8022 -> r:22: r's answer must leave by eth1 (FWO), so only far (WAN) and n
    # (masqueraded to 10.1.0.1, answered inside kvm1) get it. udp 5353 -> n:53: n's
    # answers are ESTABLISHED anywhere but into r1 from tp-nat1 (FWI wants -i eth1).
    opened = {(f.port, src): ok for f, src, ok in forward_reach(lab)}
    assert opened == {
        (8022, "kvm1"): False, (8022, "bvm"): False, (8022, "n"): True, (8022, "o"): False,
        (8022, "router"): False, (8022, "far"): True,
        (5353, "kvm1"): False, (5353, "bvm"): True, (5353, "r"): False, (5353, "o"): True,
        (5353, "router"): True, (5353, "far"): True}


def test_routed_with_masquerade_needs_no_return_route() -> None:
    # examples/routed-masquerade.topo: routed_no_return plus `masquerade`. web's requests
    # leave through eth0 as 192.168.101.11 (the lab's masquerade rule), so the router and
    # pc answer the host, which de-NATs the reply into br1 (FWI routed in). Their own
    # connections to web still find no route: masquerading is outbound only.
    lab = load(EXAMPLES / "routed-masquerade.topo")
    assert_matrix(lab, """
               kvm1 web router pc
        kvm1    .   Y    Y     Y
        web     Y   .    Y     Y
        router  n   n    .     Y
        pc      n   n    Y     .
    """)
    text = explain(lab, "web", "pc")
    assert ("masquerade (topoc.nft): -s 10.10.101.0/24 ! -d 10.10.101.0/24 -o eth0 -j MASQUERADE: "
            "source 10.10.101.10 becomes 192.168.101.11") in text
    assert "conntrack reverses the masquerade: destination 192.168.101.11 becomes 10.10.101.10" in text
    assert predict(lab).get("web", "pc").reason.endswith("(masqueraded)")


def test_masquerade_off_is_the_routed_network_again() -> None:
    source = (EXAMPLES / "routed-masquerade.topo").read_text(encoding="utf-8")
    plain = source.replace("    masquerade  #", "    masquerade off  #")
    assert plain != source
    result = compile_source(plain, "off.topo", checks=False)
    assert result.lab is not None and not result.lab.network("routenet").masquerade
    reply = predict(result.lab).get("web", "pc")
    assert not reply.reachable and "router has no route to 10.10.101.10" in reply.reason


def test_open_network_masquerades_only_when_it_says_so() -> None:
    # libvirt has no firewall for mode open: only the lab's masquerade decides.
    assert_matrix(load(LABS / "open_masquerade.topo"), """
               kvm1 a b router
        kvm1    .   Y Y   Y
        a       Y   . Y   Y
        b       Y   Y .   n
        router  n   n n   .
    """)
