"""The reachability engine in IPv6, on its own terms, beside IPv4 in one dual-stack lab.

What differs from IPv4, each from libvirt 9.0's source (bridge_driver_linux.c
networkAddGeneralIPv6FirewallRules / networkAddIPSpecificFirewallRules, its test data
tests/networkxml2firewalldata/nat-ipv6*-linux.args, bridge_driver.c's dnsmasq
configuration) or the kernel:
- a nat network routes IPv6 (the route accepts, no conntrack) unless `nat6`
  (<nat ipv6='yes'/>), which masquerades it and lets in only replies;
- a VM's IPv6 default route comes from the router advertisement of a nat, routed or
  open network's dnsmasq, which libvirt runs only for a network with DHCP (either
  family) or DNS; an isolated (host-only) network advertises a router lifetime of 0;
- IPv6 forwarding is on only when a nat/routed/open network of the host has an IPv6
  address (networkEnableIPForwarding(v4present, v6present));
- NDP answers a neighbour solicitation only on the interface that holds the address
  (ndisc_recv_ns), where ARP answers on any (arp_ignore=0).
"""

from __future__ import annotations

import json
from ipaddress import ip_address

import pytest
from click.testing import CliRunner

from topoc.cli import cli
from topoc.compiler import compile_source
from topoc.model.analysis import Analysis
from topoc.model.family import IPV4, IPV6
from topoc.model.reach import explain, pair, predict, predict_by_family, reach_address, render_matrices, render_matrix
from topoc.model.topology import effective_routes, forwards, node_addresses

EVERY_MODEL = """\
lab six
network lan { mode external
    subnet 192.168.1.0/24
    subnet 2001:db8:1::/64 }
host kvm1 { nic eth0 on lan address 192.168.1.11 address 2001:db8:1::11 }
external pc { nic eth0 on lan address 192.168.1.20 address 2001:db8:1::20
    route 10.0.1.0/24 via 192.168.1.11
    route 10.0.2.0/24 via 192.168.1.11
    route fd00:1::/64 via 2001:db8:1::11
    route fd00:2::/64 via 2001:db8:1::11
    route fd00:3::/64 via 2001:db8:1::11
    route fd00:4::/64 via 2001:db8:1::11 }
network nat on kvm1 { mode nat via eth0
    address 10.0.1.1/24
    address fd00:1::1/64
    dns on }
network masq on kvm1 { mode nat via eth0
    address 10.0.3.1/24
    address fd00:3::1/64
    dhcp 10.0.3.100 - 10.0.3.200
    nat6 on }
network routed on kvm1 { mode routed via eth0
    address 10.0.2.1/24
    address fd00:2::1/64
    dhcp fd00:2::100 - fd00:2::1ff }
network private on kvm1 { mode isolated
    address 10.0.4.1/24
    address fd00:4::1/64 }
vm a on kvm1 { nic on nat address 10.0.1.2 address fd00:1::2 }
vm b on kvm1 { nic on masq address 10.0.3.2 address fd00:3::2 }
vm c on kvm1 { nic on routed address 10.0.2.2 address fd00:2::2 }
vm d on kvm1 { nic on private address 10.0.4.2 address fd00:4::2 }
"""


def analysis(source: str) -> Analysis:
    result = compile_source(source, "six.topo", checks=False)
    assert result.analysis is not None, [d.message for d in result.diagnostics]
    return result.analysis


@pytest.fixture(scope="module")
def six() -> Analysis:
    return analysis(EVERY_MODEL)


def reaches(an: Analysis, src: str, dst: str) -> bool:
    return reach_address(an, src, dst).reachable


