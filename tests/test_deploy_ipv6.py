"""Deploy with IPv6 on libvirt's test driver: a dual-stack lab's networks are defined,
in sync on the next plan, their IPv6 <ip> checked for drift and clashes, and adopted by
what they mean in both families (the IPv6 address, the DHCPv6 range, nat6)."""

from __future__ import annotations

from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from deploy_helpers import compile_lab, private_test_host, snapshot  # noqa: E402
from test_libvirt_cases import CASES, compiled  # noqa: E402
from topoc.deploy import engine as deploy  # noqa: E402
from topoc.deploy import facts as dx  # noqa: E402
from topoc.deploy.records import MemoryRecords  # noqa: E402


def open_private(directory: Path, text: str | None = None) -> deploy.Target:
    if text is None:
        uri = private_test_host(directory)
    else:
        (directory / "hand.xml").write_text(text, encoding="utf-8")
        uri = f"test://{directory / 'hand.xml'}"
    return deploy.Target(libvirt.open(uri), uri, MemoryRecords(uri))


def test_the_dual_stack_case_deploys_in_sync_and_destroys(tmp_path: Path) -> None:
    assert "dualstack" in CASES
    lab = compiled("dualstack")
    target = open_private(tmp_path)
    foreign = snapshot(target.conn)
    applied = deploy.apply(lab, target, start_vms=True)
    assert applied.changes and all(c.action == "create" for c in applied.changes)
    nat6 = target.conn.networkLookupByName("duallab-nat6net").XMLDesc(0)
    assert "<nat ipv6='yes'/>" in nat6 and "family='ipv6' address='fd00:66::1' prefix='64'" in nat6
    # The plan's line for a network names both families' subnets.
    [natnet] = [c for c in applied.changes if c.name == "duallab-natnet"]
    assert natnet.detail == "nat, bridge tp-natnet, 188.64.100.0/24, fd00:64::/64"
    assert deploy.make_plan(lab, target, start_vms=True).changes == []
    deploy.destroy(lab.name, target)
    assert snapshot(target.conn) == foreign


def test_an_ipv6_address_edited_by_hand_is_put_back(tmp_path: Path) -> None:
    lab = compiled("dualstack")
    target = open_private(tmp_path)
    deploy.apply(lab, target)
    svc = target.conn.networkLookupByName("duallab-svc")
    edited = svc.XMLDesc(0).replace("2001:db8:a::1", "2001:db8:b::1")
    svc.destroy()
    target.conn.networkDefineXML(edited).create()
    [change] = deploy.make_plan(lab, target).changes
    assert (change.action, change.name) == ("recreate", "duallab-svc")
    assert ("changed outside topoc (subnets 10.10.101.0/24, 2001:db8:b::/64, not "
            "10.10.101.0/24, 2001:db8:a::/64)") in change.detail
    deploy.apply(lab, target)
    assert "2001:db8:a::1" in target.conn.networkLookupByName("duallab-svc").XMLDesc(0)
    assert deploy.make_plan(lab, target).changes == []


def test_an_ipv6_subnet_another_network_uses_is_refused_at_its_ipv6_address(tmp_path: Path) -> None:
    target = open_private(tmp_path)
    target.conn.networkDefineXML(
        "<network><name>other</name><bridge name='oth0'/>"
        "<ip family='ipv6' address='fd00:64::1:1' prefix='112'/></network>")
    lab = compiled("dualstack")
    before = snapshot(target.conn)
    with pytest.raises(deploy.Refused) as refused:
        deploy.apply(lab, target)
    [clash] = refused.value.diagnostics
    assert clash.code == "host-subnet-clash"
    assert clash.message == (f"subnet fd00:64::/64 of duallab-natnet overlaps fd00:64::1:0/112 of "
                             f"libvirt network other on {target.uri}")
    assert clash.span == lab.network("natnet").address6_span  # the IPv6 `address` line
    assert snapshot(target.conn) == before


def test_facts_read_both_families_and_ipv6_defaults_to_a_64() -> None:
    facts = dx.network_facts("<network><name>n</name><ip address='10.0.0.1' netmask='255.255.255.0'/>"
                             "<ip family='ipv6' address='fd00::1'/></network>")
    assert [str(s) for s in facts.subnets] == ["10.0.0.0/24", "fd00::/64"]
    interface = dx.interface_facts(
        "<interface type='ethernet' name='eth0'><protocol family='ipv4'><ip address='192.168.1.5' prefix='24'/>"
        "</protocol><protocol family='ipv6'><ip address='2001:db8::5' prefix='64'/></protocol></interface>")
    assert [str(s) for s in interface.subnets] == ["192.168.1.0/24", "2001:db8::/64"]


