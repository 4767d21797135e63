"""The firewall table (topoc.model.firewall): libvirt's rules as data, read two ways.

The host backend renders the table to nft and the reachability engine evaluates it, so
one change to one rule must move both. The rules themselves are compared with what
libvirt installs for its own `default` network (`iptables -S` on a libvirt 9 host;
libvirt's tests/networkxml2firewalldata/nat-default-linux and src/network/network_iptables.c).
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface

import pytest
from conftest import EXAMPLES

from topoc.backends import host as host_backend
from topoc.compiler import compile_file
from topoc.model import firewall as fw
from topoc.model.family import IPV4, Family
from topoc.model.ir import Lab, Mode, Network
from topoc.model.reach import explain, predict


def _lab(name: str) -> Lab:
    result = compile_file(str(EXAMPLES / name))
    assert result.lab is not None, [d.message for d in result.diagnostics]
    return result.lab


def _nft(lab: Lab) -> str:
    return host_backend.generate(lab)["host/topoc.nft"]


ROUTED_IN = 'ip daddr 10.10.101.0/24 iifname "eth0" oifname "br1" accept comment "routenet (routed): FWI routed in"'
ROUTED_IN_REJECT = ROUTED_IN.replace(" accept ", " reject ")


def test_mutating_one_rule_moves_both_the_nft_and_the_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the routed network's FWI accept lets the LAN in, and topoc.nft says so.
    lab = _lab("routed.topo")
    assert ROUTED_IN in _nft(lab)
    assert predict(lab).get("pc", "web").reachable

    original = fw.forward_rules

    def mutated(net: Network, family: Family = IPV4) -> tuple[fw.Rule, ...]:
        return tuple(replace(r, verdict=fw.Verdict.REJECT)
                     if r.chain is fw.Chain.FWI and r.verdict is fw.Verdict.ACCEPT else r
                     for r in original(net, family))

    monkeypatch.setattr(fw, "forward_rules", mutated)
    lab = _lab("routed.topo")  # a new Lab: nothing computed before the change is reused
    nft = _nft(lab)
    assert ROUTED_IN not in nft and ROUTED_IN_REJECT in nft
    result = predict(lab).get("pc", "web")
    assert not result.reachable
    assert "LIBVIRT_FWI: -d 10.10.101.0/24 -i eth0 -o br1 -j REJECT" in result.reason
    # A routed network's rules are stateless: web's request still leaves (FWO), but
    # the router's reply into br1 meets the same rule now.
    out = predict(lab).get("web", "router")
    assert not out.reachable and "the reply is lost" in out.reason


def test_mutating_the_masquerade_moves_both(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = _lab("nat.topo")
    assert "LIBVIRT_PRT: -s 188.64.100.0/24 ! -d 188.64.100.0/24 -o eth0 -j MASQUERADE" in explain(
        lab, "vm0", "win10")
    assert predict(lab).get("vm0", "win10").reachable
    assert 'oifname "eth0" masquerade comment' in _nft(lab)
    original = fw.masquerade_rules

    def without_nat(*args: object, **kwargs: object) -> tuple[fw.Rule, ...]:
        rules = original(*args, **kwargs)  # type: ignore[arg-type]  # passed through as given
        return tuple(replace(r, verdict=fw.Verdict.RETURN) for r in rules)

    monkeypatch.setattr(fw, "masquerade_rules", without_nat)
    lab = _lab("nat.topo")
    nft = _nft(lab)
    assert "masquerade" not in nft.split("chain postrouting")[1].split("comment")[0]
    assert 'ip saddr 188.64.100.0/24 ip daddr != 188.64.100.0/24 oifname "eth0" return' in nft
    # Without the masquerade the request leaves with 188.64.100.2, and win10 has no
    # route back to the NAT network.
    result = predict(lab).get("vm0", "win10")
    assert not result.reachable
    assert "MASQUERADE" not in explain(lab, "vm0", "win10")


# --- libvirt's own `default` network, as libvirt 9 installs it -----------------------

DEFAULT = Network(name="default", host="h", mode=Mode.NAT, bridge="virbr0",
                  address=IPv4Interface("192.168.122.1/24"))


def _chain(rules: tuple[fw.Rule, ...], chain: fw.Chain) -> list[str]:
    return [fw.iptables(r) for r in rules if r.chain is chain]


def test_the_default_network_gets_libvirts_rules() -> None:
    # `iptables -S` / `iptables -t nat -S` on a host running libvirt's default network.
    rules = (*fw.forward_rules(DEFAULT), *fw.general_rules(DEFAULT),
             *fw.masquerade_rules(DEFAULT, fw.Chain.PRT))
    reject = "-j REJECT --reject-with icmp-port-unreachable"
    assert _chain(rules, fw.Chain.FWX) == ["-i virbr0 -o virbr0 -j ACCEPT"]
    assert _chain(rules, fw.Chain.FWI) == [
        "-d 192.168.122.0/24 -o virbr0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        f"-o virbr0 {reject}"]
    assert _chain(rules, fw.Chain.FWO) == ["-s 192.168.122.0/24 -i virbr0 -j ACCEPT",
                                           f"-i virbr0 {reject}"]
    assert _chain(rules, fw.Chain.PRT) == [
        "-s 192.168.122.0/24 -d 224.0.0.0/24 -j RETURN",
        "-s 192.168.122.0/24 -d 255.255.255.255/32 -j RETURN",
        "-s 192.168.122.0/24 ! -d 192.168.122.0/24 -p tcp -j MASQUERADE --to-ports 1024-65535",
        "-s 192.168.122.0/24 ! -d 192.168.122.0/24 -p udp -j MASQUERADE --to-ports 1024-65535",
        "-s 192.168.122.0/24 ! -d 192.168.122.0/24 -j MASQUERADE"]
    assert "-i virbr0 -p udp -m udp --dport 67 -j ACCEPT" in _chain(rules, fw.Chain.INP)
    assert "-o virbr0 -p udp -m udp --dport 68 -j ACCEPT" in _chain(rules, fw.Chain.OUT)


@pytest.mark.parametrize(("dst", "proto", "expected"), [
    ("224.0.0.251", "udp", None),  # local multicast (mDNS): never NATed
    ("255.255.255.255", "udp", None),  # broadcast: never NATed
    ("192.168.122.7", "icmp", None),  # within the subnet: not NATed
    ("8.8.8.8", "tcp", "-p tcp -j MASQUERADE --to-ports 1024-65535"),
    ("8.8.8.8", "udp", "-p udp -j MASQUERADE --to-ports 1024-65535"),
    ("8.8.8.8", "icmp", "! -d 192.168.122.0/24 -j MASQUERADE"),
])
def test_postrouting_decides_as_libvirts_chain(dst: str, proto: str, expected: str | None) -> None:
    rules = fw.masquerade_rules(DEFAULT, fw.Chain.PRT)
    packet = fw.Packet(IPv4Address("192.168.122.10"), IPv4Address(dst), None, "eth0", proto)
    rule = fw.decide(rules, packet)
    if expected is None:
        assert rule is None or rule.verdict is not fw.Verdict.MASQUERADE
    else:
        assert rule is not None and rule.verdict is fw.Verdict.MASQUERADE
        assert fw.iptables(rule).endswith(expected)


def test_the_forward_chain_order_is_fwx_fwi_fwo() -> None:
    # A packet between two guests of one bridge is accepted by FWX before FWI/FWO's rejects.
    table = fw.host_firewall(_lab("nat.topo"), "kvm1")
    chains = [r.chain for r in table.forward]
    assert chains == sorted(chains, key=[fw.Chain.FORWARD_ACCEPT, fw.Chain.FWX, fw.Chain.FWI,
                                         fw.Chain.FWO].index)
    hairpin = fw.Packet(IPv4Address("188.64.100.2"), IPv4Address("188.64.100.3"), "natbr0", "natbr0")
    decided = fw.decide(table.forward, hairpin)
    assert decided is not None and decided.chain is fw.Chain.FWX


def test_mutating_the_dnat_moves_both(monkeypatch: pytest.MonkeyPatch) -> None:
    from topoc.model.reach import forward_probe

    lab = _lab("nat.topo")
    (fwd,) = lab.forwards
    assert "dnat ip to 188.64.100.2:22" in _nft(lab)
    assert forward_probe(lab, fwd, "win10").ok
    original = fw.dnat_rules

    def elsewhere(forwards: object) -> tuple[fw.Rule, ...]:
        return tuple(replace(r, to_port=2022) for r in original(forwards))  # type: ignore[arg-type]

    monkeypatch.setattr(fw, "dnat_rules", elsewhere)
    lab = _lab("nat.topo")
    assert "dnat ip to 188.64.100.2:2022" in _nft(lab)
    # The prediction follows the table's DNAT (to port 2022 now), and the forward
    # accept, still for port 22, no longer matches: NAT's FWI rejects the connection.
    probe = forward_probe(lab, fwd, "win10")
    assert not probe.ok
    assert "`forward` DNATs it to vm0 188.64.100.2:2022" in probe.request.steps[1][1]
    assert "LIBVIRT_FWI: -o natbr0 -j REJECT" in probe.failure

    monkeypatch.setattr(fw, "dnat_rules", lambda forwards: ())
    lab = _lab("nat.topo")
    assert "chain prerouting" not in _nft(lab)
    probe = forward_probe(lab, fwd, "win10")
    assert not probe.ok and "no `forward` rule DNATs it here" in probe.failure


def test_the_table_follows_the_platform_profile() -> None:
    from topoc.model.platform import DEFAULT_PROFILE

    lab = _lab("nat.topo")
    assert DEFAULT_PROFILE.libvirt == "9.x" and DEFAULT_PROFILE.routed_modes == (Mode.ROUTED, Mode.OPEN)
    stock = fw.host_firewall(lab, "kvm1")
    assert stock == fw.host_firewall(lab, "kvm1", DEFAULT_PROFILE)
    assert {r.chain for r in stock.postrouting} == {fw.Chain.PRT}
    # A platform whose libvirt firewalled nothing would leave only the lab's own rules.
    bare = fw.host_firewall(lab, "kvm1", replace(DEFAULT_PROFILE, firewalled_modes=()))
    assert [r.chain for r in bare.forward] == [fw.Chain.FORWARD_ACCEPT]
    assert bare.postrouting == () and bare.prerouting == stock.prerouting
    wide = fw.host_firewall(lab, "kvm1", replace(DEFAULT_PROFILE, masquerade_ports=(2000, 3000)))
    assert "--to-ports 2000-3000" in fw.iptables(wide.postrouting[2])


def test_the_lab_rules_are_what_libvirt_does_not_install() -> None:
    nat = fw.host_firewall(_lab("nat.topo"), "kvm1")
    assert {r.chain for r in nat.lab_rules} == {fw.Chain.DNAT, fw.Chain.FORWARD_ACCEPT}
    assert {r.note for r in nat.lab_rules} == {"forward tcp 2222 to vm0:22 on natnet (nat)"}
    masq = fw.host_firewall(_lab("routed-masquerade.topo"), "kvm1")
    assert [r.chain for r in masq.lab_rules] == [fw.Chain.MASQUERADE] * 5
    assert fw.host_firewall(_lab("routed.topo"), "kvm1").lab_rules == ()
