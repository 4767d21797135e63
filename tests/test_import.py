"""`topoc import`, `deploy --adopt` and the test host that remembers, on libvirt's test
driver (no daemon): hosts written as test-driver host files (test:///PATH, a private
host per open), objects in the shapes people make by hand. The real daemon's round
trip is tests/test_import_libvirtd.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from conftest import EXAMPLES  # noqa: E402
from deploy_helpers import compile_lab, snapshot  # noqa: E402
from topoc.compiler import compile_source  # noqa: E402
from topoc.deploy import engine as deploy  # noqa: E402
from topoc.deploy import importer  # noqa: E402
from topoc.backends.libvirt import generate  # noqa: E402
from topoc.front.fmt import format_source  # noqa: E402

HOST = """\
<node>
  <network>
    <name>natnet</name>
    <uuid>0b7a3a8e-8d3c-4a55-9d0f-6a4a35c3a001</uuid>
    <forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>
    <bridge name='natbr0' stp='on' delay='0'/>
    <mac address='52:54:00:0a:cd:21'/>
    <domain name='lab.example'/>
    <ip address='192.168.150.1' netmask='255.255.255.0'>
      <dhcp>
        <range start='192.168.150.128' end='192.168.150.254'/>
        <host mac='52:54:00:aa:00:01' name='web' ip='192.168.150.10'/>
        <host mac='52:54:00:aa:00:99' name='printer' ip='192.168.150.99'/>
      </dhcp>
    </ip>
    <portgroup name='engineering' default='yes'/>
  </network>
  <network>
    <name>my.iso</name>
    <uuid>0b7a3a8e-8d3c-4a55-9d0f-6a4a35c3a002</uuid>
    <bridge name='isobr0' stp='off' delay='0'/>
    <mtu size='9000'/>
    <vlan><tag id='42'/></vlan>
  </network>
  <domain type='test'>
    <name>ubuntu22.04</name>
    <uuid>0b7a3a8e-8d3c-4a55-9d0f-6a4a35c3a011</uuid>
    <memory unit='KiB'>2097152</memory>
    <vcpu>2</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
        <source file='/var/lib/libvirt/images/ubuntu 22.04.qcow2'/><target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='cdrom'><source file='/iso/ubuntu.iso'/><target dev='sda' bus='sata'/></disk>
      <interface type='network'><source network='natnet'/><mac address='52:54:00:aa:00:01'/><model type='virtio'/></interface>
      <interface type='network'><source network='my.iso'/><mac address='52:54:00:bb:00:01'/><model type='e1000'/></interface>
      <graphics type='vnc'/>
    </devices>
  </domain>
  <domain type='test'>
    <name>web server</name>
    <uuid>0b7a3a8e-8d3c-4a55-9d0f-6a4a35c3a012</uuid>
    <memory unit='KiB'>524288</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
  </domain>
  <interface type='ethernet' name='eth0'>
    <start mode='onboot'/>
    <protocol family='ipv4'><ip address='192.168.101.11' prefix='24'/><route gateway='192.168.101.1'/></protocol>
  </interface>