# --- adoption: the IPv6 <ip> and <nat ipv6> are part of a network's meaning ----------

HAND = """\
<node>
  <network>
    <name>natnet</name>
    <uuid>0b7a3a8e-8d3c-4a55-9d0f-6a4a35c3a201</uuid>
    <forward mode='nat'><nat ipv6='yes'/></forward>
    <bridge name='natbr0' stp='on' delay='0'/>
    <ip address='10.88.0.1' netmask='255.255.255.0'/>
    <ip family='ipv6' address='fd00:88::1' prefix='64'>
      <dhcp><range start='fd00:88::100' end='fd00:88::1ff'/></dhcp>
    </ip>
  </network>
</node>
"""

FILE = """\
lab hand

host kvm1 {
}

network natnet on kvm1 {
    name natnet
    mode nat
    nat6 on
    bridge natbr0
    stp on
    dns on
    address 10.88.0.1/24
    address fd00:88::1/64
    dhcp fd00:88::100 - fd00:88::1ff
}
"""


def test_a_dual_stack_network_of_the_same_meaning_is_adopted_as_it_is(tmp_path: Path) -> None:
    target = open_private(tmp_path, HAND)
    described = dx.describe_network(target.conn.networkLookupByName("natnet").XMLDesc(0))
    assert (str(described.address6), described.dhcp6_ranges, described.nat6) == (
        "fd00:88::1/64", (("fd00:88::100", "fd00:88::1ff"),), True)
    assert described.unexpressed == ()
    lab = compile_lab(tmp_path, FILE)
    [change] = deploy.make_plan(lab, target, adopt=True).changes
    assert (change.action, change.name) == ("adopt", "natnet")
    assert change.detail.startswith("same meaning as the file"), change.detail


@pytest.mark.parametrize(("edit", "why"), [
    (("fd00:88::", "fd00:89::"), "IPv6 address fd00:88::1/64 -> fd00:89::1/64, "
                                 "DHCPv6 range fd00:88::100-fd00:88::1ff -> fd00:89::100-fd00:89::1ff"),
    (("dhcp fd00:88::100 - fd00:88::1ff\n", ""), "DHCPv6 range fd00:88::100-fd00:88::1ff -> none"),
    (("    nat6 on\n", ""), "nat6 on -> off"),
])
def test_a_dual_stack_network_that_differs_in_ipv6_is_recreated(tmp_path: Path, edit, why) -> None:
    target = open_private(tmp_path, HAND)
    lab = compile_lab(tmp_path, FILE.replace(*edit))
    [change] = deploy.make_plan(lab, target, adopt=True).changes
    assert change.detail.startswith(f"and recreate from the file ({why})"), change.detail
    deploy.apply(lab, target, adopt=True)
    assert deploy.make_plan(lab, target).changes == []


# --- import: the IPv6 <ip> and <nat ipv6> become statements ---------------------------


def test_importing_what_topoc_built_from_a_dual_stack_file_means_the_same(tmp_path: Path) -> None:
    """Deploy the dual-stack case, import the host, build the imported file: every
    network means what it meant (both families' addresses and DHCP ranges, nat6), and
    adopting it takes nothing but the metadata."""
    from topoc.backends.libvirt import generate
    from topoc.deploy import importer

    lab = compiled("dualstack")
    target = open_private(tmp_path)
    deploy.apply(lab, target)
    imported = importer.describe(importer.read_host(target.conn, target.uri,
                                                    networks=tuple(n.name() for n in target.conn.listAllNetworks(0)
                                                                   if n.name() != "default")),
                                 "again", "again.topo")
    assert not [w for w in imported.warnings if "ipv6" in w.lower() or "nat " in w], imported.warnings
    text = imported.text
    assert "    nat6 on\n" in text and "    address fd00:66::1/64\n" in text
    assert "    address fd00:64::1/64\n    dhcp fd00:64::100 - fd00:64::1ff\n" in text
    again = compile_lab(tmp_path, text, "again.topo")
    built = {p: t for p, t in generate(again).items() if "/networks/" in p}
    originals = {n.name(): n.XMLDesc(0) for n in target.conn.listAllNetworks(0) if n.name() != "default"}
    assert len(built) == len(originals) == 6
    for xml in built.values():
        mine = dx.describe_network(xml)
        theirs = dx.describe_network(originals[mine.name])
        assert mine.meaning(with_hosts=False) == theirs.meaning(with_hosts=False), mine.name
        assert (mine.address6, mine.nat6) == (theirs.address6, theirs.nat6)
    v6only = dx.describe_network(originals["duallab-v6only"])
    assert (v6only.address, str(v6only.address6), v6only.dns) == (None, "fd00:6::1/64", False)


