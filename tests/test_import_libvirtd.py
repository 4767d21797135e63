"""`topoc import` and `topoc deploy --adopt` against a real libvirtd (tests/libvirtd_fixture.py),
on networks and domains defined by hand in the classic shapes: a copy of libvirt's
default.xml renamed `natnet` (with its NAT port range, STP on, a bridge MAC and two DHCP
host entries), an isolated `br1` without an address, a routed network with `dev`, and
two VMs, one of them on two networks.

The round trip: import (the host's XML unchanged), check (no errors), build (XML of the
same meaning under the same names), adopt (same UUIDs: nothing recreated), plan (in
sync), destroy (exactly the adopted objects; an object the file does not name survives).
Every topoc step runs as the command a user types, in its own process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from deploy_helpers import snapshot  # noqa: E402
from libvirtd_fixture import Libvirtd, libvirtd  # noqa: E402,F401

from topoc.backends.libvirt import generate  # noqa: E402
from topoc.compiler import compile_file  # noqa: E402
from topoc.deploy import facts as dx  # noqa: E402

# libvirt's own default.xml (as Debian ships it in /usr/share/libvirt/networks/), renamed
# and moved to a subnet of its own, as the walk-through does by hand.
NATNET = """\
<network>
  <name>natnet</name>
  <forward mode='nat'>
    <nat>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='natbr0' stp='on' delay='0'/>
  <mac address='52:54:00:0a:cd:21'/>
  <ip address='192.168.150.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.150.128' end='192.168.150.254'/>
      <host mac='52:54:00:aa:00:01' name='vm1' ip='192.168.150.10'/>
      <host mac='52:54:00:aa:00:02' name='vm2' ip='192.168.150.11'/>
    </dhcp>
  </ip>
</network>
"""
BR1 = "<network><name>br1</name><bridge name='br1' stp='on' delay='0'/></network>"
ROUTED = """\
<network>
  <name>routed</name>
  <forward mode='route' dev='eth1'/>
  <bridge name='rtbr0' stp='off' delay='0'/>
  <ip address='10.77.0.1' prefix='24'/>
</network>
"""


def _domain(name: str, memory_kib: int, vcpus: int, nics: list[tuple[str, str]]) -> str:
    interfaces = "".join(
        f"<interface type='network'><source network='{network}'/><mac address='{mac}'/>"
        "<model type='virtio'/></interface>" for network, mac in nics)
    return (f"<domain type='kvm'><name>{name}</name><memory unit='KiB'>{memory_kib}</memory>"
            f"<vcpu>{vcpus}</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='/var/lib/libvirt/images/{name}.qcow2'/><target dev='vda' bus='virtio'/></disk>"
            f"{interfaces}<graphics type='vnc'/></devices></domain>")


VM1 = _domain("vm1", 262144, 1, [("natnet", "52:54:00:aa:00:01")])
VM2 = _domain("vm2", 524288, 2, [("natnet", "52:54:00:aa:00:02"), ("br1", "52:54:00:bb:00:02")])
KEEP = "<network><name>keep</name><bridge name='keepbr0'/></network>"


def topoc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topoc", *args], capture_output=True, text=True, check=False,
                          timeout=300)


@pytest.fixture
def hand_made(libvirtd: Libvirtd):
    """The host as an admin left it: networks defined, autostarted and started with
    virsh, the domains defined; removed afterwards whatever happened."""
    libvirtd.run("ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p")  # no dummy module here
    libvirtd.run("ip", "addr", "add", "192.168.101.11/24", "dev", "eth1")
    libvirtd.run("ip", "link", "set", "eth1", "up")
    conn = libvirt.open(libvirtd.uri)
    try:
        for xml in (NATNET, BR1, ROUTED):
            net = conn.networkDefineXML(xml)
            net.setAutostart(1)
            net.create()
        for xml in (VM1, VM2):
            conn.defineXML(xml)
        yield conn
    finally:
        for dom in conn.listAllDomains(0):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        for net in conn.listAllNetworks(0):
            if net.name() in ("natnet", "br1", "routed", "keep"):
                if net.isActive():
                    net.destroy()
                net.undefine()
        conn.close()
        libvirtd.run("ip", "link", "del", "eth1")


def _inactive(conn) -> dict[str, str]:
    """Every object's persistent definition, byte for byte."""
    xml = {f"network {n.name()}": n.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE) for n in conn.listAllNetworks(0)}
    xml |= {f"domain {d.name()}": d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) for d in conn.listAllDomains(0)}
    return xml


def _uuids(conn) -> dict[str, str]:
    return {n.name(): n.UUIDString() for n in conn.listAllNetworks(0)} | \
        {d.name(): d.UUIDString() for d in conn.listAllDomains(0)}