</node>
"""


def topoc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topoc", *args], capture_output=True, text=True, check=False,
                          timeout=120, cwd=cwd)


@pytest.fixture
def host_uri(tmp_path: Path) -> str:
    path = tmp_path / "host.xml"
    path.write_text(HOST, encoding="utf-8")
    return f"test://{path}"


def _read(uri: str, **filters) -> importer.HostObjects:
    conn = libvirt.openReadOnly(uri)
    return importer.read_host(conn, uri, filters.get("networks", ()), filters.get("vms", ()))


def test_import_describes_every_object_in_fmt_layout(host_uri: str) -> None:
    imported = importer.describe(_read(host_uri), "hand", "hand.topo")
    text = imported.text
    assert format_source(text, "hand.topo")[0] == text, "fmt's layout"
    result = compile_source(text, "hand.topo")
    assert result.ok, [d.message for d in result.diagnostics]
    lab = result.lab
    natnet = lab.network("natnet")
    assert (natnet.exact_name, natnet.mode.value, natnet.bridge, natnet.stp) == ("natnet", "nat", "natbr0", True)
    assert (str(natnet.address), natnet.domain, natnet.dns) == ("192.168.150.1/24", "lab.example", True)
    assert (str(natnet.dhcp.start), str(natnet.dhcp.end)) == ("192.168.150.128", "192.168.150.254")
    iso = lab.network("my_iso")
    assert (iso.exact_name, iso.mode.value, iso.stp, iso.mtu, iso.address) == ("my.iso", "isolated", False, 9000, None)
    vm = lab.node("ubuntu22_04")
    assert (vm.exact_name, vm.memory, vm.vcpus) == ("ubuntu22.04", 2 * 1024**3, 2)
    assert vm.disk == "/var/lib/libvirt/images/ubuntu 22.04.qcow2"
    assert [(n.network, str(n.ip) if n.ip else None, n.mac, n.model) for n in vm.nics] == [
        ("natnet", "192.168.150.10", "52:54:00:aa:00:01", "virtio"), ("my_iso", None, "52:54:00:bb:00:01", "e1000")]
    host = lab.hosts[0]
    assert [(n.name, str(n.ip), str(n.gateway)) for n in host.nics] == [("eth0", "192.168.101.11", "192.168.101.1")]
    assert lab.network(host.nics[0].network).mode.value == "external"
    assert "# network natnet: imported from " in text and "# domain ubuntu22.04: imported from " in text


def test_what_the_language_cannot_say_is_a_comment_and_a_warning(host_uri: str) -> None:
    imported = importer.describe(_read(host_uri), "hand")
    warnings = "\n".join(imported.warnings)
    text = imported.text
    for what in ("NAT port range", "<portgroup>", "<vlan>", "<mac> 52:54:00:0a:cd:21",
                 "<disk device='cdrom'> /iso/ubuntu.iso", "devices <graphics>"):
        assert what in warnings, what
        assert any(what in line for line in text.splitlines() if line.strip().startswith("# not expressible")), what
    # A DHCP host entry no VM carries, and a name the file cannot hold: warnings, named.
    assert "52:54:00:aa:00:99 -> 192.168.150.99 (printer) belongs to no imported VM" in warnings
    assert "domain web server: its name cannot be written" in warnings
    assert "web server" in text and "vm web" not in text
    # The DHCP host entry names the VM `web`, topoc names it after the VM.
    assert "names it web; the built XML names it ubuntu22_04" in warnings


def test_a_connection_without_interfaces_says_so() -> None:
    host = importer.HostObjects("qemu:///system", "kvm1", interfaces=None,
                                interfaces_note="this function is not supported by the connection driver")
    imported = importer.describe(host, "lab1")
    assert "not expressible: its interfaces and routes" in imported.text
    assert any("does not report them (this function is not supported" in w for w in imported.warnings)
    assert compile_source(imported.text, "x.topo").ok


def test_import_command_writes_the_file_and_changes_nothing(host_uri: str, tmp_path: Path) -> None:
    before = snapshot(libvirt.open(host_uri))  # a fresh private copy: the file is the host
    out = topoc("import", "--connect", host_uri, "-o", str(tmp_path / "out.topo"), "--lab", "hand")
    assert out.returncode == 0, out.stderr
    assert "topoc: warning: network natnet: <nat><port start='1024' end='65535'/>" in out.stderr
    assert (tmp_path / "host.xml").read_text() == HOST, "the host file is untouched"
    assert snapshot(libvirt.open(host_uri)) == before
    assert "lab hand\n" in (tmp_path / "out.topo").read_text()
    only = topoc("import", "--connect", host_uri, "--network", "my.iso")
    assert only.returncode == 0 and "network my_iso" in only.stdout and "\nvm " not in only.stdout
    missing = topoc("import", "--connect", host_uri, "--vm", "nope")
    assert missing.returncode == 2 and "has no domain nope" in missing.stderr
    bad_lab = topoc("import", "--connect", host_uri, "--lab", "a b")
    assert bad_lab.returncode == 2


# --- adoption -------------------------------------------------------------------------

HAND = """\
<node>
  <network>
    <name>natnet</name>
    <uuid>0b7a3a8e-8d3c-4a55-9d0f-6a4a35c3a101</uuid>
    <forward mode='nat'/>
    <bridge name='natbr0' stp='on' delay='0'/>
    <ip address='10.88.0.1' netmask='255.255.255.0'>
      <dhcp><range start='10.88.0.100' end='10.88.0.200'/>
        <host mac='52:54:00:aa:00:01' name='vm1' ip='10.88.0.10'/></dhcp>
    </ip>
  </network>
  <domain type='test'>
    <name>vm1</name>
    <uuid>0b7a3a8e-8d3c-4a55-9d0f-6a4a35c3a111</uuid>
    <memory unit='KiB'>262144</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <interface type='network'><source network='natnet'/><mac address='52:54:00:aa:00:01'/><model type='virtio'/></interface>
      <graphics type='vnc'/>
    </devices>
  </domain>