def test_an_ipv4_only_import_is_written_as_before() -> None:
    """No IPv6 on the host: the import has no IPv6 line (the IPv4 layout unchanged)."""
    from topoc.deploy import importer

    xml = ("<network><name>n</name><forward mode='nat'><nat ipv6='no'/></forward><bridge name='nbr0'/>"
           "<ip address='10.0.0.1' prefix='24'><dhcp><range start='10.0.0.10' end='10.0.0.20'/></dhcp></ip>"
           "</network>")
    host = importer.HostObjects("test:///x", "kvm1", [importer.LiveObject("n", xml, True, True)], [], [])
    block = importer.describe(host, "lab1").text.split("network n on kvm1 {\n")[1].split("}")[0]
    assert block == ("    name n\n    mode nat\n    bridge nbr0\n    stp on\n    address 10.0.0.1/24\n"
                     "    dhcp 10.0.0.10 - 10.0.0.20\n    dns on\n")


def test_a_second_ipv6_address_and_dhcpv6_hosts_are_comments_and_warnings() -> None:
    from topoc.deploy import importer

    xml = ("<network><name>n</name><bridge name='nbr0'/>"
           "<ip family='ipv6' address='fd00:1::1' prefix='64'><dhcp><range start='fd00:1::10' end='fd00:1::20'/>"
           "<host id='0:1:0:1:18:aa:62:fe:0:16:3e:44:55:66' ip='fd00:1::5'/></dhcp></ip>"
           "<ip family='ipv6' address='fd00:2::1' prefix='64'/></network>")
    host = importer.HostObjects("test:///x", "kvm1", [importer.LiveObject("n", xml, True, True)], [], [])
    imported = importer.describe(host, "lab1")
    warnings = "\n".join(imported.warnings)
    assert "<host id='0:1:0:1:18:aa:62:fe:0:16:3e:44:55:66' ip='fd00:1::5'> (a DHCPv6 host entry)" in warnings
    assert "<ip family='ipv6' address='fd00:2::1'> (a second IPv6 address on the bridge)" in warnings
    assert "    address fd00:1::1/64\n    dhcp fd00:1::10 - fd00:1::20\n    dns on\n" in imported.text


def test_a_host_interfaces_ipv6_address_and_gateway_become_its_nics_second_ones() -> None:
    """<protocol family='ipv6'> of a host interface: its global address (not the
    link-local one) is the nic's IPv6 `address`, its gateway on that subnet the IPv6
    `gateway`, and the LAN gets the IPv6 `subnet`; an interface with only a link-local
    address has no IPv6 in the file."""
    from topoc.deploy import importer

    interfaces = [
        "<interface type='ethernet' name='eth0'>"
        "<protocol family='ipv4'><ip address='192.168.101.11' prefix='24'/><route gateway='192.168.101.1'/></protocol>"
        "<protocol family='ipv6'><ip address='fe80::5054:ff:fe00:1' prefix='64'/>"
        "<ip address='2001:db8:101::11' prefix='64'/><route gateway='2001:db8:101::1'/></protocol></interface>",
        "<interface type='ethernet' name='eth1'>"
        "<protocol family='ipv4'><ip address='10.20.0.5' prefix='16'/></protocol>"
        "<protocol family='ipv6'><ip address='fe80::5054:ff:fe00:2' prefix='64'/></protocol></interface>",
    ]
    host = importer.HostObjects("qemu:///system", "kvm1", [], [], interfaces)
    imported = importer.describe(host, "lan")
    result = compile_source_ok(imported.text)
    kvm1 = result.node("kvm1")
    assert [(n.name, str(n.address), str(n.address6) if n.address6 else None, str(n.gateway6) if n.gateway6 else None)
            for n in kvm1.nics] == [("eth0", "192.168.101.11/24", "2001:db8:101::11/64", "2001:db8:101::1"),
                                    ("eth1", "10.20.0.5/16", None, None)]
    lan = result.network(kvm1.nics[0].network)
    assert (str(lan.subnet), str(lan.subnet6)) == ("192.168.101.0/24", "2001:db8:101::/64")
    assert result.network(kvm1.nics[1].network).subnet6 is None


def compile_source_ok(text: str):
    from topoc.compiler import compile_source

    result = compile_source(text, "imported.topo")
    assert result.ok, (text, [d.message for d in result.diagnostics])
    assert result.lab is not None
    return result.lab