def test_import_check_build_adopt_plan_destroy_round_trip(libvirtd, hand_made, tmp_path: Path) -> None:
    conn = hand_made
    uri = libvirtd.uri
    before, before_xml, uuids = snapshot(conn), _inactive(conn), _uuids(conn)
    topo = tmp_path / "host.topo"

    # Import: a file, warnings naming what the language cannot say, the host untouched.
    out = topoc("import", "--connect", uri, "-o", str(topo), "--lab", "handmade", "--network", "natnet",
                "--network", "br1", "--network", "routed", "--vm", "vm1", "--vm", "vm2")
    assert out.returncode == 0, out.stderr
    assert snapshot(conn) == before and _inactive(conn) == before_xml, "import changed the host"
    text = topo.read_text()
    assert "NAT port range" in out.stderr and "<mac> 52:54:00:0a:cd:21" in out.stderr
    assert "<graphics>" in out.stderr and "(the devices of the forward)" not in out.stderr
    for warning in ("NAT port range", "<mac> 52:54:00:0a:cd:21"):
        assert "# not expressible: " in text and warning in text
    assert topoc("fmt", "--check", str(topo)).returncode == 0, "the file is in fmt's layout"
    for name in ("natnet", "br1", "routed", "vm1", "vm2"):
        assert f"    name {name}\n" in text

    # Check: no errors.
    result = compile_file(str(topo))
    assert result.ok, [f"{d.code}: {d.message}" for d in result.diagnostics]
    lab = result.lab

    # Build: the same meaning under the same names.
    artifacts = generate(lab)
    built = {dx.parse(x).findtext("name"): x for p, x in artifacts.items() if p.endswith(".xml")}
    assert set(built) == {"natnet", "br1", "routed", "vm1", "vm2"}
    for name, defined in (("natnet", NATNET), ("br1", BR1), ("routed", ROUTED)):
        assert dx.describe_network(built[name]).meaning() == dx.describe_network(defined).meaning(), name
    natnet = dx.describe_network(built["natnet"])
    assert (natnet.forward_mode, natnet.bridge, str(natnet.address)) == ("nat", "natbr0", "192.168.150.1/24")
    assert natnet.dhcp_ranges == (("192.168.150.128", "192.168.150.254"),)
    assert {(h.mac, h.ip) for h in natnet.dhcp_hosts} == {("52:54:00:aa:00:01", "192.168.150.10"),
                                                         ("52:54:00:aa:00:02", "192.168.150.11")}
    routed = dx.describe_network(built["routed"])
    assert (routed.forward_mode, routed.forward_dev, str(routed.address)) == ("route", "eth1", "10.77.0.1/24")
    br1 = dx.describe_network(built["br1"])
    assert (br1.forward_mode, br1.bridge, br1.address) == (None, "br1", None)
    for name, defined in (("vm1", VM1), ("vm2", VM2)):
        assert dx.describe_domain(built[name]).meaning() == dx.describe_domain(defined).meaning(), name
    vm2 = dx.describe_domain(built["vm2"])
    assert (vm2.memory_kib, vm2.vcpus) == (524288, 2)
    assert [(n.source, n.mac) for n in vm2.nics] == [("natnet", "52:54:00:aa:00:02"), ("br1", "52:54:00:bb:00:02")]

    # Without --adopt the objects stay foreign: refused, nothing changed.
    refused = topoc("deploy", str(topo), "--connect", uri)
    assert refused.returncode == 1 and "[foreign-object]" in refused.stderr and "--adopt" in refused.stderr
    assert snapshot(conn) == before

    # Adopt: every object shows as `adopt` in the plan (text and JSON), then is the lab's.
    plan = topoc("plan", str(topo), "--connect", uri, "--adopt", "--format", "json")
    assert plan.returncode == 0, plan.stderr
    changes = json.loads(plan.stdout)["changes"]
    assert sorted((c["action"], c["kind"], c["name"]) for c in changes) == [
        ("adopt", "domain", "vm1"), ("adopt", "domain", "vm2"), ("adopt", "network", "br1"),
        ("adopt", "network", "natnet"), ("adopt", "network", "routed")]
    assert all("same meaning" in c["detail"] for c in changes), changes
    adopted = topoc("deploy", str(topo), "--connect", uri, "--adopt")
    assert adopted.returncode == 0, adopted.stderr
    assert "& adopt network natnet" in adopted.stdout and "5 adopted" in adopted.stdout
    assert _uuids(conn) == uuids, "nothing was recreated"
    assert "<graphics" in conn.lookupByName("vm1").XMLDesc(0), "what the file does not say is kept"
    assert "<port start='1024' end='65535'/>" in conn.networkLookupByName("natnet").XMLDesc(0)

    # In sync: an empty plan.
    again = topoc("plan", str(topo), "--connect", uri)
    assert again.returncode == 0 and "in sync, nothing to change (5 objects)" in again.stdout, again.stdout

    # Destroy removes exactly the adopted objects; one the file does not name survives.
    conn.networkDefineXML(KEEP)
    gone = topoc("destroy", str(topo), "--connect", uri)
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.count("removed") == 5
    others = {n for n in before["networks"] if n not in ("natnet", "br1", "routed")}  # libvirt's `default`
    assert {n.name() for n in conn.listAllNetworks(0)} == others | {"keep"}
    assert conn.listAllDomains(0) == []