def test_a_nat_network_routes_ipv6_unless_nat6(six: Analysis) -> None:
    # IPv4: NAT, nothing gets in from outside.
    assert not reaches(six, "pc", "10.0.1.2")
    # IPv6 without nat6: the routing rules (FWI -d NET -i eth0 -o BR ACCEPT), no conntrack.
    assert reaches(six, "pc", "fd00:1::2")
    assert "ip6tables LIBVIRT_FWI: -d fd00:1::/64 -i eth0" in explain(six, "pc", "fd00:1::2")
    # With nat6: only replies get in; out, the VM is masqueraded.
    assert not reaches(six, "pc", "fd00:3::2")
    story = explain(six, "pc", "fd00:3::2")
    assert "-m conntrack --ctstate ESTABLISHED,RELATED" not in story  # the NEW request meets the reject
    assert "ip6tables LIBVIRT_FWI: -o" in story and "REJECT --reject-with icmp6-port-unreachable" in story
    assert reaches(six, "b", "2001:db8:1::20")
    assert "ip6tables LIBVIRT_PRT" in explain(six, "b", "2001:db8:1::20")
    assert "MASQUERADE" in explain(six, "b", "2001:db8:1::20")
    # A routed network: both families routed.
    assert reaches(six, "pc", "10.0.2.2") and reaches(six, "pc", "fd00:2::2")


def test_router_advertisements_give_vms_their_ipv6_default_route(six: Analysis) -> None:
    defaults = {vm: [r for r in effective_routes(six, vm, IPV6) if r.is_default] for vm in "abcd"}
    assert [str(r.via) for r in defaults["a"]] == ["fd00:1::1"]
    assert [str(r.via) for r in defaults["c"]] == ["fd00:2::1"]
    # An isolated network's RA has router lifetime 0 (libvirt's ra-param=*,0,0): no route.
    assert defaults["d"] == []
    assert "from the router advertisement" in explain(six, "a", "2001:db8:1::20")
    assert not reaches(six, "d", "2001:db8:1::20")
    assert "d has no route to 2001:db8:1::20" in explain(six, "d", "2001:db8:1::20")
    # The host reaches its host-only VM over the bridge, in both families.
    assert reaches(six, "kvm1", "fd00:4::2") and reaches(six, "kvm1", "10.0.4.2")


def test_no_dnsmasq_no_router_advertisement() -> None:
    # Without dhcp and without `dns on`, libvirt starts no dnsmasq for a network
    # (networkStartDhcpDaemon): nothing advertises a router, a nic `gateway` must say it.
    quiet = EVERY_MODEL.replace("    address fd00:1::1/64\n    dns on }", "    address fd00:1::1/64 }")
    an = analysis(quiet)
    assert [r for r in effective_routes(an, "a", IPV6) if r.is_default] == []
    assert [str(r.via) for r in effective_routes(an, "a", IPV4) if r.is_default] == ["10.0.1.1"]
    given = analysis(quiet.replace("address fd00:1::2 }", "address fd00:1::2 gateway fd00:1::1 }"))
    assert [str(r.via) for r in effective_routes(given, "a", IPV6) if r.is_default] == ["fd00:1::1"]
    assert "from the router advertisement" not in explain(given, "a", "2001:db8:1::20")


def test_a_node_name_means_every_address_of_both_families(six: Analysis) -> None:
    assert [str(a) for a in node_addresses(six, "a")] == ["10.0.1.2", "fd00:1::2"]
    both, probes = pair(six, "pc", "a")
    assert not both.reachable and len(probes) == 2  # the IPv4 address is behind NAT
    assert pair(six, "pc", "a", IPV6)[0].reachable
    assert not pair(six, "pc", "a", IPV4)[0].reachable
    by_family = predict_by_family(six)
    assert [m.family for m in by_family] == [IPV4, IPV6]
    assert by_family[1].get("pc", "a").reachable and not by_family[0].get("pc", "a").reachable
    assert not predict(six).get("pc", "a").reachable


def test_ipv6_forwarding_needs_an_ipv6_address_on_a_forwarding_network() -> None:
    base = EVERY_MODEL.replace("    address fd00:1::1/64\n", "").replace(
        "    address fd00:3::1/64\n", "").replace("    nat6 on }", "}").replace(
        "    address fd00:2::1/64\n    dhcp fd00:2::100 - fd00:2::1ff }", "}")
    an = analysis(base)
    assert forwards(an, "kvm1", IPV4)
    assert not forwards(an, "kvm1", IPV6)  # only the isolated network has IPv6
    assert forwards(analysis(EVERY_MODEL), "kvm1", IPV6)