</node>
"""


@pytest.fixture
def hand_target(tmp_path: Path):
    path = tmp_path / "hand.xml"
    path.write_text(HAND, encoding="utf-8")
    target = deploy.connect(f"test://{path}", state_dir=tmp_path / "state")
    # As an admin leaves it: defined, not running, no autostart (so the driver keeps
    # each new definition apart from a running one).
    target.conn.networkLookupByName("natnet").destroy()
    return target


def _imported_lab(target, tmp_path: Path, edit=lambda text: text):
    text = importer.describe(importer.read_host(target.conn, target.uri), "hand", "hand.topo").text
    return compile_lab(tmp_path, edit(text), "hand.topo")


def test_adopt_takes_the_objects_with_their_uuids_and_destroy_removes_them(hand_target, tmp_path) -> None:
    conn = hand_target.conn
    uuids = {conn.networkLookupByName("natnet").UUIDString(), conn.lookupByName("vm1").UUIDString()}
    lab = _imported_lab(hand_target, tmp_path)
    refused = deploy.make_plan(lab, hand_target)
    assert [d.code for d in refused.conflicts] == ["foreign-object", "foreign-object"]
    assert "--adopt" in (refused.conflicts[0].hint or "")
    plan = deploy.make_plan(lab, hand_target, adopt=True)
    assert plan.conflicts == []
    assert [(c.action, c.kind, c.name) for c in plan.changes] == [("adopt", "network", "natnet"),
                                                                   ("adopt", "domain", "vm1")]
    assert "same meaning" in plan.changes[0].detail and "start it" in plan.changes[0].detail
    assert json.dumps(plan.to_json()).count('"action": "adopt"') == 2
    deploy.apply(lab, hand_target, adopt=True)
    assert {conn.networkLookupByName("natnet").UUIDString(), conn.lookupByName("vm1").UUIDString()} == uuids
    assert "<graphics" in conn.lookupByName("vm1").XMLDesc(0), "metadata only: the VM is as it was"
    net = conn.networkLookupByName("natnet")
    assert net.isActive() and net.autostart()
    assert deploy.make_plan(lab, hand_target).changes == []
    removed, left_alone = deploy.destroy("hand", hand_target)
    assert sorted((c.kind, c.name) for c in removed) == [("domain", "vm1"), ("network", "natnet")]
    assert left_alone == [] and conn.listAllNetworks(0) == [] and conn.listAllDomains(0) == []


def test_adopt_changes_a_dhcp_host_entry_live(hand_target, tmp_path) -> None:
    lab = _imported_lab(hand_target, tmp_path, lambda t: t.replace("address 10.88.0.10", "address 10.88.0.11"))
    [network, domain] = deploy.make_plan(lab, hand_target, adopt=True).changes
    assert network.action == "adopt" and "DHCP host entries, applied live: ~52:54:00:aa:00:01 -> 10.88.0.11" \
        in network.detail
    assert domain.detail.startswith("same meaning")
    deploy.apply(lab, hand_target, adopt=True)
    assert "ip='10.88.0.11'" in hand_target.conn.networkLookupByName("natnet").XMLDesc(0)
    assert deploy.make_plan(lab, hand_target).changes == []


def test_adopt_of_a_different_network_recreates_it_and_a_different_vm_is_redefined(hand_target, tmp_path) -> None:
    conn = hand_target.conn
    uuid = conn.networkLookupByName("natnet").UUIDString()
    lab = _imported_lab(hand_target, tmp_path,
                        lambda t: t.replace("stp on", "stp off").replace("memory 256MiB", "memory 512MiB"))
    [network, domain] = deploy.make_plan(lab, hand_target, adopt=True).changes
    assert network.detail.startswith("and recreate from the file (stp on -> off)")
    assert domain.detail.startswith("and edit its definition to the file's (memory KiB 262144 -> 524288)")
    assert "+  <memory unit=\"KiB\">524288</memory>" in domain.diff
    deploy.apply(lab, hand_target, adopt=True)
    assert conn.networkLookupByName("natnet").UUIDString() == uuid
    assert "stp='off'" in conn.networkLookupByName("natnet").XMLDesc(0)
    vm1 = conn.lookupByName("vm1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # it runs: the definition
    assert "<memory unit='KiB'>524288</memory>" in vm1 and "<graphics" in vm1, "only what differs changed"
    assert "<domain type='test'" in vm1
    assert deploy.make_plan(lab, hand_target).changes == []


def test_adopt_never_takes_another_labs_object(hand_target, tmp_path) -> None:
    other = compile_lab(tmp_path, "lab other\nhost h {\n}\nnetwork n on h {\n    name mine\n    mode isolated\n"
                                  "    bridge minebr0\n}\n", "other.topo")
    deploy.apply(other, hand_target)
    mine = compile_lab(tmp_path, "lab hand\nhost h {\n}\nnetwork n on h {\n    name mine\n    mode isolated\n"
                                 "    bridge minebr0\n}\n", "mine.topo")
    plan = deploy.make_plan(mine, hand_target, adopt=True)
    [conflict] = plan.conflicts
    assert conflict.code == "foreign-object" and "topoc lab other owns" in conflict.message


# --- the test host that remembers -------------------------------------------------------


def test_the_default_test_host_remembers_between_commands(tmp_path: Path) -> None:
    nat = tmp_path / "nat.topo"
    nat.write_text((EXAMPLES / "nat.topo").read_text())
    deployed = topoc("deploy", str(nat))
    assert deployed.returncode == 0, deployed.stderr
    assert "keeps its host between commands" in deployed.stderr
    status = topoc("status", str(nat), "--format", "json")
    rows = {o["name"]: o for o in json.loads(status.stdout)["objects"]}
    assert rows["natlab-natnet"]["active"] and rows["natlab-natnet"]["autostart"] and rows["natlab-natnet"]["owned"]
    assert rows["natlab-vm0"]["defined"] and not rows["natlab-vm0"]["active"]
    assert "in sync, nothing to change (3 objects)" in topoc("plan", str(nat)).stdout
    nat.write_text(nat.read_text().replace("address 188.64.100.3 mac", "address 188.64.100.4 mac"))
    plan = topoc("plan", str(nat))
    assert "~ update network natlab-natnet: DHCP host entries, applied live" in plan.stdout, plan.stdout
    assert "- remove" not in plan.stdout and "+ create" not in plan.stdout
    destroyed = topoc("destroy", str(nat))
    assert destroyed.stdout.count("removed") == 3
    assert "nothing to destroy" in topoc("destroy", str(nat)).stdout
    # The driver's own objects stayed; a reset starts from libvirt's default host again.
    again = topoc("deploy", str(nat), "--start-vms")
    assert again.returncode == 0
    reset = topoc("reset-test-host")
    assert reset.returncode == 0 and "forgot the saved test host" in reset.stdout
    fresh = topoc("status", str(nat), "--format", "json")
    assert not any(o["defined"] for o in json.loads(fresh.stdout)["objects"])
    assert "no saved test host" in topoc("reset-test-host").stdout


def test_the_test_host_keeps_run_state_autostart_and_metadata(tmp_path: Path) -> None:
    from topoc.deploy import testhost

    conn = testhost.open_default(libvirt, tmp_path)
    conn.networkLookupByName("default").destroy()
    conn.lookupByName("test").setAutostart(1)
    net = conn.networkDefineXML("<network><name>x</name><metadata><topoc:lab xmlns:topoc="
                                "'https://topoc.dev/xmlns/libvirt/1' name='l'/></metadata>"
                                "<bridge name='xbr0'/></network>")
    net.setAutostart(1)
    testhost.save(libvirt, conn, tmp_path)
    again = testhost.open_default(libvirt, tmp_path)
    assert snapshot(again) == snapshot(conn)
    assert "name=\"l\"" in again.networkLookupByName("x").XMLDesc(0)
    assert again.networkLookupByName("x").autostart() and not again.networkLookupByName("default").isActive()
    assert again.lookupByName("test").autostart() and again.lookupByName("test").isActive()


def test_bridged_networks_and_macvtap_nics_become_lan_peers() -> None:
    """A network on a host bridge (<forward mode='bridge'/>), the NIC the bridge enslaves
    (from the host's interfaces), a VM nic on it and one macvtap nic straight on the
    host's NIC (<interface type='direct'>): the file says the same."""
    bridged = ("<network><name>host-bridge</name><forward mode='bridge'/><bridge name='br0'/></network>")
    pool = ("<network><name>vfpool</name><forward mode='hostdev'><pf dev='eth9'/></forward></network>")
    vm = ("<domain type='kvm'><name>peer</name><memory unit='KiB'>524288</memory><vcpu>1</vcpu>"
          "<os><type>hvm</type></os><devices>"
          "<interface type='network'><source network='host-bridge'/><mac address='52:54:00:00:00:01'/>"
          "<model type='virtio'/></interface>"
          "<interface type='direct'><source dev='eth1' mode='bridge'/><mac address='52:54:00:00:00:02'/>"
          "<model type='virtio'/></interface>"
          "<interface type='network'><source network='vfpool'/><mac address='52:54:00:00:00:03'/></interface>"
          "<interface type='bridge'><source bridge='br1'/><mac address='52:54:00:00:00:04'/>"
          "<model type='virtio'/></interface>"
          "</devices></domain>")
    interfaces = [
        "<interface type='bridge' name='br0'><protocol family='ipv4'><ip address='192.168.1.5' prefix='24'/>"
        "<route gateway='192.168.1.1'/></protocol><bridge><interface type='ethernet' name='eth0'/></bridge></interface>",
        "<interface type='ethernet' name='eth1'><protocol family='ipv4'><ip address='10.20.0.5' prefix='16'/>"
        "</protocol></interface>",
        "<interface type='ethernet' name='eth0'/>",
        "<interface type='bridge' name='br1'><bridge><interface type='ethernet' name='eth2'/></bridge></interface>",
    ]
    host = importer.HostObjects("qemu:///system", "kvm1.example.com",
                                [importer.LiveObject("host-bridge", bridged, True, True),
                                 importer.LiveObject("vfpool", pool, True, False)],
                                [importer.LiveObject("peer", vm, False, False)], interfaces)
    imported = importer.describe(host, "lan")
    result = compile_source(imported.text, "lan.topo")
    assert result.ok, (imported.text, [d.message for d in result.diagnostics])
    lab = result.lab
    net = lab.network("host-bridge")
    assert (net.mode.value, net.via, net.bridge, net.exact_name) == ("bridged", "eth0", "br0", "host-bridge")
    kvm1 = lab.node("kvm1")
    assert [(n.name, str(n.ip), str(n.gateway) if n.gateway else None) for n in kvm1.nics] == [
        ("eth0", "192.168.1.5", "192.168.1.1"), ("eth1", "10.20.0.5", None)]
    peer = lab.node("peer")
    assert [(n.network, n.mac) for n in peer.nics] == [("host-bridge", "52:54:00:00:00:01"),
                                                     ("lan_eth1", "52:54:00:00:00:02"),
                                                     ("br1", "52:54:00:00:00:04")]
    br1 = lab.network("br1")  # the host bridge VMs plugged into directly: a new bridged network
    assert (br1.mode.value, br1.via, br1.bridge, br1.exact_name) == ("bridged", "eth2", "br1", None)
    warnings = "\n".join(imported.warnings)
    assert "network vfpool: <forward mode='hostdev'> (a pool of host devices)" in warnings
    assert "domain peer: a nic of type network on vfpool (52:54:00:00:00:03)" in warnings
    built = {d.name: d for d in (dx_describe(x) for x in generate(lab).values() if x.lstrip().startswith("<!--"))
             if d is not None}
    assert [(n.type, n.source, n.direct_mode) for n in built["peer"].nics] == [
        ("network", "host-bridge", None), ("direct", "eth1", "bridge"), ("network", "lan-br1", None)]
    assert "plugs into host bridge br1 directly (type='bridge')" in warnings


def dx_describe(xml: str):
    from topoc.deploy import facts as dx

    root = dx.parse(xml)
    return dx.describe_domain(xml) if root.tag == "domain" else None


def test_editing_a_vm_to_the_files_meaning_keeps_everything_else(tmp_path: Path) -> None:
    """virt-install's <libosinfo> metadata (its own namespace), the machine type, the
    graphics and a nic the file does not describe: only memory, vCPUs, the disk and the
    file's nics change (facts.domain_with_meaning), and libvirt takes the result."""
    from topoc.deploy import facts as dx

    have = ("<domain type='test'><name>web</name><uuid>0b7a3a8e-8d3c-4a55-9d0f-6a4a35c3a211</uuid>"
            "<metadata><libosinfo:libosinfo xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'>"
            "<libosinfo:os id='http://ubuntu.com/ubuntu/22.04'/></libosinfo:libosinfo></metadata>"
            "<memory unit='KiB'>1048576</memory><currentMemory unit='KiB'>1048576</currentMemory>"
            "<vcpu current='2'>4</vcpu><os><type machine='q35'>hvm</type></os><devices>"
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/img/web.img'/>"
            "<target dev='vda' bus='virtio'/></disk>"
            "<interface type='network'><source network='default'/><mac address='52:54:00:00:00:01'/>"
            "<model type='e1000'/></interface>"
            "<interface type='network'><source network='other'/><mac address='52:54:00:00:00:09'/></interface>"
            "<graphics type='vnc' port='-1'/></devices></domain>")
    want = ("<domain type='kvm'><name>web</name><memory unit='KiB'>524288</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/img/web.qcow2'/>"
            "<target dev='vda' bus='virtio'/></disk>"
            "<interface type='network'><source network='natnet'/><mac address='52:54:00:00:00:01'/>"
            "<model type='virtio'/></interface>"
            "<interface type='network'><source network='natnet'/><mac address='52:54:00:00:00:02'/>"
            "<model type='virtio'/></interface></devices></domain>")
    edited = dx.domain_with_meaning(have, want)
    assert dx.describe_domain(edited).meaning() == dx.describe_domain(want).meaning()
    conn = libvirt.open("test:///default")
    for name in ("natnet", "other"):
        conn.networkCreateXML(f"<network><name>{name}</name><bridge name='{name}0'/></network>")
    dom = conn.defineXML(edited)
    xml = dom.XMLDesc(0)
    assert "http://ubuntu.com/ubuntu/22.04" in xml and "machine='q35'" in xml and "<graphics type='vnc'" in xml
    assert "52:54:00:00:00:09" not in xml and "<currentMemory unit='KiB'>524288</currentMemory>" in xml
    dom.undefine()


def test_a_lab_whose_record_was_lost_is_adopted_back(tmp_path: Path) -> None:
    """The lab's own objects (they carry its metadata) with no ownership record (a lost
    state folder): refused as foreign, then adopted back unchanged."""
    path = tmp_path / "host.xml"
    path.write_text("<node/>\n", encoding="utf-8")  # an empty host
    target = deploy.connect(f"test://{path}", state_dir=tmp_path / "state")
    lab = compile_lab(tmp_path, (EXAMPLES / "nat.topo").read_text())
    deploy.apply(lab, target)
    before = snapshot(target.conn)
    lost = deploy.Target(target.conn, target.uri, type(target.records)(target.uri, tmp_path / "lost"))
    assert {d.code for d in deploy.make_plan(lab, lost).conflicts} == {"foreign-object"}
    plan = deploy.make_plan(lab, lost, adopt=True)
    assert [c.action for c in plan.changes] == ["adopt"] * 3 and plan.conflicts == []
    deploy.apply(lab, lost, adopt=True)
    assert snapshot(target.conn) == before
    assert deploy.make_plan(lab, lost).changes == []
