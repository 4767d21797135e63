"""Every generated network and domain, defined on libvirt's built-in test driver with
schema validation on, and read back: libvirt understood what topoc meant.

`test:///default` gives each open connection a fresh private in-memory host (with its
own `default` network), so tests share nothing and leave nothing behind.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import require_tool
from test_libvirt_cases import CASES, artifacts, compiled
from topoc.model.ir import Lab, Mode

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (make setup)")

EXPECTED_FORWARD = {Mode.NAT: "nat", Mode.ROUTED: "route", Mode.OPEN: "open",
                    Mode.BRIDGED: "bridge", Mode.ISOLATED: None}


@pytest.fixture
def conn():
    connection = libvirt.open("test:///default")
    yield connection
    connection.close()


def define_all(conn, case: str) -> tuple[dict[str, ET.Element], dict[str, ET.Element]]:
    """Define the case's networks, then its domains; their XML as libvirt reads it back."""
    networks, domains = {}, {}
    for path, text in sorted(artifacts(case).items()):
        if path.startswith("libvirt/networks/"):
            net = conn.networkDefineXMLFlags(text, libvirt.VIR_NETWORK_DEFINE_VALIDATE)
            networks[net.name()] = ET.fromstring(net.XMLDesc(0))
    for path, text in sorted(artifacts(case).items()):
        if path.startswith("libvirt/domains/"):
            dom = conn.defineXMLFlags(text, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            domains[dom.name()] = ET.fromstring(dom.XMLDesc(0))
    return networks, domains


def expected_dhcp_hosts(lab: Lab, network: str) -> set[tuple[str, str]]:
    """(mac, ip) of every VM nic with an address on the network, when it has DHCP."""
    net = lab.network(network)
    if net is None or net.dhcp is None:
        return set()
    return {(nic.mac, str(nic.ip)) for vm in lab.vms for nic in vm.nics
            if nic.network == network and nic.ip is not None}


def expected_ip_families(network) -> set[str]:
    """An <ip> per family the network has an address in; none on a bridged network."""
    if network.mode is Mode.BRIDGED:
        return set()
    return {f for f, a in (("ipv4", network.address), ("ipv6", network.address6)) if a is not None}


def expected_interface(lab: Lab, host: str, nic) -> tuple[str, dict[str, str], str]:
    """type='network' on a managed network; on the external LAN, a macvtap (bridge mode)
    on the host's NIC there."""
    if lab.network(nic.network).managed:
        return "network", {"network": f"{lab.name}-{nic.network}"}, nic.mac
    (dev,) = [n.name for n in lab.node(host).nics if n.network == nic.network]
    return "direct", {"dev": dev, "mode": "bridge"}, nic.mac


@pytest.mark.parametrize("case", sorted(CASES))
def test_networks_define_and_read_back_as_intended(conn, case):
    lab = compiled(case)
    networks, _ = define_all(conn, case)
    managed = [n for n in lab.networks if n.managed]
    assert sorted(networks) == sorted(f"{lab.name}-{n.name}" for n in managed)
    for n in managed:
        xml = networks[f"{lab.name}-{n.name}"]
        forward = xml.find("forward")
        assert (forward.get("mode") if forward is not None else None) == EXPECTED_FORWARD[n.mode]
        if forward is not None and n.mode in (Mode.NAT, Mode.ROUTED):
            assert forward.get("dev") == n.via
        assert xml.find("bridge").get("name") == n.bridge
        ips = {ip.get("family", "ipv4"): ip for ip in xml.findall("ip")}
        assert set(ips) == expected_ip_families(n)
        if "ipv4" in ips:
            ip = ips["ipv4"]
            assert (ip.get("address"), ip.get("netmask")) == (str(n.address.ip),
                                                              str(n.address.netmask))
        if "ipv6" in ips:
            ip = ips["ipv6"]
            assert (ip.get("address"), ip.get("prefix")) == (str(n.address6.ip),
                                                             str(n.address6.network.prefixlen))
            # No DHCPv6 reservations: libvirt refuses `mac` on an IPv6 host.
            assert ip.findall("dhcp/host") == []
        hosts = {(h.get("mac"), h.get("ip")) for h in xml.findall("ip/dhcp/host")}
        assert hosts == expected_dhcp_hosts(lab, n.name)
        for family, dhcp in (("ipv4", n.dhcp), ("ipv6", n.dhcp6)):
            ranges = [r.attrib for r in ips[family].findall("dhcp/range")] if family in ips else []
            assert ranges == ([{"start": str(dhcp.start), "end": str(dhcp.end)}] if dhcp else [])
        nat = forward.find("nat") if forward is not None else None
        assert (nat.get("ipv6") if nat is not None else None) == ("yes" if n.nat6 else None)


@pytest.mark.parametrize("case", sorted(CASES))
def test_domains_define_and_read_back_as_intended(conn, case):
    lab = compiled(case)
    _, domains = define_all(conn, case)
    assert sorted(domains) == sorted(f"{lab.name}-{vm.name}" for vm in lab.vms)
    for vm in lab.vms:
        xml = domains[f"{lab.name}-{vm.name}"]
        assert int(xml.findtext("memory")) * 1024 >= vm.memory > (int(xml.findtext("memory")) - 1) * 1024
        assert int(xml.findtext("vcpu")) == vm.vcpus
        interfaces = xml.findall("devices/interface")
        assert [(i.get("type"), i.find("source").attrib, i.find("mac").get("address"))
                for i in interfaces] == [expected_interface(lab, vm.host, nic) for nic in vm.nics]
        assert [i.find("model").get("type") for i in interfaces] == [nic.model or "virtio"
                                                                    for nic in vm.nics]
        source = xml.find("devices/disk/source")
        # libvirt writes a tab in an attribute raw, which XML readers turn into a space;
        # the hostile-path test below checks the exact text.
        assert (source.get("file") if source is not None else None) == (
            vm.disk.replace("\t", " ") if vm.disk else None)
        owner = xml.find("metadata/{https://topoc.dev/xmlns/libvirt/1}lab")
        assert owner is not None and owner.attrib == {"name": lab.name, "source": lab.file}


def test_the_nat_example_reads_back_exactly(conn):
    networks, domains = define_all(conn, "nat")
    net = networks["natlab-natnet"]
    assert net.find("forward").attrib == {"mode": "nat", "dev": "eth0"}
    assert net.find("bridge").attrib == {"name": "natbr0", "stp": "off", "delay": "0"}
    assert net.find("ip").attrib == {"address": "188.64.100.1", "netmask": "255.255.255.0"}
    assert [(h.get("name"), h.get("ip")) for h in net.findall("ip/dhcp/host")] == [
        ("vm0", "188.64.100.2"), ("vm1", "188.64.100.3")]
    vm1 = domains["natlab-vm1"]
    assert vm1.find("devices/interface/mac").get("address") == "52:54:00:6b:3c:58"
    assert vm1.find("devices/disk/driver").get("type") == "qcow2"


def test_the_dual_stack_case_reads_back_exactly(conn):
    networks, _ = define_all(conn, "dualstack")
    net = networks["duallab-natnet"]
    assert [ip.attrib for ip in net.findall("ip")] == [
        {"address": "188.64.100.1", "netmask": "255.255.255.0"},
        {"family": "ipv6", "address": "fd00:64::1", "prefix": "64"}]
    assert net.find("ip[@family='ipv6']/dhcp/range").attrib == {"start": "fd00:64::100",
                                                               "end": "fd00:64::1ff"}
    masq = networks["duallab-nat6net"].find("forward")
    assert masq.attrib == {"mode": "nat", "dev": "eth0"} and masq.find("nat").attrib == {"ipv6": "yes"}
    assert [ip.attrib for ip in networks["duallab-v6only"].findall("ip")] == [
        {"family": "ipv6", "address": "fd00:6::1", "prefix": "64"}]


def test_uuids_are_the_ones_generated(conn):
    lab = compiled("mixed")
    from topoc.model import naming
    networks, domains = define_all(conn, "mixed")
    for n in lab.networks:
        if n.managed:
            assert networks[f"mixlab-{n.name}"].findtext("uuid") == naming.object_uuid(
                "mixlab", "network", n.name)
    for vm in lab.vms:
        assert domains[f"mixlab-{vm.name}"].findtext("uuid") == naming.object_uuid(
            "mixlab", "domain", vm.name)


def test_hostile_disk_path_reads_back_exactly(conn):
    define_all(conn, "hostile")
    raw = conn.lookupByName("hostile-evil").XMLDesc(0)
    path = compiled("hostile").node("evil").disk
    # libvirt's own escaping of what it stored (it leaves the tab raw): the exact path.
    stored = (path.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
              .replace("'", "&apos;").replace('"', "&quot;"))
    assert "\t" in path and f"<source file='{stored}'/>" in raw


def _readme_commands(text: str, section: str) -> list[str]:
    """The indented virsh commands of README.txt's Apply or Undo section."""
    apply, undo = text.split("\nApply", 1)[1].split("\nUndo", 1)
    block = apply if section == "Apply" else undo
    return [line.strip().removeprefix("virsh ") for line in block.splitlines()
            if line.startswith("    virsh ")]


@pytest.mark.parametrize("case", ["mixed", "nat", "bridged"])
def test_readme_commands_apply_and_undo_the_lab_on_the_test_driver(case, tmp_path):
    virsh = require_tool("virsh")
    lab = compiled(case)
    for path, text in artifacts(case).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    readme = artifacts(case)["libvirt/README.txt"]
    apply = _readme_commands(readme, "Apply")
    undo = _readme_commands(readme, "Undo")
    starts = [f"start {lab.name}-{vm.name}" for vm in lab.vms]  # so `destroy` has work
    # One virsh session: test:///default forgets everything between connections.
    script = "; ".join([*apply, *starts, "net-list --all --name", "list --all --name", *undo,
                        "net-list --all --name", "list --all --name"])
    run = subprocess.run([virsh, "-c", "test:///default", script], cwd=tmp_path / "libvirt",
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "error" not in run.stderr, run.stderr
    names = {f"{lab.name}-{n.name}" for n in lab.networks if n.managed} | {
        f"{lab.name}-{vm.name}" for vm in lab.vms}
    listed = run.stdout.split("has been undefined")[0]
    assert names <= set(listed.split()), "apply did not create every object"
    after = run.stdout.rsplit("undefined", 1)[1]
    assert not names & set(after.split()), "undo left objects behind"
    assert "default" in after.split(), "undo must leave libvirt's own network alone"


def test_ownership_metadata_survives_on_networks_and_domains(conn):
    """deploy recognises what it owns by this record, so libvirt must keep it."""
    from topoc.backends.libvirt import METADATA_NAMESPACE

    networks, _ = define_all(conn, "mixed")
    for xml in networks.values():
        owner = xml.find(f"metadata/{{{METADATA_NAMESPACE}}}lab")
        assert owner is not None and owner.attrib == {"name": "mixlab", "source": "examples/mixed.topo"}
    dom = conn.lookupByName("mixlab-api")
    assert dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NAMESPACE) == (
        '<lab name="mixlab" source="examples/mixed.topo"/>')


def test_every_other_clean_test_topology_defines_on_the_test_driver():
    from test_libvirt_cases import other_clean_topologies

    topologies = other_clean_topologies()
    assert topologies
    # A lab on several hosts has libvirt/<host>/...: each host's part on a host of its own.
    per_host = {}
    for source, files in topologies.items():
        for path, text in files.items():
            parts = path.split("/")
            where = (source, parts[1] if len(parts) == 4 else "")
            per_host.setdefault(where, {})[path] = text
    for (source, _), files in per_host.items():
        connection = libvirt.open("test:///default")  # a fresh host per lab (and host)
        try:
            for path, text in sorted(files.items(), key=lambda kv: "/domains/" in kv[0]):
                if "/networks/" in path:
                    connection.networkDefineXMLFlags(text, libvirt.VIR_NETWORK_DEFINE_VALIDATE)
                else:
                    connection.defineXMLFlags(text, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        except libvirt.libvirtError as e:
            pytest.fail(f"{source}: {path}: {e}")
        finally:
            connection.close()