NDP = """\
lab ndp
network one { mode external
    subnet 10.0.0.0/24
    subnet fd00:0:0:1::/64 }
network two { mode external
    subnet 10.1.0.0/24
    subnet fd00:0:0:2::/64 }
external r { nic eth0 on one address 10.0.0.1 address fd00:0:0:1::1
    nic eth1 on two address 10.1.0.1 address fd00:0:0:2::1 }
external p { nic eth0 on one address 10.0.0.5/15 address fd00::1:0:0:0:5/62 }
"""


def test_ndp_answers_only_on_the_interface_that_holds_the_address() -> None:
    # p's wide prefixes put r's other subnet on p's own link: p asks its neighbours there.
    an = analysis(NDP)
    assert reaches(an, "p", "10.1.0.1")  # ARP: r answers for any of its addresses (arp_ignore=0)
    assert not reaches(an, "p", "fd00:0:0:2::1")  # NDP: eth0 does not hold it
    story = explain(an, "p", "fd00:0:0:2::1")
    assert "answers NDP" in story and "NDP answers only on the interface that holds the address" in story


def test_an_ipv4_only_lab_shows_one_matrix_as_before() -> None:
    an = analysis(EVERY_MODEL.replace("lab six", "lab four").split("network lan")[0] + """\
network lan { mode external
    subnet 192.168.1.0/24 }
network n on kvm1 { mode nat
    address 10.0.1.1/24 }
vm a on kvm1 { nic on n address 10.0.1.2 }
""")
    assert an.families == (IPV4,)
    matrices = predict_by_family(an)
    assert len(matrices) == 1
    assert render_matrices(matrices) == render_matrix(predict(an))


def test_reach_cli_shows_a_matrix_per_family_and_takes_family(tmp_path) -> None:
    path = tmp_path / "six.topo"
    path.write_text(EVERY_MODEL)
    runner = CliRunner()
    text = runner.invoke(cli, ["reach", str(path)])
    # The file has no `expect`: every diagnostic would be a real problem.
    assert text.exit_code == 0, text.output
    assert text.output.startswith("IPv4:\n") and "\nIPv6:\n" in text.output
    only6 = runner.invoke(cli, ["reach", str(path), "--family", "ipv6"])
    assert only6.exit_code == 0 and "IPv4" not in only6.output.split("unreachable:")[0]
    data = json.loads(runner.invoke(cli, ["reach", str(path), "--format", "json"]).output)
    assert set(data["families"]) == {"IPv4", "IPv6"}
    pairs6 = {(p["src"], p["dst"]): p["reachable"] for p in data["families"]["IPv6"]["pairs"]}
    assert pairs6[("pc", "a")] and not pairs6[("pc", "b")]
    combined = {(p["src"], p["dst"]): p["reachable"] for p in data["pairs"]}
    assert not combined[("pc", "a")]
    one = runner.invoke(cli, ["reach", str(path), "pc", "fd00:1::2"])
    assert one.exit_code == 0 and one.output.startswith("pc -> fd00:1::2: reachable")
    assert ip_address("fd00:1::2") in node_addresses(analysis(EVERY_MODEL), "a")


def test_a_forward_dnats_in_each_family_the_vm_has_an_address_in(six: Analysis) -> None:
    from topoc.model.reach import forward_reach, forward_target

    source = EVERY_MODEL + "forward tcp 2222 to b:22\n"
    an = analysis(source)
    (fwd,) = an.lab.forwards
    assert str(forward_target(an.lab, fwd, "pc", IPV6)) == "2001:db8:1::11"
    by_source = {src: ok for _, src, ok in forward_reach(an, IPV6)}
    # b's IPv6 is masqueraded (nat6): only the DNAT-ed connection gets in, through the
    # lab's accept ahead of libvirt's FWI reject.
    assert by_source["pc"]
    assert {src: ok for _, src, ok in forward_reach(an, IPV4)}["pc"]
    assert not reaches(an, "pc", "fd00:3::2")
